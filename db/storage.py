"""Artifact store: files addressed by their sha256, written atomically, shared when identical."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 1024 * 1024
_KEY = re.compile(r"[0-9a-f]{64}")


class InvalidKey(ValueError):
    """A storage key that is not a lowercase sha256 hex digest (keys never carry user-supplied paths)."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidKey(f"invalid storage key {key!r}: expected 64 lowercase hex characters (a sha256)")
    return key


@runtime_checkable
class ArtifactStore(Protocol):
    """Where uploaded files and job artifacts live; a directory today, object storage later.

    Every put returns (key, sha256, size in bytes).
    """

    def put_file(self, path: str | Path) -> tuple[str, str, int]: ...

    def put_bytes(self, data: bytes) -> tuple[str, str, int]: ...

    def put_stream(self, stream: BinaryIO) -> tuple[str, str, int]: ...

    def open(self, key: str) -> BinaryIO:
        """The stored object for reading (FileNotFoundError if absent)."""
        ...

    def path(self, key: str) -> Path | None:
        """A local filesystem path to the object; None when it is absent or the store keeps no local files."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object if present. Identical content shares one key: check it is unreferenced first."""
        ...

    def exists(self, key: str) -> bool: ...


class LocalArtifactStore:
    """A directory: object `abcd…` lives at `root/ab/cd…`, read-only once written."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._incoming = self.root / ".incoming"
        self._incoming.mkdir(parents=True, exist_ok=True)

    def _location(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:]

    def put_file(self, path: str | Path) -> tuple[str, str, int]:
        with open(path, "rb") as stream:
            return self.put_stream(stream)

    def put_bytes(self, data: bytes) -> tuple[str, str, int]:
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest, digest, len(data)

        def write(handle: BinaryIO) -> tuple[str, int]:
            handle.write(data)
            return digest, len(data)

        return self._store(write)

    def put_stream(self, stream: BinaryIO) -> tuple[str, str, int]:
        """Copy `stream` in one pass, hashing as it goes (the hash names the file once it is complete)."""

        def write(handle: BinaryIO) -> tuple[str, int]:
            hasher, size = hashlib.sha256(), 0
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            return hasher.hexdigest(), size

        return self._store(write)

    def _store(self, write: Callable[[BinaryIO], tuple[str, int]]) -> tuple[str, str, int]:
        # The temporary file sits under the root, on the same filesystem, so os.replace is atomic: readers
        # see either no object or the complete one, never a partial write.
        fd, temp_name = tempfile.mkstemp(dir=self._incoming, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as handle:
                digest, size = write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            target = self._location(digest)
            if target.is_file():  # identical content is already stored
                os.unlink(temp_name)
            else:
                target.parent.mkdir(exist_ok=True)
                os.chmod(temp_name, 0o444)
                os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        return digest, digest, size

    def discard_partial(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary files left by writers that died mid-copy; returns how many."""
        cutoff, removed = time.time() - older_than_s, 0
        for leftover in self._incoming.iterdir():
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def open(self, key: str) -> BinaryIO:
        return open(self._location(key), "rb")

    def path(self, key: str) -> Path | None:
        location = self._location(key)
        return location if location.is_file() else None

    def delete(self, key: str) -> None:
        self._location(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._location(key).is_file()
