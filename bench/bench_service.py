"""Service benchmark: one evaluation through API → Redis → Celery → PostgreSQL vs the same in-process,
and POST /jobs latency with 20 concurrent clients.

Starts its own API server and worker processes against a fresh PostgreSQL database and a Redis DB
index, and removes them at the end. Not a test: ratios and percentiles are printed and written to
bench/results/service.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from services.checkpoints import demo_model_path, load_model  # noqa: E402
from services.datasets import load_dataset  # noqa: E402
from services.evaluation import evaluate  # noqa: E402
from services.specs import EvaluationConfig  # noqa: E402

PG_ADMIN = os.environ.get("ADVAUDIT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("ADVAUDIT_BENCH_REDIS", "redis://127.0.0.1:6379/11")
# A job with ≥ 10 s of compute on a 2-core CPU: every digit, 101 ε values up to 50/255, targeted, CAM audit.
JOB_CONFIG = {"eps": [k / 510 for k in range(101)], "targeted": "next", "cam": "auto", "batch_size": 64}
TINY_CONFIG = {"eps": [0, 8 / 255], "limit": 8, "cam": "none"}
POLL_S = 0.5  # how often the benchmark asks for the job's status, as a patient client would


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # the server may not be up yet
            pass
        time.sleep(poll_s)
    raise SystemExit(f"timed out waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile in milliseconds (nearest rank)."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def submit_latencies(
    base: str, body: dict, clients: int, submits: int, period_s: float, arrivals: str
) -> list[float]:
    """POST /jobs from `clients` threads, `submits` each; returns the latencies in seconds.

    arrivals: "poisson" — each client submits at exponentially distributed gaps of mean `period_s`
    (independent users); "lockstep" — all clients submit at the same instants every `period_s` (a burst of
    `clients` requests at once, the worst case); "closed" — back to back (saturation).
    """
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop(index: int) -> None:
        own = httpx.Client(base_url=base, timeout=30)
        rng = random.Random(index)  # seeded: the same arrival pattern on every run
        next_at = time.perf_counter() + (rng.expovariate(1 / period_s) if arrivals == "poisson" else 0.0)
        for _ in range(submits):
            time.sleep(max(0.0, next_at - time.perf_counter()))
            t0 = time.perf_counter()
            own.post("/jobs", json=body).raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - t0)
            if arrivals == "poisson":
                next_at += rng.expovariate(
                    1 / period_s
                )  # open loop: the schedule ignores how long a call took
            elif arrivals == "lockstep":
                next_at += period_s
            else:
                next_at = time.perf_counter()

    threads = [threading.Thread(target=client_loop, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def epoch(timestamp: str) -> float:
    """An API timestamp (ISO 8601, UTC) as seconds since the epoch."""
    moment = datetime.fromisoformat(timestamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def job_breakdown(job: dict, report: dict, submitted_at: float) -> dict[str, float]:
    """Where one service job's time went: the submit, the queue wait, the worker's time around evaluate."""
    worker_s = epoch(job["finished_at"]) - epoch(job["started_at"])
    return {
        "submit_s": epoch(job["created_at"]) - submitted_at,
        "queued_s": epoch(job["started_at"]) - epoch(job["created_at"]),
        "worker_s": worker_s,
        "evaluate_s": report["timing"]["seconds"],
        "worker_overhead_s": worker_s - report["timing"]["seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="dilated-cnn", help="demo model for the long job")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--submits", type=int, default=20, help="POST /jobs per client")
    parser.add_argument("--period", type=float, default=0.5, help="mean seconds between one client's submits")
    parser.add_argument("--rounds", type=int, default=5, help="alternated in-process / service runs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    database = f"advaudit_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    tmp = Path(tempfile.mkdtemp(prefix="advaudit-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "ADVAUDIT_DATA_DIR": str(tmp),
        "ADVAUDIT_AUTH": "off",
        "ADVAUDIT_DEVICE": "cpu",
        "ADVAUDIT_DATABASE_URL": PG_ADMIN.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        + f"/{database}",
        "ADVAUDIT_BROKER_URL": REDIS,
        "ADVAUDIT_RESULT_BACKEND": REDIS,
        "ADVAUDIT_PROGRESS_INTERVAL_S": "0.5",
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "advaudit.cli", "serve", "--no-worker", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.tasks",
            "worker",
            "--pool=solo",
            "--queues=evaluations",
            "--loglevel=WARNING",
            f"--hostname=bench-{uuid.uuid4().hex[:6]}",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        client = httpx.Client(base_url=base, timeout=60)
        wait_until(lambda: client.get("/health").status_code == 200, 60, "the API")
        wait_until(lambda: client.get("/health").json()["workers"]["count"] >= 1, 60, "a worker")
        with open(demo_model_path(args.model), "rb") as handle:
            model = client.post(
                "/models",
                files={"file": (f"{args.model}.pt", handle)},
                data={"name": args.model, "input_shape": "1,32,32"},
            ).json()
        digits = next(d for d in client.get("/datasets").json()["data"] if d["name"] == "digits")

        body = {"model_id": model["id"], "dataset_id": digits["id"], "config": JOB_CONFIG}
        in_process_runs, service_runs, breakdowns = [], [], []
        for round_ in range(args.rounds):  # alternated, so a burst of load elsewhere hits both sides
            started = time.perf_counter()
            # What `advaudit evaluate` does in its process: load, evaluate, write the report folder.
            dataset = load_dataset("digits")
            loaded = load_model(demo_model_path(args.model), input_shape=(1, 32, 32))
            evaluate(loaded, dataset, EvaluationConfig(**JOB_CONFIG, device="cpu")).write(
                tmp / f"local-{round_}"
            )
            in_process_runs.append(time.perf_counter() - started)
            submitted_at = time.time()
            job = client.post("/jobs", json=body).json()
            wait_until(
                lambda job=job: client.get(f"/jobs/{job['id']}").json()["status"] in ("succeeded", "failed"),
                600,
                "the job",
                poll_s=POLL_S,
            )
            final = client.get(f"/jobs/{job['id']}").json()
            if final["status"] != "succeeded":
                raise SystemExit(f"the job failed: {final['error']}")
            # Up to the commit of its results (the server's clock is this machine's): how often a client asks
            # afterwards is the client's choice, and asking often would itself take CPU from the job.
            service_runs.append(epoch(final["finished_at"]) - submitted_at)
            breakdowns.append(
                job_breakdown(final, client.get(f"/jobs/{job['id']}/report").json(), submitted_at)
            )
        in_process, through_service = statistics.median(in_process_runs), statistics.median(service_runs)
        # Each round's two runs are minutes apart at most: their ratio cancels load that drifts over the run.
        paired = statistics.median(s / i for s, i in zip(service_runs, in_process_runs, strict=True))

        # Submit latency is the API's: stop the worker so queued tiny jobs do not compete for the CPU.
        worker.terminate()
        worker.wait(timeout=30)
        tiny = {"model_id": model["id"], "dataset_id": digits["id"], "config": TINY_CONFIG}
        for _ in range(5):  # warm-up: connections, first-request imports
            client.post("/jobs", json=tiny)
        poisson = submit_latencies(base, tiny, args.clients, args.submits, args.period, "poisson")
        burst = submit_latencies(base, tiny, args.clients, args.submits, args.period, "lockstep")
        saturated_started = time.perf_counter()
        saturated = submit_latencies(base, tiny, args.clients, args.submits, 0.0, "closed")
        saturated_s = time.perf_counter() - saturated_started
        result = {
            "model": args.model,
            "job_eps": len(JOB_CONFIG["eps"]),
            "rounds": args.rounds,
            "in_process_s": in_process_runs,
            "through_service_s": service_runs,
            "ratio": through_service / in_process,
            "paired_ratio": paired,
            "service_breakdown_s": breakdowns,
            "clients": args.clients,
            "submits_per_client": args.submits,
            "poisson_mean_gap_s": args.period,
            "poisson_p50_ms": percentile(poisson, 50),
            "poisson_p99_ms": percentile(poisson, 99),
            "lockstep_p50_ms": percentile(burst, 50),
            "lockstep_p99_ms": percentile(burst, 99),
            "saturated_p50_ms": percentile(saturated, 50),
            "saturated_p99_ms": percentile(saturated, 99),
            "saturated_requests_per_s": len(saturated) / saturated_s,
        }
        print(json.dumps(result, indent=2))
        print(
            f"service / in-process: median of the {args.rounds} rounds' ratios {paired:.3f}×, ratio of the "
            f"medians {result['ratio']:.3f}× (target ≤ 1.10)"
        )
        print(
            f"POST /jobs, {args.clients} concurrent clients, each submitting at random (Poisson) gaps of mean "
            f"{args.period} s: p50 {result['poisson_p50_ms']:.1f} ms, p99 {result['poisson_p99_ms']:.1f} ms "
            "(target p99 ≤ 50 ms)"
        )
        print(
            f"POST /jobs, {args.clients} clients in lockstep (a burst of {args.clients} every {args.period} s): "
            f"p50 {result['lockstep_p50_ms']:.1f} ms, p99 {result['lockstep_p99_ms']:.1f} ms"
        )
        print(
            f"POST /jobs, {args.clients} clients back to back (saturation): {result['saturated_requests_per_s']:.0f} "
            f"req/s, p50 {result['saturated_p50_ms']:.1f} ms, p99 {result['saturated_p99_ms']:.1f} ms"
        )
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "service.json").write_text(json.dumps(result, indent=2))
        return 0
    finally:
        for process in (worker, api):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        import redis

        redis.Redis.from_url(REDIS).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
