"""A bounded local cache of stored objects, by sha256: the files workers (and the API) read when the store is remote.

An entry lives at `root/ab/cdef…`, read-only, named by the sha256 of its content. A fetch downloads into
`root/.incoming/HOST/`, checks the sha256 and only then renames the file into place, so a process killed
mid-download leaves a temporary file and never a wrong entry; the temporaries of processes that are gone are
removed when a cache opens and before each download. While a `path(key)` block runs, the entry holds a shared
flock on `root/.locks/KEY`; eviction takes that lock exclusively without waiting, so it never removes an entry
in use, and it goes least recently used first (an entry's mtime is its last use).

One cache directory belongs to one host: the API and each worker host keep their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from db.storage import CHUNK, check_key
from services.errors import AdvauditError

log = logging.getLogger(__name__)

# An entry handed out this recently is not evicted even when unlocked: a response may still be about to open it.
RECENT_USE_S = 60.0
STALE_TEMPORARY_S = 24 * 3600.0  # temporaries of other hosts' processes (whose liveness cannot be checked)


class CacheTooSmall(AdvauditError):
    """An object larger than the whole cache: it cannot be kept locally."""


class CorruptObject(AdvauditError):
    """An object whose content does not match its sha256 key."""


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class LocalFileCache:
    """Local copies of objects fetched with `fetch(key, destination)`, at most `max_bytes` in all."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        fetch: Callable[[str, Path], None],
        size: Callable[[str], int],
        recent_use_s: float = RECENT_USE_S,
    ) -> None:
        self.root, self.max_bytes, self.recent_use_s = Path(root), max_bytes, recent_use_s
        self._fetch, self._size = fetch, size
        self._locks = self.root / ".locks"
        self._incoming = self.root / ".incoming" / socket.gethostname()
        self._locks.mkdir(parents=True, exist_ok=True)
        self._incoming.mkdir(parents=True, exist_ok=True)
        self.discard_partial()

    def entry(self, key: str) -> Path:
        """Where the copy of `key` lives (whether it is there or not)."""
        check_key(key)
        return self.root / key[:2] / key[2:]

    @contextlib.contextmanager
    def path(self, key: str) -> Iterator[Path]:
        """The local copy of `key`, downloaded first when missing; it is not evicted while the block runs."""
        entry = self.entry(key)
        while True:
            with self._locked(key, fcntl.LOCK_SH):
                if entry.is_file():
                    # Its last use, for the LRU order; explicit, as the file system's clock ticks too coarsely.
                    now = time.time_ns()
                    os.utime(entry, ns=(now, now))
                    yield entry
                    return
            with self._locked(key, fcntl.LOCK_EX):
                if not entry.is_file():  # another process may have fetched it meanwhile
                    self._download(key, entry)
            # Taken again shared: an exclusive lock would keep every other reader out for the whole block.

    def usage(self) -> int:
        """Bytes the entries take now."""
        return sum(size for _, size, _ in self._entries())

    def discard_partial(self) -> int:
        """Remove the temporaries of downloads whose process is gone (killed mid-download); how many."""
        removed = 0
        now = time.time()
        for folder in (self.root / ".incoming").iterdir():
            if not folder.is_dir():
                continue
            own_host = folder == self._incoming
            for temporary in folder.iterdir():
                parts = temporary.name.split(".")
                pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
                try:
                    age = now - temporary.stat().st_mtime
                except FileNotFoundError:
                    continue
                gone = own_host and (pid is None or not _alive(pid))
                if gone or age > STALE_TEMPORARY_S:
                    temporary.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _download(self, key: str, entry: Path) -> None:
        size = self._size(key)  # FileNotFoundError when the store has no such object
        if size > self.max_bytes:
            raise CacheTooSmall(
                f"object {key[:12]}… is {size} bytes, more than the whole local cache may hold "
                f"({self.max_bytes} bytes): raise ADVAUDIT_CACHE_MAX_BYTES"
            )
        self.discard_partial()
        self._make_room(size, keep=key)
        temporary = self._incoming / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        try:
            self._fetch(key, temporary)
            digest = sha256_of(temporary)
            if digest != key:
                raise CorruptObject(
                    f"the store's object {key[:12]}… has the sha256 {digest[:12]}…: it is corrupt, "
                    "so it was not used"
                )
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o444)
            entry.parent.mkdir(exist_ok=True)
            os.replace(temporary, entry)  # same filesystem: readers see no entry or the whole, checked file
        finally:
            temporary.unlink(missing_ok=True)

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for folder in self.root.iterdir():
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):  # evicted by another process meanwhile
                    stat = entry.stat()
                    found.append((stat.st_mtime, stat.st_size, entry))
        return found

    def _make_room(self, incoming: int, *, keep: str) -> None:
        """Evict unused entries, least recently used first, until `incoming` more bytes fit the bound."""
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        now = time.time()
        for used_at, size, entry in sorted(entries, key=lambda item: item[0]):
            if total + incoming <= self.max_bytes:
                return
            key = entry.parent.name + entry.name
            if key == keep or now - used_at < self.recent_use_s:
                continue
            if self._evict(key, entry):
                total -= size
        if total + incoming > self.max_bytes:
            log.warning(
                "the local cache %s holds %d bytes in use; fetching %d more exceeds its bound of %d for now",
                self.root,
                total,
                incoming,
                self.max_bytes,
            )

    def _evict(self, key: str, entry: Path) -> bool:
        try:
            with self._locked(key, fcntl.LOCK_EX | fcntl.LOCK_NB):
                entry.unlink(missing_ok=True)
                (self._locks / key).unlink(missing_ok=True)  # waiters notice the new inode and lock again
                return True
        except BlockingIOError:  # in use
            return False

    @contextlib.contextmanager
    def _locked(self, key: str, mode: int) -> Iterator[None]:
        """flock `mode` on the key's lock file, retried when an eviction replaced the file while we waited."""
        lock_path = self._locks / key
        while True:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, mode)
                held = os.fstat(descriptor)
                try:
                    current = os.stat(lock_path)
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(descriptor)
                raise
            if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                break
            os.close(descriptor)
        try:
            yield
        finally:
            os.close(descriptor)
