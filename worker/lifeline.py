"""An embedded worker dies with the server that started it, however the server dies.

`advaudit serve` keeps the write end of a pipe and hands each worker the read end (its descriptor number in
ADVAUDIT_LIFELINE_FD). The kernel closes the write end when the server exits, even by SIGKILL or the OOM
killer; the worker's read then returns end-of-file and it takes its whole process group down: its pool child
(and a forward pass that never returns in it) and its embedded beat.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

LIFELINE_ENV = "ADVAUDIT_LIFELINE_FD"


def watch() -> bool:
    """Start the watcher thread if this process was given a lifeline; True when it was."""
    raw = os.environ.get(LIFELINE_ENV, "").strip()
    if not raw:
        return False
    try:
        fd = int(raw)
        os.fstat(fd)
    except (ValueError, OSError):
        log.warning(
            "%s=%r is not an open descriptor: this worker will not follow its server", LIFELINE_ENV, raw
        )
        return False
    threading.Thread(target=_wait_for_end, args=(fd,), name="advaudit-lifeline", daemon=True).start()
    return True


def _wait_for_end(fd: int) -> None:
    try:
        while os.read(fd, 1):  # nothing is ever written: any return is the end
            pass
    except OSError:
        pass
    log.warning("the server that started this worker is gone: stopping the worker and its process group")
    os.killpg(os.getpgrp(), signal.SIGKILL)
