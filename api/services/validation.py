"""Run api.validate in a child process with a time limit, and turn its answer into domain errors.

Children are forked from a multiprocessing *forkserver* that preloads torch and the loaders: each
validation costs a fork (milliseconds) instead of a fresh interpreter importing torch (seconds), and
still runs in its own process, so a crash, hang or memory blow-up never reaches the server process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import threading
from collections.abc import Callable
from multiprocessing import spawn
from typing import Any

from services.errors import CheckpointError, ConfigError, DatasetError

TIMEOUT_S = 120.0
PRELOAD = ["api.validate"]
# The child's entry point (a module-level function, so the forkserver can import it by name).
TARGET: Callable[[dict[str, Any], Any], None] | None = None

_ERRORS = {"CheckpointError": CheckpointError, "DatasetError": DatasetError, "ConfigError": ConfigError}
_lock = threading.Lock()
_context: multiprocessing.context.BaseContext | None = None


class _ValidationPopen:
    """Launches forkserver children without re-running the server's `__main__` in them.

    multiprocessing re-imports the parent's main script in every child so that pickled functions
    defined there resolve; ours live in api.validate, and the main script may be a console entry point
    (slow to re-import) or not re-runnable at all (stdin, an embedded interpreter).
    """

    _launch_lock = threading.Lock()

    @classmethod
    def start(cls, process_obj):
        from multiprocessing.popen_forkserver import Popen

        original = spawn.get_preparation_data

        def without_main(name: str) -> dict:
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        with cls._launch_lock:  # the stdlib hook is module-global: launch one child at a time
            spawn.get_preparation_data = without_main
            try:
                return Popen(process_obj)
            finally:
                spawn.get_preparation_data = original


class _ValidationProcess(multiprocessing.context.ForkServerProcess):
    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj):
        return _ValidationPopen.start(process_obj)


def _get_context() -> multiprocessing.context.BaseContext:
    global _context
    with _lock:
        if _context is None:
            methods = multiprocessing.get_all_start_methods()
            _context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if _context.get_start_method() == "forkserver":
                _context.set_forkserver_preload(PRELOAD)
        return _context


def warm_up() -> None:
    """Start the forkserver now (it imports torch once), so the first upload does not pay for it."""
    context = _get_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _target() -> Callable[[dict[str, Any], Any], None]:
    if TARGET is not None:
        return TARGET
    from api.validate import run

    return run


def run_isolated(
    action: str,
    args: dict[str, Any],
    *,
    what: str,
    error: type[Exception],
    aliases: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The child's result for `action`; its loader error re-raised as that domain error, else `error`.

    `what` names the upload in messages ("model.pt"); `aliases` rewrites text in the loader's messages
    (the server's temporary path → the client's file name). A crash or timeout raises `error` saying the
    file could not be validated.
    """
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    context = _get_context()
    receiver, sender = context.Pipe(duplex=False)
    process_type = _ValidationProcess if context.get_start_method() == "forkserver" else context.Process
    process = process_type(target=_target(), args=({"action": action, "args": args}, sender), daemon=True)
    answer, timed_out = None, False
    try:
        process.start()
        sender.close()
        if receiver.poll(timeout_s):
            try:
                answer = receiver.recv()
            except (EOFError, OSError):  # the child died before answering
                answer = None
        else:
            timed_out = True
    finally:
        receiver.close()
        process.join(timeout=0 if timed_out else 5.0)  # an answered child exits on its own
        if process.is_alive():
            process.kill()
            process.join()
    if answer is None:
        if timed_out:
            raise error(
                f"{what} could not be validated: loading it took longer than {timeout_s:g} s, "
                "so it was stopped"
            )
        raise error(
            f"{what} could not be validated: the loader process crashed "
            f"(exit code {process.exitcode}); the file is corrupt or hostile"
        )
    if answer["ok"]:
        return answer["result"]
    message = str(answer.get("error", ""))
    for text, replacement in (aliases or {}).items():
        message = message.replace(text, replacement)
    if answer.get("kind") == "crash":
        raise error(f"{what} could not be validated: {message}")
    raise _ERRORS.get(answer.get("kind"), error)(message)
