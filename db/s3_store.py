"""The artifact store on S3-compatible object storage (AWS S3, MinIO, SeaweedFS …), through boto3.

Object `abcd…` lives at `prefix/ab/cd…` in the bucket. A put hashes a local file first, then uploads it straight
to its content address: S3 makes an object visible only once its PUT, or the CompleteMultipartUpload of a
multipart upload, has succeeded, so readers see no object or the whole one, with no temporary key and no
server-side copy. Streams are spooled to a local temporary file while they are hashed. Objects from
`s3_multipart_threshold_bytes` up go in parts of `s3_multipart_chunk_bytes`, a few at a time, never whole in
memory; downloads are ranged the same way. Readers get local files through a LocalFileCache.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import S3UploadFailedError

from db.file_cache import LocalFileCache, sha256_of
from db.storage import CHUNK, ObjectReference, ReferenceRefused, StoreUnavailable, check_key

if TYPE_CHECKING:
    from contracts.settings import Settings

MISSING = {"404", "NoSuchKey", "NotFound"}
TRANSFER_THREADS = 4  # parts in flight per transfer: memory stays at a few chunks


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix"); ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not an s3://bucket/key URI")
    return parts.netloc, parts.path.strip("/")


class _Body(io.RawIOBase):
    """A GetObject body as a raw stream, whose network errors read as StoreUnavailable."""

    def __init__(self, body: Any, store: S3ArtifactStore) -> None:
        self._body, self._store = body, store

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._store.calls():
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3ArtifactStore:
    """Content-addressed objects in one bucket under one prefix; local copies in a bounded cache."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        cache_dir: Path,
        cache_max_bytes: int,
        transfer: TransferConfig,
        endpoint: str,
    ) -> None:
        self.client, self.bucket, self.prefix, self.transfer = client, bucket, prefix.strip("/"), transfer
        self.where = f"s3://{bucket}/{self.prefix}".rstrip("/") + f" at {endpoint}"
        self.cache = LocalFileCache(Path(cache_dir), cache_max_bytes, fetch=self.fetch_to, size=self.size)
        self._spool = Path(cache_dir) / ".spool"
        self._spool.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ArtifactStore:
        assert settings.store_url and settings.cache_dir is not None
        bucket, prefix = split_s3_url(settings.store_url)
        secret = settings.s3_secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
            config=Config(
                retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
                connect_timeout=settings.s3_timeout_s,
                read_timeout=settings.s3_timeout_s,
                # MinIO, SeaweedFS and most S3-compatible servers address buckets by path, not by host name.
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
                max_pool_connections=2 * TRANSFER_THREADS + 2,
            ),
        )
        transfer = TransferConfig(
            multipart_threshold=settings.s3_multipart_threshold_bytes,
            multipart_chunksize=settings.s3_multipart_chunk_bytes,
            max_concurrency=TRANSFER_THREADS,
            io_chunksize=CHUNK,
        )
        return cls(
            client,
            bucket,
            prefix,
            cache_dir=settings.cache_dir,
            cache_max_bytes=settings.cache_max_bytes,
            transfer=transfer,
            endpoint=settings.s3_endpoint_url or "AWS",
        )

    def object_key(self, key: str) -> str:
        check_key(key)
        name = f"{key[:2]}/{key[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    @contextlib.contextmanager
    def calls(self, missing: str | None = None) -> Iterator[None]:
        """Map boto3's errors: a missing object → FileNotFoundError(missing), anything else → StoreUnavailable."""
        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if missing is not None and code in MISSING:
                raise FileNotFoundError(missing) from None
            self._unavailable(error)
        except (BotoCoreError, S3UploadFailedError) as error:
            self._unavailable(error)

    def _unavailable(self, error: Exception) -> NoReturn:
        raise StoreUnavailable(
            f"the artifact store {self.where} failed: {error} (is it running, and are the bucket and "
            "credentials right?)"
        ) from error

    def put_file(self, path: str | Path) -> tuple[str, str, int]:
        digest, size = sha256_of(Path(path)), Path(path).stat().st_size
        if not self.exists(digest):  # identical content is stored once
            with self.calls():
                self.client.upload_file(str(path), self.bucket, self.object_key(digest), Config=self.transfer)
        return digest, digest, size

    def put_bytes(self, data: bytes) -> tuple[str, str, int]:
        with tempfile.NamedTemporaryFile(dir=self._spool, prefix="put-") as spooled:
            spooled.write(data)
            spooled.flush()
            return self.put_file(spooled.name)

    def put_stream(self, stream: BinaryIO) -> tuple[str, str, int]:
        """Spool `stream` to a local temporary file (the hash must name the object before it goes up)."""
        with tempfile.NamedTemporaryFile(dir=self._spool, prefix="put-") as spooled:
            while chunk := stream.read(CHUNK):
                spooled.write(chunk)
            spooled.flush()
            return self.put_file(spooled.name)

    def open(self, key: str) -> BinaryIO:
        with self.calls(missing=f"artifact {key} is not in {self.where}"):
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        return io.BufferedReader(_Body(response["Body"], self), CHUNK)

    def size(self, key: str) -> int:
        with self.calls(missing=f"artifact {key} is not in {self.where}"):
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def fetch_to(self, key: str, destination: Path) -> None:
        with self.calls(missing=f"artifact {key} is not in {self.where}"), open(destination, "wb") as handle:
            self.client.download_fileobj(self.bucket, self.object_key(key), handle, Config=self.transfer)

    def local_path(self, key: str) -> AbstractContextManager[Path]:
        return self.cache.path(key)

    def local_file(self, key: str) -> Path | None:
        return self.cache.entry(key)

    def delete(self, key: str) -> None:
        with self.calls():
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def discard_partial(self, older_than_s: float = 3600.0) -> int:
        """Abort the multipart uploads under the prefix that writers which died left open; how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        removed = 0
        with self.calls():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        return removed + self.cache.discard_partial()

    def fetch_reference(self, uri: str, destination: Path) -> ObjectReference:
        try:
            bucket, key = split_s3_url(uri)
        except ValueError as error:
            raise ReferenceRefused(
                f"{error}: give the URI of an object, s3://{self.bucket}/path/file"
            ) from None
        if bucket != self.bucket:
            raise ReferenceRefused(
                f"{uri} is in bucket {bucket!r}; this server registers objects of its own bucket "
                f"{self.bucket!r} only (copy it there first)"
            )
        if not key or key.endswith("/"):
            raise ReferenceRefused(f"{uri} names no object: give s3://{self.bucket}/path/file")
        try:
            with self.calls(missing=uri):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            raise ReferenceRefused(f"{uri}: there is no such object in bucket {self.bucket!r}") from None
        reference = ObjectReference(uri=uri, key=key, etag=head["ETag"], size=int(head["ContentLength"]))
        with self.calls(missing=uri), open(destination, "wb") as handle:
            self.client.download_fileobj(self.bucket, key, handle, Config=self.transfer)
        return reference

    def put_reference(self, reference: ObjectReference, sha256: str) -> tuple[str, str, int]:
        """A server-side copy to the content address, only if the object is still the version validated."""
        if self.exists(sha256):
            return sha256, sha256, reference.size
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": reference.key},
                self.bucket,
                self.object_key(sha256),
                ExtraArgs={"CopySourceIfMatch": reference.etag},
                Config=self.transfer,
            )
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412"} | MISSING:
                raise ReferenceRefused(
                    f"{reference.uri} changed or was removed while it was being registered; try again"
                ) from None
            self._unavailable(error)
        except BotoCoreError as error:
            self._unavailable(error)
        return sha256, sha256, reference.size
