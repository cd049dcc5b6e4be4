"""The local artifact store: content-addressed, atomic, de-duplicating, strict about keys."""

import hashlib
import io
import os

import pytest

from db.storage import ArtifactStore, InvalidKey, LocalArtifactStore


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def test_put_bytes_is_content_addressed(store, tmp_path):
    data = b"hello artifacts"
    key, sha, size = store.put_bytes(data)
    assert key == sha == hashlib.sha256(data).hexdigest() and size == len(data)
    assert store.path(key) == tmp_path / "artifacts" / key[:2] / key[2:]
    assert store.exists(key)
    with store.open(key) as handle:
        assert handle.read() == data
    assert isinstance(store, ArtifactStore)


def test_put_file_and_stream_agree_and_deduplicate(store, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several copy chunks
    source = tmp_path / "model.pt"
    source.write_bytes(data)
    from_file = store.put_file(source)
    from_stream = store.put_stream(io.BytesIO(data))
    from_bytes = store.put_bytes(data)
    assert from_file == from_stream == from_bytes == (hashlib.sha256(data).hexdigest(),) * 2 + (len(data),)
    stored = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert len(stored) == 1 and stored[0].read_bytes() == data


def test_a_failed_write_leaves_nothing(store, tmp_path):
    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"x" * 1000

    with pytest.raises(OSError, match="connection reset"):
        store.put_stream(Broken())
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []


def test_delete_and_missing(store):
    key, _, _ = store.put_bytes(b"gone soon")
    store.delete(key)
    store.delete(key)  # idempotent
    assert not store.exists(key) and store.path(key) is None
    with pytest.raises(FileNotFoundError):
        store.open(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../../etc/passwd",
        "ab/" + "c" * 61,
        "A" * 64,
        "g" * 64,
        "a" * 63,
        "a" * 65,
        "/" + "a" * 63,
        "a" * 63 + "\n",
    ],
)
def test_keys_that_are_not_sha256_hex_are_rejected(store, key):
    for operation in (store.open, store.path, store.delete, store.exists):
        with pytest.raises(InvalidKey, match="64 lowercase hex"):
            operation(key)


def test_discard_partial_removes_stale_temporaries(store, tmp_path):
    leftover = tmp_path / "artifacts" / ".incoming" / "put-dead"
    leftover.write_bytes(b"half")
    os.utime(leftover, (0, 0))
    assert store.discard_partial(older_than_s=60) == 1 and not leftover.exists()
