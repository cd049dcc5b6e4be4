"""Service commands: serve (API + embedded worker), worker, beat, db, token."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from advaudit.console import console
from advaudit.supervisor import Lifeline, SupervisedWorker
from contracts.tasks import Queue

CELERY = [sys.executable, "-m", "celery", "-A", "worker.tasks"]
DEFAULT_WORKER_QUEUES = f"{Queue.EVALUATIONS},{Queue.CONTROL}"
# `advaudit serve` runs two workers: one for the evaluations, one (with beat) for the control queue, so
# ticks, verdicts, webhooks and the requeue sweep never wait for an evaluation to finish.
EMBEDDED_EVALUATION_QUEUES = f"{Queue.EVALUATIONS},{Queue.GPU}"
EMBEDDED_CONTROL_QUEUES = str(Queue.CONTROL)


def _use_data_dir(path: str | None) -> None:
    """Point every setting that follows data_dir there, before any settings are read."""
    from contracts.settings import clear_settings_cache

    if path:
        os.environ["ADVAUDIT_DATA_DIR"] = str(Path(path).expanduser().absolute())
    clear_settings_cache()


def add_commands(commands) -> None:
    serve = commands.add_parser("serve", help="API with an embedded worker; SQLite database and broker")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (non-loopback requires tokens)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", default=None, help="where the database, broker and artifacts live")
    serve.add_argument(
        "--no-worker", action="store_true", help="do not start the embedded worker (nor the beat it embeds)"
    )
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="a Celery worker for the distributed set-up")
    worker.add_argument(
        "--queues",
        default=DEFAULT_WORKER_QUEUES,
        help=f"comma-separated queues (default {DEFAULT_WORKER_QUEUES}): evaluations (CPU jobs), "
        "gpu (jobs with device cuda), control (audit ticks, verdicts, webhooks, the requeue "
        "sweep: light, give it to at least one worker that is not busy with GPU jobs)",
    )
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--data-dir", default=None)
    worker.set_defaults(handler=cmd_worker)

    beat = commands.add_parser("beat", help="the Celery beat scheduler: sends the audit tick")
    beat.add_argument("--data-dir", default=None)
    beat.set_defaults(handler=cmd_beat)

    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=("upgrade", "current"))
    db.add_argument("--data-dir", default=None)
    db.set_defaults(handler=cmd_db)

    token = commands.add_parser("token", help="API tokens (only their hash is stored)")
    token.add_argument("action", choices=("create", "list", "delete"))
    token.add_argument("name", nargs="?")
    token.add_argument("--data-dir", default=None)
    token.set_defaults(handler=cmd_token)


def _worker_command(
    queues: str,
    concurrency: int,
    pool: str = "prefork",
    beat_schedule: Path | None = None,
    name: str | None = None,
) -> list[str]:
    command = [
        *CELERY,
        "worker",
        "--loglevel=INFO",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
    ]
    if name is not None:  # two workers of one host need distinct node names
        command.append(f"--hostname={name}@%h")
    if beat_schedule is not None:  # embed beat: the audit tick then needs no separate process
        command += ["--beat", f"--schedule={beat_schedule}"]
    return command


def beat_schedule_file(data_dir: Path) -> Path:
    """Where beat keeps its last-run times (the audits themselves live in the database)."""
    return data_dir / "beat-schedule"


def _exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from contracts import embedded_broker
    from contracts.settings import get_settings

    _use_data_dir(args.data_dir)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if embedded_broker.is_embedded(settings.broker_url):
        # before the worker and its beat start writing to it
        embedded_broker.prepare(settings.broker_url, tuple(Queue))
    app = create_app(settings, listen_host=args.host)
    workers: list[SupervisedWorker] = []
    if not args.no_worker:
        # Child processes, restarted if they die: a model that crashes one cannot take the API down. The control
        # worker embeds beat, so scheduled audits and the requeue of a dead worker's jobs need nothing else.
        # Evaluations run in a prefork pool child, which Celery's hard time limit can kill (the solo pool
        # enforces no time limit) and replace without restarting the worker; the control worker stays solo.
        commands = {
            "worker.log": _worker_command(EMBEDDED_EVALUATION_QUEUES, 1, name="evaluations"),
            "control.log": _worker_command(
                EMBEDDED_CONTROL_QUEUES,
                1,
                pool="solo",
                name="control",
                beat_schedule=beat_schedule_file(settings.data_dir),
            ),
        }
        lifeline = (
            Lifeline()
        )  # the workers die with serve, even when serve is killed and this code never runs
        workers = [
            SupervisedWorker(command, settings.data_dir / log, env=os.environ.copy(), lifeline=lifeline)
            for log, command in commands.items()
        ]
        for worker in workers:
            worker.start()
    console.print(
        f"advaudit serving on http://{args.host}:{args.port}  (API docs: /docs, data: {settings.data_dir})"
    )
    # uvicorn shuts down on SIGTERM, then raises the signal again: with the default handler the process
    # would die right there, skipping the `finally` below and leaving the worker orphaned.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        for worker in workers:
            worker.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _use_data_dir(args.data_dir)
    os.execv(sys.executable, _worker_command(args.queues, args.concurrency))
    return 0  # not reached: the worker replaces this process so signals reach Celery directly


def cmd_beat(args: argparse.Namespace) -> int:
    from contracts.settings import get_settings

    _use_data_dir(args.data_dir)
    schedule = beat_schedule_file(get_settings().data_dir)
    schedule.parent.mkdir(parents=True, exist_ok=True)
    os.execv(sys.executable, [*CELERY, "beat", "--loglevel=INFO", f"--schedule={schedule}"])
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from contracts.settings import get_settings
    from db import migrate

    _use_data_dir(args.data_dir)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.action == "upgrade":
        migrate.upgrade(settings.database_url)
    console.print(f"database {settings.database_url}: revision {migrate.current(settings.database_url)}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from contracts.settings import get_settings
    from db import migrate
    from db.repositories import tokens
    from db.session import make_engine, make_session_factory, session_scope
    from services.errors import ConfigError

    _use_data_dir(args.data_dir)
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    sessions = make_session_factory(make_engine(settings.database_url))
    with session_scope(sessions) as session:
        if args.action == "list":
            for token in tokens.list(session=session):
                console.print(
                    f"{token.name}  created {token.created_at:%Y-%m-%d %H:%M}  last used {token.last_used_at}"
                )
            return 0
        if not args.name:
            raise ConfigError(f"token {args.action} needs a NAME")
        if args.action == "create":
            if tokens.get_by_name(session=session, name=args.name) is not None:
                raise ConfigError(
                    f"a token named {args.name!r} exists already; delete it or pick another name"
                )
            plaintext = tokens.create_token(session=session, name=args.name)
            print(plaintext)  # the only time it is shown: plain stdout so scripts can capture it
            return 0
        token = tokens.get_by_name(session=session, name=args.name)
        if token is None:
            raise ConfigError(f"no token named {args.name!r}")
        tokens.delete(session=session, token=token)
        console.print(f"deleted token {args.name}")
    return 0
