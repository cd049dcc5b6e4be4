"""The shard path at a fleet's rate, without any model: fake shards pushed through the broker (Redis), the
database (PostgreSQL: claim, heartbeats, the counter, the merge's status change) and the artifact store
(the outcomes put, then read back by the merge), by as many concurrent "workers" (threads, one database
connection and one broker connection each) as asked. It measures each part's share of the time and the
throughput, to name the first bottleneck at 100 GPU workers.

  python bench/bench_merge_path.py --workers 90 --jobs 20 --shards 50 --beats 3

Not a test: figures are printed and written to bench/results/merge-path.json. PostgreSQL allows 100
connections by default: keep --workers below that (a real fleet needs a pooler, see README "Scaling").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kombu import Connection  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

from db import repositories as repo  # noqa: E402
from db.session import make_session_factory, session_scope  # noqa: E402
from db.storage import LocalArtifactStore  # noqa: E402
from services.job_states import SUCCEEDED  # noqa: E402
from tests.support.builders import add_demo_model, add_digits  # noqa: E402
from tests.support.service_harness import (  # noqa: E402
    REDIS_URL,
    claim_redis_db,
    create_database,
    drop_database,
    release_redis_db,
)

PARTS = ("broker", "database", "store")


def _setup(sessions, store, jobs: int, shards: int) -> list[int]:
    """`jobs` running jobs, each cut into `shards` shards of one sample each."""
    with session_scope(sessions) as session:
        model_id, dataset_id = add_demo_model(session, store).id, add_digits(session).id
        ids = []
        for _ in range(jobs):
            job = repo.jobs.create(session=session, model_id=model_id, dataset_id=dataset_id, config={})
            repo.jobs.claim(session=session, job_id=job.id, worker_host="coordinator")
            repo.shards.create(session=session, job=job, ranges=[(i, i + 1) for i in range(shards)])
            ids.append(job.id)
    return ids


def _worker(name, url, queue, sessions, store, payload, beats, spent, counts, errors) -> None:
    """One fake worker: take a shard message, claim, beat, store, count; merge when last."""
    timer = defaultdict(float)
    try:
        with Connection(url) as connection:
            inbox = connection.SimpleQueue(queue)
            while True:
                started = time.perf_counter()
                try:
                    message = inbox.get(timeout=2)
                except inbox.Empty:
                    break
                job_id, index = message.payload
                timer["broker"] += time.perf_counter() - started
                started = time.perf_counter()
                with session_scope(sessions) as session:
                    shard = repo.shards.claim(
                        session=session, job_id=job_id, shard_index=index, worker_host=name
                    ).shard
                    attempt = shard.attempts
                for _ in range(beats):
                    with session_scope(sessions) as session:
                        repo.shards.report_progress(
                            session=session, shard=shard, attempt=attempt, progress=0.5
                        )
                timer["database"] += time.perf_counter() - started
                started = time.perf_counter()
                key, _, _ = store.put_bytes(payload + f"{job_id}/{index}".encode())
                timer["store"] += time.perf_counter() - started
                started = time.perf_counter()
                with session_scope(sessions) as session:
                    row = repo.shards.get(session=session, job_id=job_id, shard_index=index)
                    completion = repo.shards.complete(
                        session=session,
                        shard=row,
                        attempt=attempt,
                        worker_host=name,
                        outcome_key=key,
                        seconds=0.0,
                    )
                timer["database"] += time.perf_counter() - started
                if completion.last:
                    _merge(sessions, store, job_id, timer)
                    counts["merges"] += 1
                started = time.perf_counter()
                message.ack()
                timer["broker"] += time.perf_counter() - started
                counts["shards"] += 1
            inbox.close()
    except Exception as error:  # reported, never swallowed: a bench that hides errors measures nothing
        errors.append(f"{name}: {type(error).__name__}: {error}")
    for part, seconds in timer.items():
        spent[part].append(seconds)


def _merge(sessions, store, job_id, timer) -> None:
    started = time.perf_counter()
    with session_scope(sessions) as session:
        keys = [s.outcome_key for s in repo.shards.list(session=session, job_id=job_id)]
    timer["database"] += time.perf_counter() - started
    started = time.perf_counter()
    for key in keys:
        with store.open(key) as stream:
            stream.read()
    timer["store"] += time.perf_counter() - started
    started = time.perf_counter()
    with session_scope(sessions) as session:
        job = repo.jobs.get(session=session, job_id=job_id)
        repo.jobs.transition(session=session, job=job, new_status=SUCCEEDED, attempt=job.attempts)
    timer["database"] += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=90, help="concurrent fake workers (default 90)")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--shards", type=int, default=50, help="shards per job")
    parser.add_argument(
        "--beats", type=int, default=3, help="heartbeats per shard (a real one: 1 per second)"
    )
    parser.add_argument("--payload-kib", type=int, default=64, help="size of one shard's outcomes")
    parser.add_argument(
        "--shard-seconds", type=float, default=60.0, help="a real shard's length, for the rates"
    )
    args = parser.parse_args()
    if min(args.workers, args.jobs, args.shards) < 1 or args.beats < 0:
        parser.error("--workers, --jobs and --shards must be ≥ 1, --beats ≥ 0")
    index, token = claim_redis_db()
    name, url = create_database()
    engine = create_engine(url, pool_size=args.workers, max_overflow=0, pool_pre_ping=True)
    broker = f"{REDIS_URL}/{index}"
    queue = f"bench-shards-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory(prefix="advaudit-merge-") as root:
            sessions, store = make_session_factory(engine), LocalArtifactStore(Path(root))
            job_ids = _setup(sessions, store, args.jobs, args.shards)
            payload = os.urandom(args.payload_kib * 1024)
            started = time.perf_counter()
            with Connection(broker) as connection:
                outbox = connection.SimpleQueue(queue)
                for job_id in job_ids:
                    for shard in range(args.shards):
                        outbox.put([job_id, shard])
                outbox.close()
            publish_s = time.perf_counter() - started
            spent, counts, errors = defaultdict(list), defaultdict(int), []
            threads = [
                threading.Thread(
                    target=_worker,
                    args=(
                        f"w{i}",
                        broker,
                        queue,
                        sessions,
                        store,
                        payload,
                        args.beats,
                        spent,
                        counts,
                        errors,
                    ),
                )
                for i in range(args.workers)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started - 2.0  # each worker waits 2 s on an empty queue at the end
    finally:
        engine.dispose()
        drop_database(name)
        release_redis_db(index, token)
    total = args.jobs * args.shards
    busy = {part: sum(spent[part]) for part in PARTS}
    rate = counts["shards"] / wall
    needed = args.workers / args.shard_seconds
    result = {
        "workers": args.workers,
        "shards": total,
        "done": counts["shards"],
        "merges": counts["merges"],
        "errors": errors[:5],
        "publish_per_s": total / publish_s,
        "shards_per_s": rate,
        "share_of_time": {part: busy[part] / max(sum(busy.values()), 1e-9) for part in PARTS},
        "ms_per_shard": {part: 1000 * busy[part] / max(counts["shards"], 1) for part in PARTS},
        "median_worker_busy_s": {part: statistics.median(spent[part] or [0]) for part in PARTS},
        "db_transactions_per_shard": 2 + args.beats,
        "db_transactions_per_s": rate * (2 + args.beats),
        "needed_shards_per_s": needed,
        # a real shard beats once a second for its whole length: the fleet's steady database load
        "needed_db_transactions_per_s": args.workers + 2 * needed,
        "db_headroom": rate * (2 + args.beats) / (args.workers + 2 * needed),
        "headroom": rate / needed,
        "shortest_shard_s_at_this_rate": args.workers / rate,
    }
    out = ROOT / "bench" / "results" / "merge-path.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if errors or counts["shards"] != total or counts["merges"] != args.jobs:
        raise SystemExit(
            f"the path lost work: {counts['shards']}/{total} shards, {counts['merges']}/{args.jobs} merges"
        )


if __name__ == "__main__":
    main()
