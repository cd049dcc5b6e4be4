"""Sharded jobs on real Celery workers (PostgreSQL + Redis, the e2e tests' harness):

  speedup   one PGD job in 2 shards vs the same job in 1 shard, on 2 workers (1 torch thread each), in
            alternated rounds: wall time from submission to the stored results (medians), and whether all
            results are identical;
  overhead  one job in 200 shards vs 1 shard on one worker, and where the per-shard time goes
            (waiting for delivery and claim, opening inputs + storing outcomes + counting, the sweep).

Not a test: figures are printed and written to bench/results/shards-<mode>.json. Run it on a quiet machine;
`--quick` makes it small enough to check that it works.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db import repositories as repo  # noqa: E402
from db.session import session_scope  # noqa: E402
from tests.support.service_harness import (  # noqa: E402
    REDIS_URL,
    claim_redis_db,
    create_database,
    drop_database,
    open_env,
    register_inputs,
    release_redis_db,
)

ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}  # one torch thread per worker: 2 workers, 2 cores
PGD_JOB = {"attacks": "fgsm,pgd", "steps": 10, "eps": [0, 2 / 255, 4 / 255, 8 / 255], "cam": "none"}


class _Factory:
    """A stand-in for pytest's tmp_path_factory: folders under one temporary root."""

    def __init__(self, root: Path) -> None:
        self.root, self.count = root, 0

    def mktemp(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{name}{self.count}"
        path.mkdir(parents=True)
        return path


def _run(env, inputs, config: dict, dataset: str, timeout_s: float) -> tuple[float, object]:
    started = time.perf_counter()
    job_id = env.submit(inputs["model"], inputs[dataset], config)
    job = env.wait_finished(job_id, timeout_s=timeout_s)
    seconds = time.perf_counter() - started
    if job.status != "succeeded":
        raise SystemExit(f"job {job_id} {job.status}: {job.error}")
    return seconds, job


def _outcomes(env, job) -> dict[str, np.ndarray]:
    with session_scope(env.sessions) as session:
        key = repo.results.get_artifact(session=session, job_id=job.id, name="outcomes.npz").storage_key
    with np.load(env.store.path(key)) as archive:
        return {name: archive[name] for name in archive.files}


def _same_results(env, first, second) -> bool:
    a, b = _outcomes(env, first), _outcomes(env, second)
    same_arrays = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    drop = ("timing", "config")
    same_report = {k: v for k, v in first.report.items() if k not in drop} == {
        k: v for k, v in second.report.items() if k not in drop
    }
    return same_arrays and same_report


def _shard_costs(env, job) -> dict[str, float]:
    """Per shard: wait (the worker's previous shard's end → this claim), sweep, and the rest of its wall time."""
    with session_scope(env.sessions) as session:
        shards = list(repo.shards.list(session=session, job_id=job.id))
    by_worker: dict[str, list] = {}
    for shard in shards:
        by_worker.setdefault(shard.worker_host, []).append(shard)
    waits, rests = [], []
    for rows in by_worker.values():
        rows.sort(key=lambda s: s.started_at)
        for before, after in zip(rows, rows[1:], strict=False):
            waits.append((after.started_at - before.finished_at).total_seconds())
        rests += [(s.finished_at - s.started_at).total_seconds() - (s.seconds or 0) for s in rows]
    return {
        "shards": len(shards),
        "median_wait_s": statistics.median(waits) if waits else 0.0,
        "median_open_store_count_s": statistics.median(rests),
        "median_sweep_s": statistics.median(s.seconds for s in shards),
        "merge_s": job.report["timing"]["merge_seconds"],
    }


def speedup(env, inputs, quick: bool, rounds: int) -> dict:
    config = {**PGD_JOB, "batch_size": 16} | ({"limit": 128} if quick else {"steps": 20})  # about 40 s here
    # Both workers run throughout: a 1-shard job keeps one of them busy, a 2-shard job both; rounds alternate.
    first = env.start_worker("first", ONE_THREAD).wait_ready()
    env.start_worker("second", ONE_THREAD).wait_ready()
    single_runs, sharded_runs = [], []
    for _ in range(rounds):
        single_runs.append(_run(env, inputs, {**config, "shards": 1}, "digits_train", 3600))
        sharded_runs.append(_run(env, inputs, {**config, "shards": 2}, "digits_train", 3600))
    assert first.alive()
    single_s = statistics.median(s for s, _ in single_runs)
    sharded_s = statistics.median(s for s, _ in sharded_runs)
    return {
        "config": config,
        "rounds": rounds,
        "one_shard_s": [round(s, 2) for s, _ in single_runs],
        "two_shards_s": [round(s, 2) for s, _ in sharded_runs],
        "speedup": single_s / sharded_s,
        "target": 1.8,
        "identical_results": all(
            _same_results(env, single_runs[0][1], job) for _, job in single_runs[1:] + sharded_runs
        ),
        "shards": _shard_costs(env, sharded_runs[-1][1]),
    }


def overhead(env, inputs, quick: bool, shards: int) -> dict:
    # 200 shards need 200 batches: batch 4 over digits:train (1437 images) gives 360
    # about three minutes on one thread here: 5 % of it is 45 ms per shard
    config = {**PGD_JOB, "batch_size": 4} | ({"limit": 4 * shards} if quick else {"steps": 100})
    env.start_worker(
        "only", ONE_THREAD
    ).wait_ready()  # one worker for both: the shards' cost, not the second worker's help
    single_s, single = _run(env, inputs, {**config, "shards": 1}, "digits_train", 7200)
    many_s, many = _run(env, inputs, {**config, "shards": shards}, "digits_train", 7200)
    return {
        "config": config,
        "one_shard_s": single_s,
        f"{shards}_shards_s": many_s,
        "overhead": many_s / single_s - 1,
        "target": 0.05,
        "per_shard_overhead_s": (many_s - single_s) / (shards - 1),
        "identical_results": _same_results(env, single, many),
        "shards": _shard_costs(env, many),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("speedup", "overhead"))
    parser.add_argument("--quick", action="store_true", help="a small job: checks that the benchmark works")
    parser.add_argument("--shards", type=int, default=200, help="shards of the overhead run (default 200)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated rounds of the speedup run (default 3)"
    )
    args = parser.parse_args()
    if args.shards < 2:
        parser.error("--shards must be at least 2")
    import tempfile  # noqa: PLC0415

    index, token = claim_redis_db()
    name, url = create_database()
    env = None
    try:
        with tempfile.TemporaryDirectory(prefix="advaudit-bench-") as root:
            env = open_env(url, f"{REDIS_URL}/{index}", _Factory(Path(root)))
            inputs = register_inputs(env)
            result = (
                speedup(env, inputs, args.quick, args.rounds)
                if args.mode == "speedup"
                else overhead(env, inputs, args.quick, args.shards)
            )
            env.close()
            env = None
    finally:
        if env is not None:
            env.close()
        drop_database(name)
        release_redis_db(index, token)
    out = ROOT / "bench" / "results" / f"shards-{args.mode}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
