"""Task and queue names: the API sends tasks by these names, the workers register and consume them."""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    EVALUATIONS = "evaluations"  # CPU jobs
    GPU = "gpu"  # jobs with device cuda…
    # Light bookkeeping (audit tick, launch, finalize, webhooks, the requeue sweep) has a queue of its own:
    # behind the FIFO of long evaluations a tick would wait past its expiry, and every tick could be dropped.
    CONTROL = "control"


class Task(StrEnum):
    EVALUATE = "advaudit.evaluate"
    # One shard (a sample range) of a sharded job, on the job's queue: any evaluation worker takes any shard.
    EVALUATE_SHARD = "advaudit.evaluate_shard"
    # A transfer matrix (source × target models on one dataset), on the job's queue like an evaluation.
    TRANSFER = "advaudit.transfer"
    REQUEUE_ABANDONED = "advaudit.jobs.requeue_abandoned"
    AUDIT_TICK = "advaudit.audits.tick"
    AUDIT_LAUNCH = "advaudit.audits.launch"
    AUDIT_FINALIZE = "advaudit.audits.finalize"
    AUDIT_WEBHOOK = "advaudit.audits.webhook"


# The evaluation tasks go to the job's queue (evaluations or gpu); every other task goes to the control queue,
# also when sent without a queue.
EVALUATION_TASKS = frozenset({Task.EVALUATE, Task.EVALUATE_SHARD, Task.TRANSFER})
CONTROL_TASKS = frozenset(Task) - EVALUATION_TASKS


def queue_for(device: str) -> Queue:
    """GPU jobs go to the GPU workers' queue, everything else to the default queue."""
    return Queue.GPU if device.strip().lower().startswith("cuda") else Queue.EVALUATIONS
