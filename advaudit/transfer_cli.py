"""`advaudit transfer`: a transfer matrix on a server (models and dataset by id or name), or in this process
with `--local` (checkpoint paths or demo:NAME). Both print the same tables.

torch and the engine are imported only by the local run, never at start-up.
"""

from __future__ import annotations

import os
import time

from rich.markup import escape
from rich.table import Table

from advaudit.client import Client, ServerError
from advaudit.console import console, pct
from advaudit.options import add_evaluation_options, config_from_args
from services.job_states import SUCCEEDED, TERMINAL
from services.specs import format_eps
from services.transfer_specs import TRANSFER_OPTIONS, TransferConfig, check_roles


def add_commands(commands) -> None:
    p = commands.add_parser(
        "transfer",
        help="transfer matrix: examples crafted on each source model, evaluated on each target model",
    )
    p.add_argument(
        "--source", action="append", default=[], help="a source model (repeat): id or name[:version]"
    )
    p.add_argument(
        "--target", action="append", default=[], help="a target model (repeat): id or name[:version]"
    )
    p.add_argument(
        "--dataset", required=True, help="dataset id or name (with --local: digits, .npz, ImageFolder)"
    )
    add_evaluation_options(p, TRANSFER_OPTIONS)
    p.add_argument(
        "--local", action="store_true", help="run here: --source/--target are checkpoints or demo:NAME"
    )
    p.add_argument("--no-wait", action="store_true", help="submit to the server and return at once")
    p.add_argument("--server", default=os.environ.get("ADVAUDIT_SERVER", "http://127.0.0.1:8000"))
    p.add_argument("--token", default=os.environ.get("ADVAUDIT_TOKEN"))
    p.set_defaults(handler=cmd_transfer)


def cmd_transfer(args) -> int:
    config: TransferConfig = config_from_args(args, TRANSFER_OPTIONS, TransferConfig)
    check_roles(args.source, args.target)
    if args.local:
        from advaudit.transfer_local import run_local  # noqa: PLC0415 (torch: only for a local run)

        print_matrix(run_local(args.source, args.target, args.dataset, config))
        return 0
    client = Client(args.server, args.token)
    body = {
        "dataset_id": _find(client, "datasets", args.dataset),
        "source_ids": [_find(client, "models", name) for name in args.source],
        "target_ids": [_find(client, "models", name) for name in args.target],
        "config": config.to_dict(),
    }
    job = client.request("POST", "/transfer", json=body)
    console.print(f"transfer job {job['id']} {job['status']}")
    if args.no_wait:
        return 0
    while job["status"] not in TERMINAL:
        time.sleep(0.5)
        job = client.request("GET", f"/transfer/{job['id']}")
    if job["status"] != SUCCEEDED:
        console.print(
            f"transfer job {job['id']}: {job['status']}"
            + (f": {escape(job['error'])}" if job.get("error") else "")
        )
        return 1
    print_matrix(job)
    return 0


def _find(client: Client, kind: str, text: str) -> int:
    """The id of a model or dataset given as an id or a name (models: name:version, else the newest)."""
    if text.isascii() and text.isdigit():
        return int(text)
    name, _, version = text.partition(":") if kind == "models" else (text, "", "")
    rows = client.request("GET", f"/{kind}", params={"name": name, "limit": 1000})["data"]
    rows = [row for row in rows if row["name"] == name and (not version or row.get("version") == version)]
    if not rows:
        raise ServerError(f"no {kind[:-1]} named {text!r} on the server")
    return max(row["id"] for row in rows)


def print_matrix(result: dict) -> None:
    """Per attack, target accuracy % at each ε (sources as rows, targets as columns, * = white box), and each
    target's worst case over the other sources; then the worst case over every attack."""
    names = {
        m["id"]: f"{m['name']} {m.get('version') or ''}".strip()
        for m in (*result["sources"], *result["targets"])
    }
    cells = {(c["source_model_id"], c["target_model_id"], c["attack"], c["eps"]): c for c in result["cells"]}
    worst = {(w["target_model_id"], w["attack"], w["eps"]): w for w in result["worst_case"]}
    eps_values = sorted({c["eps"] for c in result["cells"]})
    attacks = list(dict.fromkeys(c["attack"] for c in result["cells"]))

    def series(lookup, key) -> str:
        values = [lookup.get((*key, e)) for e in eps_values]
        return " ".join("—" if v is None else pct(v["accuracy"]) for v in values)

    at = ", ".join(format_eps(e) for e in eps_values)
    for attack in (*attacks, "all"):
        title = f"{attack}: target accuracy % at ε = {at}" + (" (* white box)" if attack != "all" else "")
        table = Table(title=escape(title))
        table.add_column("source \\ target")
        for target in result["targets"]:
            table.add_column(escape(names[target["id"]]), justify="right")
        if attack != "all":
            for source in result["sources"]:
                row = [
                    series(cells, (source["id"], t["id"], attack)) + ("*" if source["id"] == t["id"] else "")
                    for t in result["targets"]
                ]
                table.add_row(escape(names[source["id"]]), *row)
        table.add_row(
            "worst over the other sources", *[series(worst, (t["id"], attack)) for t in result["targets"]]
        )
        console.print(table)
