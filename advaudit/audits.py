"""`advaudit audits add|list|run|show|demo`: regression audits on a server (demo: in-process, no server)."""

from __future__ import annotations

import argparse
import os
import re
import time

from rich.markup import escape

from advaudit.client import Client
from advaudit.console import audits_table, console, describe_schedule, print_run, runs_table
from advaudit.options import add_evaluation_options, config_from_args
from services.audit_states import REFERENCE_VERDICTS
from services.audit_verdict import THRESHOLD_SPECS

INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_WAIT_S = 3600
TIMEOUT_EXIT = 3  # `audits run --wait` ran out of --timeout (1: regressed or error, 2: bad input)
POLL_S = 1.0


def interval_seconds(text: str) -> int:
    """argparse type: 3600, 90s, 15m, 6h or 1d → seconds."""
    match = INTERVAL.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 3600, 15m, 6h or 1d, got {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


def add_commands(commands) -> None:
    audits = commands.add_parser("audits", help="scheduled regression audits").add_subparsers(
        dest="action", required=True
    )

    def client_parser(name: str, help: str) -> argparse.ArgumentParser:
        p = audits.add_parser(name, help=help)
        p.add_argument("--server", default=os.environ.get("ADVAUDIT_SERVER", "http://127.0.0.1:8000"))
        p.add_argument("--token", default=os.environ.get("ADVAUDIT_TOKEN"))
        return p

    p = client_parser("add", "define an audit: which models, which dataset, when, which thresholds")
    p.add_argument("--name", required=True)
    selector = p.add_mutually_exclusive_group(required=True)
    selector.add_argument("--model-name", help="always audit the newest version of this model name")
    selector.add_argument("--model-id", type=int, action="append", help="audit this model (repeatable)")
    p.add_argument("--dataset-id", type=int, required=True)
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", help="5-field cron, e.g. '0 3 * * 1' (needs --timezone)")
    when.add_argument(
        "--interval", type=interval_seconds, help="every N seconds (or 15m, 6h, 1d) from 00:00 UTC"
    )
    p.add_argument("--timezone", help="IANA time zone of --cron, e.g. UTC or Europe/Paris")
    p.add_argument(
        "--baseline-job-id",
        type=int,
        help="pin this succeeded job as the baseline (default: the previous run that passed)",
    )
    for name, spec in THRESHOLD_SPECS.items():
        p.add_argument(spec.flag, type=float, dest=name, help=spec.describe())
    p.add_argument(
        "--transfer-source-id",
        type=int,
        action="append",
        help="also measure the audited models' black-box robustness against this model's adversarial examples "
        "(a transfer job each run; repeatable)",
    )
    p.add_argument("--webhook", help="URL POSTed a JSON summary of every finished run")
    p.add_argument(
        "--on-new-version",
        action="store_true",
        help="also run when a new version of --model-name is registered",
    )
    p.add_argument("--disabled", action="store_true", help="create it disabled (no scheduled runs)")
    add_evaluation_options(p)
    p.set_defaults(handler=cmd_add)

    client_parser("list", "list audits with their last verdict").set_defaults(handler=cmd_list)
    p = client_parser("run", "run an audit now")
    p.add_argument("audit_id", type=int)
    p.add_argument("--wait", action="store_true", help="wait for the verdict; exit code 1 unless it passed")
    p.add_argument(
        "--timeout",
        type=interval_seconds,
        default=DEFAULT_WAIT_S,
        help=f"with --wait: give up after this long (seconds, or 15m, 2h; default {DEFAULT_WAIT_S}), "
        f"exit code {TIMEOUT_EXIT}",
    )
    p.set_defaults(handler=cmd_run)
    p = client_parser("show", "an audit, its recent runs and the newest verdict's diff table")
    p.add_argument("audit_id", type=int)
    p.add_argument("--runs", type=int, default=10, help="how many recent runs to list (default 10)")
    p.set_defaults(handler=cmd_show)

    p = audits.add_parser(
        "demo", help="watch an audit catch a less robust new model version (no server needed)"
    )
    p.add_argument(
        "--data-dir", default=None, help="record it here (default ADVAUDIT_DATA_DIR or ~/.advaudit)"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=cmd_demo)


def _client(args) -> Client:
    return Client(args.server, args.token)


def cmd_add(args) -> int:
    thresholds = {name: getattr(args, name) for name in THRESHOLD_SPECS}
    body = {
        "name": args.name,
        "model_name": args.model_name,
        "model_ids": args.model_id,
        "dataset_id": args.dataset_id,
        "cron": args.cron,
        "timezone": args.timezone,
        "interval_s": args.interval,
        "baseline_job_id": args.baseline_job_id,
        "webhook_url": args.webhook,
        "transfer_source_ids": args.transfer_source_id,
        "enabled": not args.disabled,
        "run_on_new_version": args.on_new_version,
        "config": config_from_args(args).to_dict(),  # validated here first: bad options fail early
        "thresholds": {key: value for key, value in thresholds.items() if value is not None},
    }
    audit = _client(args).request("POST", "/audits", json={k: v for k, v in body.items() if v is not None})
    console.print(f"audit {audit['id']}: {escape(audit['name'])}, {describe_schedule(audit)}")
    return 0


def cmd_list(args) -> int:
    console.print(audits_table(_client(args).request("GET", "/audits", params={"limit": 1000})["data"]))
    return 0


def cmd_run(args) -> int:
    client = _client(args)
    run = client.request("POST", f"/audits/{args.audit_id}/run")
    console.print(f"run {run['id']} of audit {args.audit_id}: {escape(run['status'])}")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while run["status"] != "finished":
        if time.monotonic() >= deadline:
            console.print(
                f"[bold red]timeout:[/] run {run['id']} of audit {args.audit_id} is still "
                f"{escape(run['status'])} after {args.timeout} s; it goes on on the server "
                f"(see `advaudit audits show {args.audit_id}`)"
            )
            return TIMEOUT_EXIT
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        run = client.request("GET", f"/audits/{args.audit_id}/runs/{run['id']}")
    print_run(run)
    return 0 if run["verdict"] in REFERENCE_VERDICTS else 1  # a CI gate passes what may serve as a baseline


def cmd_show(args) -> int:
    client = _client(args)
    audit = client.request("GET", f"/audits/{args.audit_id}")
    models = audit["model_name"] or ", ".join(f"model {i}" for i in audit["model_ids"])
    console.print(
        f"audit {audit['id']}: [bold]{escape(audit['name'])}[/] — {escape(models)} on dataset "
        f"{audit['dataset_id']}"
    )
    console.print(f"  {describe_schedule(audit)}")
    if audit.get("transfer_source_ids"):
        console.print("  transfer sources: " + ", ".join(f"model {i}" for i in audit["transfer_source_ids"]))
    baseline = (
        "the previous run that passed"
        if audit["baseline_job_id"] is None
        else f"job {audit['baseline_job_id']}"
    )
    console.print(
        f"  baseline: {baseline}; thresholds: "
        + ", ".join(f"{key} {value:g}" for key, value in audit["thresholds"].items() if value is not None)
    )
    runs = client.request("GET", f"/audits/{args.audit_id}/runs", params={"limit": max(args.runs, 1)})["data"]
    if not runs:
        console.print("  no runs yet")
        return 0
    console.print(runs_table(runs))
    finished = next((run for run in runs if run["status"] == "finished"), None)
    if finished is not None:
        print_run(finished)
    return 0


def cmd_demo(args) -> int:
    from advaudit.audit_demo import run_demo  # torch and the database layer only for the demo

    return run_demo(data_dir=args.data_dir, device=args.device)
