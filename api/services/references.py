"""What POST /models and POST /datasets register: a multipart upload, or `uri`, an object already in the store's bucket.

An object registered by reference never passes through the API's memory: it streams from the store into a local
temporary file, is validated there in the sandbox exactly like an upload, and is then copied server-side to its
content address (only if it is still the version that was validated). The upload size cap applies to uploads
only. `uri` comes as a field of a multipart body without a file, of a URL-encoded form, or of a JSON object.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import BaseModel
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from api.errors import BadRequest, PayloadTooLarge, Unprocessable
from api.services.uploads import (
    FIELD_LIMIT_BYTES,
    FILE_FIELD,
    ReceivedUpload,
    check_suffix,
    parse_form,
    receive_form,
)
from db.storage import ArtifactStore
from services.files import sha256_file

URI_FIELD = "uri"
MAX_FIELDS = 32
FormT = TypeVar("FormT", bound=BaseModel)


def _neither(kind: str) -> Unprocessable:
    return Unprocessable(
        f"send the {kind} either as a file upload (multipart field {FILE_FIELD!r}) or as {URI_FIELD}="
        "s3://bucket/key, an object already in the server's bucket"
    )


@asynccontextmanager
async def receive_registration(
    request: Request,
    *,
    store: ArtifactStore,
    directory: Path,
    max_bytes: int,
    suffixes: tuple[str, ...],
    kind: str,
    form: type[FormT],
) -> AsyncIterator[tuple[ReceivedUpload, FormT]]:
    """(the file to register, in a temporary folder under `directory` removed on exit; the fields as `form`).

    A referenced object is fetched only once the fields are valid.
    """
    content_type, _ = parse_options_header(request.headers.get("content-type", ""))
    if content_type in (b"application/json", b"application/x-www-form-urlencoded"):
        fields = await _small_body_fields(request, json_body=content_type == b"application/json")
        uri = fields.pop(URI_FIELD, None)
        parsed = parse_form(form, fields)
        async with _referenced(
            store, uri, fields, directory=directory, suffixes=suffixes, kind=kind
        ) as upload:
            yield upload, parsed
        return
    async with receive_form(
        request, directory=directory, max_bytes=max_bytes, suffixes=suffixes, kind=kind
    ) as (upload, fields):
        uri = fields.get(URI_FIELD, "").strip()
        if upload is not None and uri:
            raise Unprocessable(
                f"send either a file or {URI_FIELD}, not both: the {kind} comes from one place"
            )
        fields.pop(URI_FIELD, None)
        parsed = parse_form(form, fields)
        if upload is not None:
            yield upload, parsed
            return
        async with _referenced(
            store, uri, fields, directory=directory, suffixes=suffixes, kind=kind
        ) as upload:
            yield upload, parsed


async def _small_body_fields(request: Request, *, json_body: bool) -> dict[str, Any]:
    """The fields of a JSON object or URL-encoded form (small: fields and a URI, never a file)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FIELD_LIMIT_BYTES:
            raise PayloadTooLarge(
                f"the body is longer than {FIELD_LIMIT_BYTES} bytes; a file goes as a multipart upload"
            )
    try:
        fields = json.loads(body) if json_body else _form_fields(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"the body is not valid {'JSON' if json_body else 'URL-encoded UTF-8'}") from None
    if not isinstance(fields, dict):
        raise Unprocessable("the JSON body must be an object of the form's fields and uri")
    if FILE_FIELD in fields:
        raise Unprocessable(
            f"this body cannot carry the file: upload it as multipart/form-data, or give {URI_FIELD}"
        )
    return fields


def _form_fields(text: str) -> dict[str, str]:
    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS)
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise Unprocessable(f"form field {name!r} is given twice")
        fields[name] = value
    return fields


@asynccontextmanager
async def _referenced(
    store: ArtifactStore,
    uri: object,
    fields: dict[str, Any],
    *,
    directory: Path,
    suffixes: tuple[str, ...],
    kind: str,
) -> AsyncIterator[ReceivedUpload]:
    if uri is None or (isinstance(uri, str) and not uri.strip()):
        raise _neither(kind)
    if not isinstance(uri, str) or len(uri) > 2048 or "\x00" in uri:
        raise Unprocessable(f"{URI_FIELD} must be an s3://bucket/key URI of at most 2048 characters")
    uri = uri.strip()
    suffix = check_suffix(uri.rsplit("/", 1)[-1], suffixes, kind)
    directory.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="reference-", dir=directory))
    try:
        path = workdir / f"upload{suffix}"  # the loaders read the format from the suffix
        reference = await run_in_threadpool(store.fetch_reference, uri, path)
        digest = await run_in_threadpool(sha256_file, path)
        yield ReceivedUpload(path, reference.filename, digest, reference.size, fields, reference=reference)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
