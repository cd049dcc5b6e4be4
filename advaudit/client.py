"""Client commands against a running server: models, datasets, jobs, compare."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from advaudit.console import console, headline, pct, print_sanity, summary_table
from advaudit.options import add_evaluation_options, config_from_args
from services.errors import AdvauditError
from services.job_states import QUEUED, RUNNING, SUCCEEDED, TERMINAL


class ServerError(AdvauditError):
    """The server refused a request or could not be reached; the message is its problem detail."""


class Client:
    """A thin JSON client for /api/v1 that turns problem+json answers into ServerError."""

    def __init__(self, server: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = server.rstrip("/")
        self.http = httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=120)

    def request(self, method: str, path: str, **kwargs):
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServerError(f"cannot reach the server at {self.base}: {error}") from None
        if response.is_error:
            try:
                detail = response.json().get("detail") or response.json().get("title")
            except ValueError:
                detail = response.text[:300]
            raise ServerError(f"{response.status_code}: {detail}")
        return response.json() if response.content else None


def add_commands(commands) -> None:
    def client_parser(parent, name: str, help: str):
        p = parent.add_parser(name, help=help)
        p.add_argument("--server", default=os.environ.get("ADVAUDIT_SERVER", "http://127.0.0.1:8000"))
        p.add_argument("--token", default=os.environ.get("ADVAUDIT_TOKEN"))
        return p

    models = commands.add_parser("models", help="models on a server").add_subparsers(
        dest="action", required=True
    )
    p = client_parser(models, "add", "upload a checkpoint, or register one already in the server's bucket")
    p.add_argument(
        "file", help="a local checkpoint file, or s3://bucket/key of an object in the server's bucket"
    )
    p.add_argument("--name", required=True)
    p.add_argument("--arch")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--mean", help="comma-separated per-channel mean")
    p.add_argument("--std", help="comma-separated per-channel std")
    p.add_argument("--input-shape", help="C,H,W the model takes (or --dataset-id)")
    p.add_argument("--dataset-id", type=int, help="take the input shape and class names from this dataset")
    p.set_defaults(handler=cmd_models_add)
    client_parser(models, "list", "list models").set_defaults(handler=cmd_list, path="/models")

    datasets = commands.add_parser("datasets", help="datasets on a server").add_subparsers(
        dest="action", required=True
    )
    p = client_parser(
        datasets, "add", "upload an .npz or ImageFolder .zip, or register one already in the bucket"
    )
    p.add_argument("file", help="a local file, or s3://bucket/key of an object in the server's bucket")
    p.add_argument("--name", required=True)
    p.add_argument("--image-size", type=int)
    p.set_defaults(handler=cmd_datasets_add)
    client_parser(datasets, "list", "list datasets").set_defaults(handler=cmd_list, path="/datasets")

    jobs = commands.add_parser("jobs", help="evaluation jobs on a server").add_subparsers(
        dest="action", required=True
    )
    p = client_parser(jobs, "submit", "submit an evaluation job")
    p.add_argument("--model-id", type=int, required=True)
    p.add_argument("--dataset-id", type=int, required=True)
    add_evaluation_options(p)
    p.add_argument("--wait", action="store_true", help="show a progress bar until the job finishes")
    p.set_defaults(handler=cmd_jobs_submit)
    p = client_parser(jobs, "show", "a job's status, and its results once it succeeded")
    p.add_argument("job_id", type=int)
    p.set_defaults(handler=cmd_jobs_show)
    p = client_parser(jobs, "cancel", "cancel a queued or running job")
    p.add_argument("job_id", type=int)
    p.set_defaults(handler=cmd_jobs_cancel)
    client_parser(jobs, "list", "list jobs").set_defaults(handler=cmd_list, path="/jobs")

    p = client_parser(commands, "compare", "compare finished jobs on one dataset")
    p.add_argument("job_ids", type=int, nargs="+")
    p.set_defaults(handler=cmd_compare)


def _client(args) -> Client:
    return Client(args.server, args.token)


def _upload(client: Client, path: str, route: str, fields: dict) -> dict:
    """Upload the file `path`, or register by reference when it is an s3:// URI (the server fetches it)."""
    data = {k: v for k, v in fields.items() if v is not None}
    if path.startswith("s3://"):
        return client.request("POST", route, json=data | {"uri": path})
    file = Path(path)
    if not file.is_file():
        raise ServerError(f"no such file: {file}")
    with file.open("rb") as handle:
        return client.request(
            "POST", route, files={"file": (file.name, handle)}, data={k: str(v) for k, v in data.items()}
        )


def cmd_models_add(args) -> int:
    record = _upload(
        _client(args),
        args.file,
        "/models",
        {
            "name": args.name,
            "arch": args.arch,
            "num_classes": args.num_classes,
            "mean": args.mean,
            "std": args.std,
            "input_shape": args.input_shape,
            "dataset_id": args.dataset_id,
        },
    )
    console.print(
        f"model {record['id']}: {escape(record['name'])} {record.get('version', '')} "
        f"({record['format']}, {record['num_classes']} classes, sha256 {record['sha256'][:12]}…)"
    )
    return 0


def cmd_datasets_add(args) -> int:
    record = _upload(
        _client(args), args.file, "/datasets", {"name": args.name, "image_size": args.image_size}
    )
    console.print(
        f"dataset {record['id']}: {escape(record['name'])} ({record['num_samples']} samples, "
        f"{record['input_shape']}, sha256 {record['sha256'][:12]}…)"
    )
    return 0


def cmd_list(args) -> int:
    answer = _client(args).request("GET", args.path)
    items = answer["data"] if isinstance(answer, dict) and "data" in answer else answer
    console.print_json(json.dumps(items, default=str))
    return 0


def cmd_jobs_submit(args) -> int:
    config = config_from_args(args).to_dict()  # validated here first: bad options fail before any upload
    client = _client(args)
    job = client.request(
        "POST", "/jobs", json={"model_id": args.model_id, "dataset_id": args.dataset_id, "config": config}
    )
    console.print(f"job {job['id']} {job['status']}")
    if args.wait:
        job = _wait(client, job["id"])
        _show(client, job)
    return 0 if job["status"] in (QUEUED, RUNNING, SUCCEEDED) else 1


def _wait(client: Client, job_id: int) -> dict:
    with Progress(
        TextColumn("[bold]job {task.fields[job]}: {task.fields[status]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} %"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("job", total=1.0, job=job_id, status=QUEUED)
        while True:
            job = client.request("GET", f"/jobs/{job_id}")
            bar.update(task, completed=job["progress"], status=job["status"])
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.5)


def _show(client: Client, job: dict) -> None:
    console.print(
        f"job {job['id']}: {job['status']} ({100 * job['progress']:.0f} %), attempts {job['attempts']}"
    )
    if job.get("error"):
        console.print(f"[red]error:[/] {escape(job['error'])}")
    if job["status"] == SUCCEEDED:
        document = client.request("GET", f"/jobs/{job['id']}/report")
        console.print(summary_table(document))
        console.print(headline(document))
        print_sanity(document)


def cmd_jobs_show(args) -> int:
    client = _client(args)
    _show(client, client.request("GET", f"/jobs/{args.job_id}"))
    return 0


def cmd_jobs_cancel(args) -> int:
    job = _client(args).request("POST", f"/jobs/{args.job_id}/cancel")
    console.print(f"job {job['id']}: {job['status']}")
    return 0


def cmd_compare(args) -> int:
    answer = _client(args).request("GET", "/compare", params={"job_ids": ",".join(map(str, args.job_ids))})
    rows = answer["rows"]
    eps = answer["eps"]
    ranking = answer.get("ranking_eps")
    at = "—" if ranking is None else f"{ranking * 255:g}/255"
    dataset = (answer.get("dataset") or {}).get("name", "?")
    table = Table(
        title=escape(
            f"Leaderboard on {dataset}: ranked by {answer.get('ranked_by', 'worst-case accuracy')} "
            "(worst-case accuracy % over every attack at ε = k/255; AUCs over the shared ε only)"
        )
    )
    columns = (
        "#",
        "job",
        "model",
        "sanity",
        f"worst @ {at}",
        f"transfer @ {at}",
        "worst AUC",
        "FGSM AUC",
        "clean",
    )
    for column in (*columns, *[f"{e * 255:g}" for e in eps], "CAM drift", "MACs"):
        table.add_column(column, justify="left" if column in ("model", "sanity") else "right")
    for rank, row in enumerate(rows, start=1):
        verdict = row.get("sanity_verdict")
        sanity = (
            "[bold red]SUSPICIOUS[/]"
            if verdict == "suspicious"
            else ("— (v1)" if verdict is None else f"[green]{escape(verdict)}[/]")
        )
        table.add_row(
            str(rank),
            str(row["job_id"]),
            escape(f"{row['model_name']} {row.get('model_version') or ''}"),
            sanity,
            pct(row.get("ranking_accuracy")),
            pct(row.get("transfer_accuracy")),
            _auc(row.get("worst_case_auc")),
            _auc(row.get("fgsm_auc")),
            pct(row["clean_accuracy"]),
            *[pct(a) for a in row.get("worst_case_accuracy", row["accuracy"])],
            "—" if row.get("cam_drift") is None else f"{row['cam_drift']:.3f}",
            "—" if not row.get("macs") else f"{row['macs'] / 1e6:.2f} M",
        )
    console.print(table)
    for warning in answer.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    for row in rows:
        if row.get("sanity_verdict") == "suspicious":
            titles = ", ".join(check["title"] for check in row.get("failed_checks", [])) or "?"
            console.print(f"[bold red]job {row['job_id']}: sanity: SUSPICIOUS — failed: {escape(titles)}[/]")
    return 0


def _auc(value) -> str:
    return "—" if value is None else f"{value:.3f}"
