"""Streamed .npz datasets: .npy headers parsed without unpickling, x read row by row from its zip member."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np
import torch

from services.dataset_types import DatasetInfo, Reader
from services.errors import DatasetError
from services.files import sha256_file
from services.safe_zip import ZipLimits, check_zip, open_zip, read_exact

MAX_LABEL_BYTES = 512 * 1024**2
MAX_SAMPLE_BYTES = 256 * 1024**2
_FIRST_CHECK_ROWS = 256


@dataclass(frozen=True)
class _NpyLayout:
    """Where an array's data starts inside its .npy member, and how its rows are encoded."""

    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def _read_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> _NpyLayout:
    """Parse a member's .npy header only; object (pickle) arrays are refused before any data is read."""
    key = info.filename.removesuffix(".npy")
    try:
        with zf.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise DatasetError(
                    f"{source}: array {key!r} uses .npy version {version}; re-save it with np.savez"
                )
            offset = stream.tell()
    except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DatasetError(f"{source}: array {key!r} is not a valid .npy array ({exc}); re-save it") from None
    if dtype.hasobject:
        raise DatasetError(
            f"{source}: array {key!r} holds Python objects (a pickle), which are never loaded for safety; "
            "save it as a plain numeric array (float32 or uint8 images, int64 labels)"
        )
    if fortran_order and len(shape) > 1:
        raise DatasetError(
            f"{source}: array {key!r} is stored in Fortran (column-major) order, which cannot be streamed "
            f"row by row; save np.ascontiguousarray({key}) instead"
        )
    layout = _NpyLayout(info.filename, tuple(shape), dtype, offset)
    if shape and layout.row_bytes > MAX_SAMPLE_BYTES:
        raise DatasetError(f"{source}: one sample of {key!r} is {layout.row_bytes} bytes, above the limit")
    if shape and info.file_size < offset + shape[0] * layout.row_bytes:
        raise DatasetError(f"{source}: array {key!r} is shorter than its header says; the file is truncated")
    return layout


def _check_x_layout(x: _NpyLayout, source: str) -> tuple[int, int, int]:
    """Validate x's dtype and shape; return the (C, H, W) of one sample."""
    shape = x.shape
    hint = "float32 in [0, 1] shaped (N, C, H, W), or uint8 0..255 shaped (N, H, W) or (N, H, W, C)"
    if x.dtype == np.uint8 and len(shape) == 3:
        chw = (1, shape[1], shape[2])
    elif x.dtype == np.uint8 and len(shape) == 4 and shape[3] in (1, 3):
        chw = (shape[3], shape[1], shape[2])
    elif x.dtype.kind == "f" and len(shape) == 4:
        chw = (shape[1], shape[2], shape[3])
    elif x.dtype == np.uint8 or x.dtype.kind == "f":
        raise DatasetError(f"{source}: x has shape {shape} ({x.dtype}); expected {hint}")
    else:
        raise DatasetError(f"{source}: x has dtype {x.dtype}, which is not supported; expected {hint}")
    if shape[0] == 0:
        raise DatasetError(f"{source}: x is empty (0 samples); the dataset needs at least one sample")
    if 0 in chw:
        raise DatasetError(f"{source}: x has shape {shape}, with an empty image dimension; expected {hint}")
    return chw


def _read_labels(zf: zipfile.ZipFile, y: _NpyLayout, count: int, source: str) -> np.ndarray:
    if len(y.shape) != 1:
        one_hot = " (one-hot labels? save y.argmax(1))" if len(y.shape) == 2 else ""
        raise DatasetError(f"{source}: y has shape {y.shape}; it must be 1-D class indices{one_hot}")
    if y.shape[0] != count:
        raise DatasetError(f"{source}: x has {count} samples but y has {y.shape[0]} labels; they must match")
    if y.dtype.kind not in "iu":
        kind = "floats" if y.dtype.kind == "f" else f"{y.dtype}"
        raise DatasetError(
            f"{source}: y holds {kind}; labels must be integer class indices 0..K-1 (save y.astype(np.int64))"
        )
    if count * y.dtype.itemsize > MAX_LABEL_BYTES:
        raise DatasetError(f"{source}: y is larger than {MAX_LABEL_BYTES} bytes; that is too many labels")
    try:
        with zf.open(y.member) as stream:
            data = read_exact(stream, y.offset + count * y.dtype.itemsize, f"{source}: y")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DatasetError(f"{source}: y is corrupt ({exc}); re-create the file") from None
    raw = np.frombuffer(data, dtype=y.dtype, count=count, offset=y.offset)
    if raw.dtype.kind == "u" and raw.size and raw.max() > np.iinfo(np.int64).max:
        raise DatasetError(f"{source}: y holds labels too large to be class indices")
    labels = raw.astype(np.int64)
    if (labels < 0).any():
        index = int(np.argmax(labels < 0))
        raise DatasetError(
            f"{source}: y[{index}] is {labels[index]}; labels must be class indices 0..K-1, never negative"
        )
    return labels


def _check_unit_range(raw: np.ndarray, first_index: int, source: str) -> None:
    """Refuse NaN, infinities and values outside [0, 1] (NaN fails both comparisons, so one test covers all)."""
    inside = ((raw >= 0) & (raw <= 1)).reshape(len(raw), -1).all(axis=1)
    if inside.all():
        return
    row = int(np.argmin(inside))
    values = raw[row]
    index = first_index + row
    if not np.isfinite(values).all():
        raise DatasetError(
            f"{source}: x sample {index} contains NaN or infinite values; every pixel must be in [0, 1]"
        )
    raise DatasetError(
        f"{source}: x sample {index} has values in [{values.min():g}, {values.max():g}], outside [0, 1]; "
        "scale the inputs to [0, 1] (e.g. divide 0..255 pixels by 255) before saving"
    )


class _NpzReader(Reader):
    """Streams x rows straight out of the (possibly compressed) zip member; never loads the whole array."""

    def __init__(self, path: Path, layout: _NpyLayout, source: str) -> None:
        self._path, self._layout, self._source = path, layout, source

    @contextmanager
    def _stream(self) -> Iterator[IO[bytes]]:
        try:
            with zipfile.ZipFile(self._path) as zf, zf.open(self._layout.member) as stream:
                yield stream
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DatasetError(
                f"{self._source}: cannot read x ({exc}); the file changed or is corrupt"
            ) from None

    def iter_batches(
        self, count: int, batch_size: int, start: int = 0
    ) -> Generator[torch.Tensor, None, None]:
        row_bytes = self._layout.row_bytes
        with self._stream() as stream:
            stream.seek(self._layout.offset + start * row_bytes)
            for first in range(start, count, batch_size):
                rows = min(batch_size, count - first)
                yield self._decode(read_exact(stream, rows * row_bytes, f"{self._source}: x"), first)

    def read(self, indices: list[int]) -> torch.Tensor:
        row_bytes, rows = self._layout.row_bytes, []
        with self._stream() as stream:
            for index in indices:  # sorted, so a compressed member is inflated once, front to back
                stream.seek(self._layout.offset + index * row_bytes)
                rows.append(self._decode(read_exact(stream, row_bytes, f"{self._source}: x"), index))
        return torch.cat(rows)

    def _decode(self, data: bytes, first_index: int) -> torch.Tensor:
        raw = np.frombuffer(data, dtype=self._layout.dtype).reshape(-1, *self._layout.shape[1:])
        if raw.dtype == np.uint8:
            x = np.divide(raw, np.float32(255), dtype=np.float32)
            x = x[:, None] if raw.ndim == 3 else x.transpose(0, 3, 1, 2)
        else:
            _check_unit_range(raw, first_index, self._source)
            x = raw.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x))


def load_npz(text: str, path: Path, limits: ZipLimits) -> tuple[DatasetInfo, np.ndarray, Reader]:
    """Validate an .npz holding x and y; labels are read now, x is streamed later."""
    with open_zip(path) as zf:
        # no total cap: x is streamed, so size costs no memory
        check_zip(zf, text, replace(limits, max_bytes=None))
        members = {info.filename: info for info in zf.infolist()}
        for key in ("x", "y"):
            if f"{key}.npy" not in members:
                have = ", ".join(repr(n.removesuffix(".npy")) for n in sorted(members) if n.endswith(".npy"))
                raise DatasetError(
                    f"{text} has no array named {key!r} (it holds {have or 'no arrays'}); "
                    "save it with np.savez(path, x=images, y=labels)"
                )
        x = _read_npy_header(zf, members["x.npy"], text)
        y = _read_npy_header(zf, members["y.npy"], text)
        chw = _check_x_layout(x, text)
        labels = _read_labels(zf, y, x.shape[0], text)
    reader = _NpzReader(path, x, text)
    # fail fast on bad pixels in the first rows; the rest are checked as each batch streams past
    first_rows = reader.iter_batches(min(len(labels), _FIRST_CHECK_ROWS), _FIRST_CHECK_ROWS)
    next(first_rows)
    first_rows.close()
    info = DatasetInfo(text, "npz", sha256_file(path), len(labels), chw, int(labels.max()) + 1, None)
    return info, labels, reader
