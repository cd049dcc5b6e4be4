"""The S3 artifact store against a real S3 server (SeaweedFS): content-addressed, atomic, multipart, by reference."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from botocore.exceptions import ConnectionClosedError

from db.s3_store import S3ArtifactStore
from db.storage import ArtifactStore, ReferenceRefused, StoreUnavailable, open_store
from tests.support.env import free_port
from tests.support.seaweed import store_settings

MIB = 1024 * 1024


@pytest.fixture
def bucket(seaweed) -> str:
    return seaweed.new_bucket()


@pytest.fixture
def store(seaweed, bucket, tmp_path) -> S3ArtifactStore:
    settings = store_settings(
        seaweed,
        bucket,
        tmp_path / "data",
        s3_multipart_threshold_bytes=5 * MIB,
        s3_multipart_chunk_bytes=5 * MIB,
    )
    made = open_store(settings)
    assert isinstance(made, S3ArtifactStore) and isinstance(made, ArtifactStore)
    return made


def test_puts_are_content_addressed_and_deduplicated(store, seaweed, bucket, tmp_path):
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "model.pt"
    source.write_bytes(data)
    assert (
        store.put_file(source)
        == store.put_stream(io.BytesIO(data))
        == store.put_bytes(data)
        == (
            digest,
            digest,
            len(data),
        )
    )
    listed = seaweed.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == [f"artifacts/{digest[:2]}/{digest[2:]}"]
    assert store.exists(digest) and store.size(digest) == len(data)
    with store.open(digest) as handle:
        assert handle.read() == data
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(FileNotFoundError):
        store.open(digest)
    assert not any((tmp_path / "data" / "cache" / ".spool").iterdir())  # spooled streams are removed


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(store, seaweed, bucket, tmp_path):
    data = os.urandom(12 * MIB + 5)  # three parts of 5 MiB at most
    source = tmp_path / "big.npz"
    source.write_bytes(data)
    key, _, size = store.put_file(source)
    head = seaweed.client().head_object(Bucket=bucket, Key=store.object_key(key))
    assert head["ETag"].strip('"').endswith("-3") and size == len(data)  # a multipart upload of 3 parts
    target = tmp_path / "back"
    store.fetch_to(key, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == key
    with store.local_path(key) as cached:  # through the cache: verified, read-only, named by its sha256
        assert cached.read_bytes() == data and cached.stat().st_mode & 0o222 == 0
        assert cached.name == key[2:]


def test_an_upload_that_fails_midway_leaves_no_object_and_no_open_upload(store, seaweed, bucket, tmp_path):
    source = tmp_path / "big.zip"
    source.write_bytes(os.urandom(11 * MIB))
    calls = []

    def fail_second_part(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise ConnectionClosedError(endpoint_url=seaweed.endpoint)  # the network went away

    store.client.meta.events.register("before-call.s3.UploadPart", fail_second_part)
    with pytest.raises(StoreUnavailable, match="artifact store s3://"):
        store.put_file(source)
    key = hashlib.sha256(source.read_bytes()).hexdigest()
    assert not store.exists(key)
    assert seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_discard_partial_aborts_uploads_left_open_by_a_dead_writer(store, seaweed, bucket):
    client = seaweed.client()
    client.create_multipart_upload(Bucket=bucket, Key="artifacts/ab/left-open")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/not-ours")
    assert store.discard_partial(older_than_s=3600) == 0  # young: perhaps still being written
    assert store.discard_partial(older_than_s=0) == 1
    left = [upload["Key"] for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["elsewhere/not-ours"]


def test_an_unreachable_store_says_which_and_why(seaweed, bucket, tmp_path):
    settings = store_settings(seaweed, bucket, tmp_path, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    store = open_store(settings)
    with pytest.raises(StoreUnavailable, match=r"artifact store s3://.* failed: Could not connect"):
        store.put_bytes(b"x")


def test_wrong_credentials_are_a_clear_error(seaweed, bucket, tmp_path):
    store = open_store(store_settings(seaweed, bucket, tmp_path, s3_secret_access_key="wrong"))
    with pytest.raises(StoreUnavailable, match="credentials"):
        store.exists("0" * 64)


def test_register_by_reference_copies_to_the_content_address(store, seaweed, bucket, tmp_path):
    data = os.urandom(7 * MIB)
    seaweed.client().put_object(Bucket=bucket, Key="incoming/set.npz", Body=data)
    reference = store.fetch_reference(f"s3://{bucket}/incoming/set.npz", tmp_path / "set.npz")
    assert (tmp_path / "set.npz").read_bytes() == data and reference.filename == "set.npz"
    digest = hashlib.sha256(data).hexdigest()
    assert store.put_reference(reference, digest) == (digest, digest, len(data))
    with store.open(digest) as handle:
        assert handle.read() == data
    assert seaweed.client().head_object(Bucket=bucket, Key="incoming/set.npz")  # the original stays


def test_references_are_refused_with_reasons(store, seaweed, bucket, tmp_path):
    target = tmp_path / "x.npz"
    for uri, reason in (
        ("s3://another-bucket/x.npz", "its own bucket"),
        (f"s3://{bucket}/missing.npz", "no such object"),
        (f"s3://{bucket}/", "names no object"),
        ("https://example.org/x.npz", "not an s3://bucket/key"),
    ):
        with pytest.raises(ReferenceRefused, match=reason):
            store.fetch_reference(uri, target)


def test_an_object_changed_after_validation_is_not_registered(store, seaweed, bucket, tmp_path):
    client = seaweed.client()
    client.put_object(Bucket=bucket, Key="incoming/model.pt", Body=b"validated")
    reference = store.fetch_reference(f"s3://{bucket}/incoming/model.pt", tmp_path / "model.pt")
    client.put_object(Bucket=bucket, Key="incoming/model.pt", Body=b"swapped afterwards")
    digest = hashlib.sha256(b"validated").hexdigest()
    with pytest.raises(ReferenceRefused, match="changed"):
        store.put_reference(reference, digest)
    assert not store.exists(digest)


def test_the_local_store_refuses_references(tmp_path):
    from contracts.settings import Settings

    store = open_store(Settings(data_dir=tmp_path))
    with pytest.raises(ReferenceRefused, match="local directory"):
        store.fetch_reference("s3://bucket/x.npz", tmp_path / "x")
