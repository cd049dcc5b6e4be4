"""Run a queued transfer job in-process, as a worker would (tests may import the worker)."""

from __future__ import annotations


def run_transfer(app, transfer_id: int) -> str | None:
    from worker.runner import WorkerContext
    from worker.transfer_runner import run_transfer_job

    context = WorkerContext(
        sessions=app.state.sessions,
        store=app.state.store,
        device="cpu",
        progress_interval_s=0.0,
        lease_s=None,
    )
    return run_transfer_job(transfer_id, context)
