"""Put a validated upload into the artifact store and create its row, leaving nothing behind on failure."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from api.errors import ApiError
from contracts.settings import Settings
from db import repositories as repo
from db.storage import ArtifactStore, ObjectReference

RecordT = TypeVar("RecordT")
STALE_UPLOAD_S = 24 * 3600


def upload_dir(settings: Settings) -> Path:
    """Where uploads are streamed before validation (one temporary folder each, always removed)."""
    return settings.data_dir / "uploads"


def discard_stale_uploads(settings: Settings, older_than_s: float = STALE_UPLOAD_S) -> None:
    """Remove temporary upload folders a killed server process left behind."""
    root = upload_dir(settings)
    if not root.is_dir():
        return
    cutoff = time.time() - older_than_s
    for leftover in root.iterdir():
        if leftover.stat().st_mtime < cutoff:
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def local_copy(store: ArtifactStore, key: str, missing: ApiError) -> Iterator[Path]:
    """A local file of object `key` for the block (fetched into the cache for object storage); `missing` if absent.

    A path that outlives the block (a FileResponse) stays valid a while: the cache keeps recent entries.
    """
    with ExitStack() as stack:
        try:
            path = stack.enter_context(store.local_path(key))
        except FileNotFoundError:
            raise missing from None
        yield path


def store_and_create(
    session: Session,
    store: ArtifactStore,
    path: Path,
    sha256: str,
    create: Callable[[str, int], RecordT],
    reference: ObjectReference | None = None,
) -> RecordT:
    """Store `path` (or the object `reference` names, copied in the store), run create(key, size), commit; on
    failure roll back and drop the stored object if we added it."""
    # An object that was there before (another row's, or a concurrent upload's) is never ours to delete.
    existed_before = store.exists(sha256)
    if reference is not None:
        key, _, size = store.put_reference(reference, sha256)
    else:
        key, _, size = store.put_file(path)
    try:
        record = create(key, size)
        session.commit()
        return record
    except BaseException:
        session.rollback()
        if not existed_before and not repo.results.storage_key_in_use(session=session, storage_key=key):
            store.delete(key)
        raise
