"""Artifact store: files addressed by their sha256, written atomically, shared when identical.

Two implementations: LocalArtifactStore (a directory, the embedded default) and db.s3_store.S3ArtifactStore
(S3-compatible object storage, for workers on many hosts); `open_store(settings)` builds the configured one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from services.errors import AdvauditError

if TYPE_CHECKING:
    from contracts.settings import Settings

CHUNK = 1024 * 1024
_KEY = re.compile(r"[0-9a-f]{64}")


class InvalidKey(ValueError):
    """A storage key that is not a lowercase sha256 hex digest (keys never carry user-supplied paths)."""


class StoreUnavailable(AdvauditError):
    """The artifact store could not be reached or refused the request (the message says which store and why)."""


class ReferenceRefused(AdvauditError):
    """An `s3://bucket/key` reference this store cannot register (wrong bucket, no such object, no S3 store)."""


@dataclass(frozen=True)
class ObjectReference:
    """An object already in the store's bucket, as fetched for validation (its ETag pins that version)."""

    uri: str
    key: str
    etag: str
    size: int

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidKey(f"invalid storage key {key!r}: expected 64 lowercase hex characters (a sha256)")
    return key


@runtime_checkable
class ArtifactStore(Protocol):
    """Where uploaded files and job artifacts live: a local directory or S3-compatible object storage.

    Every put returns (key, sha256, size in bytes). Readers that need a file use `local_path`, never a
    path of the store's own: object storage has none, and its local copies live in a bounded cache.
    """

    def put_file(self, path: str | Path) -> tuple[str, str, int]: ...

    def put_bytes(self, data: bytes) -> tuple[str, str, int]: ...

    def put_stream(self, stream: BinaryIO) -> tuple[str, str, int]: ...

    def open(self, key: str) -> BinaryIO:
        """The stored object for reading (FileNotFoundError if absent)."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes (FileNotFoundError if absent)."""
        ...

    def fetch_to(self, key: str, destination: Path) -> None:
        """Write the object to the file `destination` (created or truncated; FileNotFoundError if absent)."""
        ...

    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding the object, kept in place while the block runs (FileNotFoundError if absent)."""
        ...

    def local_file(self, key: str) -> Path | None:
        """Where `local_path(key)` keeps the object's file, whether it is there yet or not."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object if present. Identical content shares one key: check it is unreferenced first."""
        ...

    def exists(self, key: str) -> bool: ...

    def discard_partial(self, older_than_s: float = 3600.0) -> int:
        """Remove what writers that died mid-write left behind (temporary files, open uploads); how many."""
        ...

    def fetch_reference(self, uri: str, destination: Path) -> ObjectReference:
        """Download the object `uri` names (`s3://bucket/key` in this store's bucket) to `destination`.

        ReferenceRefused when the store cannot take references, the bucket is not its own or the object
        does not exist.
        """
        ...

    def put_reference(self, reference: ObjectReference, sha256: str) -> tuple[str, str, int]:
        """Store the fetched object under its content address `sha256`, if it is still that version."""
        ...


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
        """The object's file in the store's directory, or None when it is absent."""
        location = self._location(key)
        return location if location.is_file() else None

    def size(self, key: str) -> int:
        return self._location(key).stat().st_size

    def fetch_to(self, key: str, destination: Path) -> None:
        shutil.copyfile(self._location(key), destination)

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """The object's own file: it is never rewritten nor evicted, so there is nothing to copy or pin."""
        location = self._location(key)
        if not location.is_file():
            raise FileNotFoundError(f"artifact {key} is not in the store at {self.root}")
        yield location

    def local_file(self, key: str) -> Path | None:
        return self._location(key)

    def fetch_reference(self, uri: str, destination: Path) -> ObjectReference:
        raise _no_references(uri)

    def put_reference(self, reference: ObjectReference, sha256: str) -> tuple[str, str, int]:
        raise _no_references(reference.uri)

    def delete(self, key: str) -> None:
        self._location(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._location(key).is_file()


def _no_references(uri: str) -> ReferenceRefused:
    return ReferenceRefused(
        f"cannot register {uri!r} by reference: this server keeps its artifacts in a local directory; "
        "registering an s3:// object needs object storage (ADVAUDIT_STORE_URL=s3://bucket/prefix), "
        "so upload the file instead"
    )


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings describe: S3 when `store_url` is set, else the `artifact_root` folder."""
    if settings.store_url:
        from db.s3_store import S3ArtifactStore  # boto3 is imported only where object storage is used

        return S3ArtifactStore.from_settings(settings)
    assert settings.artifact_root is not None  # filled in from data_dir
    return LocalArtifactStore(settings.artifact_root)
