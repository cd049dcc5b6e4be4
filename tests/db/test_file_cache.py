"""The local file cache: bounded, least recently used first, pinned while in use, never a corrupt entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from db.file_cache import CacheTooSmall, CorruptObject, LocalFileCache
from db.storage import LocalArtifactStore


@pytest.fixture
def source(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "remote")


def cache_of(source: LocalArtifactStore, root: Path, max_bytes: int, fetches: list[str] | None = None):
    def fetch(key: str, destination: Path) -> None:
        if fetches is not None:
            fetches.append(key)
        source.fetch_to(key, destination)

    return LocalFileCache(root, max_bytes, fetch=fetch, size=source.size, recent_use_s=0)


def test_a_hit_is_not_fetched_again_and_the_least_recently_used_goes_first(source, tmp_path):
    keys = [source.put_bytes(bytes([n]) * 1000)[0] for n in range(3)]
    fetches: list[str] = []
    cache = cache_of(source, tmp_path / "cache", 2500, fetches)
    for key in keys[:2]:
        with cache.path(key) as path:
            assert path.read_bytes() == source.path(key).read_bytes()
    with cache.path(keys[0]):  # used again: now the most recent
        pass
    assert fetches == keys[:2]
    time.sleep(0.01)
    with cache.path(keys[2]):  # 3000 bytes > 2500: the least recently used (keys[1]) goes
        pass
    assert cache.entry(keys[0]).is_file() and not cache.entry(keys[1]).exists()
    assert cache.usage() == 2000


def test_an_entry_in_use_is_never_evicted(source, tmp_path):
    first, second = (source.put_bytes(bytes([n]) * 1000)[0] for n in range(2))
    cache = cache_of(source, tmp_path / "cache", 1500)
    # Over the bound for a while rather than pull the file from under a reader.
    with cache.path(first) as held, cache.path(second):
        assert held.read_bytes() == b"\x00" * 1000
    assert cache.entry(first).is_file()


def test_an_object_larger_than_the_cache_is_refused_clearly(source, tmp_path):
    key = source.put_bytes(b"x" * 2000)[0]
    with (
        pytest.raises(CacheTooSmall, match="ADVAUDIT_CACHE_MAX_BYTES"),
        cache_of(source, tmp_path / "c", 1000).path(key),
    ):
        pass


def test_a_download_that_does_not_match_its_sha256_leaves_no_entry(source, tmp_path):
    key = source.put_bytes(b"the real content")[0]

    def tampered(_key: str, destination: Path) -> None:
        destination.write_bytes(b"something else")

    cache = LocalFileCache(tmp_path / "cache", 10_000, fetch=tampered, size=source.size)
    with pytest.raises(CorruptObject, match="corrupt"), cache.path(key):
        pass
    assert not cache.entry(key).exists()
    assert not any((tmp_path / "cache" / ".incoming").rglob("*.part"))


def test_a_process_killed_mid_download_leaves_no_entry_and_the_next_fetch_succeeds(source, tmp_path):
    key = source.put_bytes(os.urandom(1_000_000))[0]
    root = tmp_path / "cache"
    child = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from db.file_cache import LocalFileCache
        from db.storage import LocalArtifactStore

        source = LocalArtifactStore({str(source.root)!r})

        def slow(key, destination):
            with open(source.path(key), "rb") as src, open(destination, "wb") as dst:
                dst.write(src.read(300_000))
                dst.flush()
                print("half", flush=True)
                time.sleep(60)

        with LocalFileCache(Path({str(root)!r}), 10**7, fetch=slow, size=source.size).path({key!r}):
            pass
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert process.stdout.readline().strip() == "half"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    partial = list((root / ".incoming").rglob("*.part"))
    assert len(partial) == 1 and partial[0].stat().st_size == 300_000
    assert not (root / key[:2] / key[2:]).exists()  # no entry, complete or not
    cache = cache_of(
        source, root, 10**7
    )  # a new cache (a worker restarting) removes the dead one's leftovers
    assert not any((root / ".incoming").rglob("*.part"))
    with cache.path(key) as path:
        assert path.read_bytes() == source.path(key).read_bytes()
