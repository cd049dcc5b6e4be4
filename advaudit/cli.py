"""The `advaudit` command line: local evaluation, the service, and a client for a running server."""

from __future__ import annotations

import argparse
import sys

from rich.markup import escape

from advaudit import audits, client, local, service, transfer_cli
from advaudit.console import console
from services.errors import AdvauditError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advaudit", description="Adversarial robustness evaluation for PyTorch image classifiers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    local.add_commands(commands)
    service.add_commands(commands)
    client.add_commands(commands)
    audits.add_commands(commands)
    transfer_cli.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except AdvauditError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}")
        return 2
    except OSError as error:  # unreadable input or unwritable --out: the user's to fix, not a crash
        console.print(
            "[bold red]error:[/] " + escape(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
