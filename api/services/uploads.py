"""Receive a multipart upload by streaming it to a temporary file: size cap, sha256 and extension on the fly.

FastAPI's UploadFile would spool the whole body to disk before the handler runs, so an oversized or
unwanted upload would already be written; here the body is parsed chunk by chunk as it arrives, the
request is refused the moment it passes the cap or names a wrong extension, and the temporary folder
is always removed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from api.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from api.services import is_decimal
from db.storage import ObjectReference

FILE_FIELD = "file"
FIELD_LIMIT_BYTES = 64 * 1024  # one form field (names, shapes, mean/std lists)
FORM_OVERHEAD_BYTES = 1024 * 1024  # part headers and form fields on top of the file itself
MAX_PARTS = 32
MAX_CHANNELS, MAX_SIDE = 1024, 4096  # input_shape bounds (the dataset loaders resize to at most 4096)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")

FormT = TypeVar("FormT", bound=BaseModel)


@dataclass
class ReceivedUpload:
    """A complete upload: the file on local disk (suffix kept), its digest and size, and the form fields.

    `reference` is set when the file came from an object of the store's bucket instead of the request body.
    """

    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    reference: ObjectReference | None = None


def _human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:g} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than the limit of {max_bytes} bytes ({_human(max_bytes)}); "
        "nothing was stored (the server's limit is ADVAUDIT_MAX_UPLOAD_BYTES)"
    )


def check_suffix(filename: str, suffixes: tuple[str, ...], kind: str) -> str:
    """The file name's extension, lowercased; 415 unless it is one of `suffixes`."""
    suffix = Path(filename).suffix.lower()
    if suffix not in suffixes:
        raise UnsupportedMediaType(
            f"{filename!r} has the extension {suffix or '(none)'}; a {kind} file must end in "
            f"one of {', '.join(suffixes)}; nothing was stored"
        )
    return suffix


class _Receiver:
    """python-multipart callbacks writing the `file` part to disk and keeping the (small) other fields."""

    def __init__(self, workdir: Path, max_bytes: int, suffixes: tuple[str, ...], kind: str) -> None:
        self.workdir, self.max_bytes, self.suffixes, self.kind = workdir, max_bytes, suffixes, kind
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.path: Path | None = None
        self.size, self.parts = 0, 0
        self.hasher = hashlib.sha256()
        self._handle: BinaryIO | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value = b"", b""
        self._name: str | None = None
        self._buffer = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Unprocessable(f"the form has more than {MAX_PARTS} parts")
        self._headers, self._name, self._buffer = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name != FILE_FIELD:
            if name in self.fields:
                raise Unprocessable(f"form field {name!r} is given twice")
            self._name = name
            return
        if self.path is not None:
            raise Unprocessable(f"send exactly one {FILE_FIELD!r} part")
        raw = params.get(b"filename")
        if raw is None:
            raise Unprocessable(f"the {FILE_FIELD!r} field must be a file upload (with a file name)")
        self.filename = _display_name(raw.decode("utf-8", "replace"))
        suffix = check_suffix(self.filename, self.suffixes, self.kind)
        self.path = self.workdir / f"upload{suffix}"  # the loaders read the format from the suffix
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in _part_end or close()
        self._name = FILE_FIELD

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is not None and self._name == FILE_FIELD:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
            self.hasher.update(chunk)
            self._handle.write(chunk)
            return
        self._buffer += chunk
        if len(self._buffer) > FIELD_LIMIT_BYTES:
            raise PayloadTooLarge(f"form field {self._name!r} is longer than {FIELD_LIMIT_BYTES} bytes")

    def _part_end(self) -> None:
        if self._name == FILE_FIELD and self._handle is not None:
            self._handle.close()
            self._handle = None
        elif self._name:
            try:
                self.fields[self._name] = bytes(self._buffer).decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"form field {self._name!r} is not UTF-8 text") from None
        self._name = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _display_name(raw: str) -> str:
    """The client's file name without any directory part or control characters (for messages only)."""
    name = _UNSAFE_NAME.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:200] or "upload"


async def _consume(request: Request, receiver: _Receiver, max_bytes: int, *, require_file: bool) -> None:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType("send the upload as multipart/form-data with the file in the 'file' field")
    limit = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if is_decimal(declared) and int(declared) > limit:
        raise too_large(max_bytes)  # refused before a byte of the body is read
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(max_bytes)
            # Parsing, hashing and writing happen off the event loop: a large upload must not stall it.
            await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise BadRequest(f"the multipart body is malformed ({error})") from None
    if receiver._handle is not None or (require_file and receiver.path is None):
        raise Unprocessable(f"the form has no complete {FILE_FIELD!r} part: attach the file as field 'file'")


@asynccontextmanager
async def receive_form(
    request: Request, *, directory: Path, max_bytes: int, suffixes: tuple[str, ...], kind: str
) -> AsyncIterator[tuple[ReceivedUpload | None, dict[str, str]]]:
    """(the `file` part streamed into a fresh temporary folder under `directory`, or None; the other fields).

    The folder is removed on exit.
    """
    directory.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=directory))
    receiver = _Receiver(workdir, max_bytes, suffixes, kind)
    try:
        await _consume(request, receiver, max_bytes, require_file=False)
        upload = None
        if receiver.path is not None and receiver.filename is not None:
            upload = ReceivedUpload(
                receiver.path, receiver.filename, receiver.hasher.hexdigest(), receiver.size, receiver.fields
            )
        yield upload, receiver.fields
    finally:
        receiver.close()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_form(form: type[FormT], fields: dict[str, str]) -> FormT:
    """The form fields validated by `form` (422 with field locations, as for any request body)."""
    try:
        return form.model_validate({key: value for key, value in fields.items() if value != ""})
    except ValidationError as error:
        errors = error.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**item, "loc": ("body", *item["loc"])} for item in errors]) from None


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """ "0.485,0.456,0.406" → [0.485, 0.456, 0.406] (422 on anything else)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()] or None
    except ValueError:
        raise Unprocessable(
            f"{what} must be comma-separated numbers such as 0.485,0.456,0.406, got {text!r}"
        ) from None


def parse_shape(text: str) -> list[int]:
    """ "3,32,32" → [3, 32, 32] (422 unless three positive integers)."""
    parts = [part.strip() for part in text.split(",")]
    limits = (MAX_CHANNELS, MAX_SIDE, MAX_SIDE)
    within = len(parts) == 3 and all(
        is_decimal(part) and 0 < int(part) <= top for part, top in zip(parts, limits, strict=True)
    )
    if not within:
        raise Unprocessable(
            f"input_shape must be three positive integers C,H,W such as 3,32,32 "
            f"(C ≤ {MAX_CHANNELS}, H and W ≤ {MAX_SIDE}), got {text!r}"
        )
    return [int(part) for part in parts]
