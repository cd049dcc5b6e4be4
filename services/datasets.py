"""Datasets: bundled digits, streamed .npz arrays and ImageFolder directories or zips, all validated on load."""

from __future__ import annotations

import hashlib
import io
import operator
import os
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from services.errors import DatasetError

MAX_ZIP_UNCOMPRESSED_BYTES = 2 * 1024**3
MAX_ZIP_MEMBERS = 200_000
ZIP_BOMB_RATIO = 200  # a member is suspicious when it inflates more than this …
ZIP_BOMB_MIN_BYTES = 10 * 1024**2  # … and is also bigger than this (tiny files may compress very well)
MAX_LABEL_BYTES = 512 * 1024**2
MAX_SAMPLE_BYTES = 256 * 1024**2
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
GRAYSCALE_MODES = frozenset({"1", "L", "LA"})
DIGITS_TEST_SIZE = 360
SUPPORTED_FORMATS = (
    "'digits' (or 'digits:train' / 'digits:test'), a .npz file holding arrays x and y, "
    "an ImageFolder directory (one sub-folder of images per class) or the same packed as a .zip"
)
_CHUNK = 1024 * 1024
_FIRST_CHECK_ROWS = 256


@dataclass(frozen=True)
class DatasetInfo:
    """What was loaded and how to recognise it again."""

    source: str
    format: str  # "digits" | "npz" | "imagefolder-dir" | "imagefolder-zip"
    sha256: str
    num_samples: int
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "num_samples": self.num_samples,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }


class _Reader:
    """Reads inputs as float32 (B, C, H, W) tensors; subclasses stream them from memory, an .npz or images."""

    def iter_batches(self, count: int, batch_size: int) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def read(self, indices: list[int]) -> torch.Tensor:
        """Rows at sorted, unique indices, in that order."""
        raise NotImplementedError


class Dataset:
    """A validated dataset: labels held in memory, inputs read batch by batch in a fixed order."""

    def __init__(self, info: DatasetInfo, labels: np.ndarray, reader: _Reader, resize_to: int | None) -> None:
        self.info = info
        self._labels = labels
        self._reader = reader
        self._resize_to = resize_to

    def __len__(self) -> int:
        return self.info.num_samples

    def labels(self, limit: int | None = None) -> torch.Tensor:
        """The first `limit` labels (all by default) as int64."""
        return torch.from_numpy(self._labels[: self._count(limit)].copy())

    def batches(
        self, batch_size: int, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches of the first `limit` samples; x is float32 in [0, 1], y int64."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch size must be an integer ≥ 1, got {batch_size!r}")
        count = self._count(limit)
        return self._batches(batch_size, count)

    def _batches(self, batch_size: int, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = 0
        for x in self._reader.iter_batches(count, batch_size):
            stop = start + len(x)
            yield self._finish(x), torch.from_numpy(self._labels[start:stop].copy())
            start = stop

    def take(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A few samples by index (any order, repeats allowed)."""
        try:
            wanted = [operator.index(i) for i in indices]
        except TypeError:
            raise DatasetError(f"sample indices must be integers, got {list(indices)!r}") from None
        bad = [i for i in wanted if not 0 <= i < len(self)]
        if bad:
            raise DatasetError(f"sample index {bad[0]} is out of range: the dataset has {len(self)} samples")
        unique = sorted(set(wanted))
        if not unique:
            c, h, w = self.info.input_shape
            return torch.empty(0, c, h, w), torch.empty(0, dtype=torch.int64)
        rows = self._reader.read(unique)
        position = {index: k for k, index in enumerate(unique)}
        x = rows[[position[i] for i in wanted]]
        return self._finish(x), torch.from_numpy(self._labels[wanted].copy())

    def _count(self, limit: int | None) -> int:
        if limit is None:
            return len(self)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise DatasetError(f"limit must be an integer ≥ 1, got {limit!r}")
        return min(limit, len(self))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self._resize_to is not None and tuple(x.shape[-2:]) != (self._resize_to, self._resize_to):
            size = (self._resize_to, self._resize_to)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return x.contiguous()


class _ArrayReader(_Reader):
    def __init__(self, x: np.ndarray) -> None:
        self._x = x

    def iter_batches(self, count: int, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, count, batch_size):
            yield torch.from_numpy(self._x[start : min(start + batch_size, count)].copy())

    def read(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(self._x[indices].copy())


# --------------------------------------------------------------------------- digits


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 1797 8×8 digits as (x float32 (N, 1, 32, 32) in [0, 1], y int64 (N,)).

    Pixels 0..16 are divided by 16 and bilinearly upsampled to 32×32. The split is fixed forever:
    `numpy.random.RandomState(0).permutation(1797)`; its last 360 indices (in permutation order) are
    "test", the first 1437 are "train".
    """
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import and rarely needed

    if split not in ("train", "test"):
        raise DatasetError(f"unknown digits split {split!r}; choose 'train' or 'test'")
    bunch = load_digits()
    order = np.random.RandomState(0).permutation(len(bunch.target))
    chosen = order[-DIGITS_TEST_SIZE:] if split == "test" else order[:-DIGITS_TEST_SIZE]
    small = torch.from_numpy(bunch.images[chosen].astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32), bunch.target[chosen].astype(np.int64)


def _load_digits(source: str, split: str) -> tuple[DatasetInfo, np.ndarray, _Reader]:
    _, _, suffix = source.strip().lower().partition(":")
    split = suffix or split
    if split not in ("train", "test"):
        raise DatasetError(f"unknown digits split {split!r} in {source!r}; use digits:train or digits:test")
    x, y = digits_split(split)
    digest = hashlib.sha256(x.tobytes())
    digest.update(y.tobytes())
    names = tuple(str(k) for k in range(10))
    info = DatasetInfo(source, "digits", digest.hexdigest(), len(y), (1, 32, 32), 10, names)
    return info, y, _ArrayReader(x)


# --------------------------------------------------------------------------- zip safety


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable zip archive ({exc}); re-create the file") from None


def _check_zip(zf: zipfile.ZipFile, path: str, max_bytes: int | None, max_members: int) -> None:
    """Refuse unsafe archives from the central directory alone, before reading any member."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise DatasetError(f"{path} has {len(infos)} members, more than the limit of {max_members}")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path} lists the same member name twice; re-create the archive")
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise DatasetError(
                f"{path}: member {name!r} has an absolute path; only relative paths are allowed"
            )
        if ".." in parts:
            raise DatasetError(f"{path}: member {name!r} points outside the archive ('..'); refusing it")
        if "\\" in name:
            raise DatasetError(f"{path}: member {name!r} uses backslashes; zip paths must use '/'")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"{path}: member {name!r} is a symbolic link; store real files instead")
        if info.flag_bits & 0x1:
            raise DatasetError(f"{path}: member {name!r} is encrypted; use an unencrypted archive")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > ZIP_BOMB_MIN_BYTES and ratio > ZIP_BOMB_RATIO:
            raise DatasetError(
                f"{path}: member {name!r} inflates {ratio:.0f}:1 to {info.file_size} bytes; "
                "that looks like a zip bomb, so the archive is refused (store genuinely repetitive data uncompressed)"
            )
        total += info.file_size
        if max_bytes is not None and total > max_bytes:
            raise DatasetError(
                f"{path} unpacks to more than {max_bytes} bytes, above the size limit; use a smaller dataset"
            )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, never more than its central-directory size (a lying local header cannot inflate it)."""
    # zipfile stops at the central directory's file_size, which _check_zip capped; reading one byte more
    # and comparing catches a member whose data does not match what the directory promised
    try:
        with zf.open(info) as stream:
            data = stream.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DatasetError(f"cannot read {info.filename!r} from the archive ({exc}); it is corrupt") from None
    if len(data) != info.file_size:
        raise DatasetError(f"{info.filename!r} in the archive is not the size its header claims; refusing it")
    return data


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- .npz


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


def _read_exact(stream, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise DatasetError(f"{what} ends early: the file is truncated or corrupt; re-create it")
    return data


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
    shape, hint = (
        x.shape,
        "float32 in [0, 1] shaped (N, C, H, W), or uint8 0..255 shaped (N, H, W) or (N, H, W, C)",
    )
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
            data = _read_exact(stream, y.offset + count * y.dtype.itemsize, f"{source}: y")
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


class _NpzReader(_Reader):
    """Streams x rows straight out of the (possibly compressed) zip member; never loads the whole array."""

    def __init__(self, path: Path, layout: _NpyLayout, source: str) -> None:
        self._path, self._layout, self._source = path, layout, source

    @contextmanager
    def _stream(self) -> Iterator:
        try:
            with zipfile.ZipFile(self._path) as zf, zf.open(self._layout.member) as stream:
                yield stream
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DatasetError(
                f"{self._source}: cannot read x ({exc}); the file changed or is corrupt"
            ) from None

    def iter_batches(self, count: int, batch_size: int) -> Iterator[torch.Tensor]:
        row_bytes = self._layout.row_bytes
        with self._stream() as stream:
            stream.seek(self._layout.offset)
            for start in range(0, count, batch_size):
                rows = min(batch_size, count - start)
                yield self._decode(_read_exact(stream, rows * row_bytes, f"{self._source}: x"), start)

    def read(self, indices: list[int]) -> torch.Tensor:
        row_bytes, rows = self._layout.row_bytes, []
        with self._stream() as stream:
            for index in indices:  # sorted, so a compressed member is inflated once, front to back
                stream.seek(self._layout.offset + index * row_bytes)
                rows.append(self._decode(_read_exact(stream, row_bytes, f"{self._source}: x"), index))
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


def _load_npz(text: str, path: Path, limits: tuple[int, int]) -> tuple[DatasetInfo, np.ndarray, _Reader]:
    with _open_zip(path) as zf:
        _check_zip(zf, text, None, limits[1])  # no total cap: x is streamed, so size costs no memory
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
    info = DatasetInfo(text, "npz", _sha256_file(path), len(labels), chw, int(labels.max()) + 1, None)
    return info, labels, reader


# --------------------------------------------------------------------------- ImageFolder


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """Relative posix paths of the files and folders under root, hidden ones skipped."""
    files, folders = [], []
    for current, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not _hidden(d)]
        relative = Path(current).relative_to(root)
        folders += [(relative / d).as_posix() for d in subdirs]
        files += [(relative / n).as_posix() for n in names]
    return files, folders


def _image_layout(
    files: list[str], folders: list[str], source: str, unwrap: bool
) -> tuple[tuple[str, ...], list[str], list[int]]:
    """Class names (sorted folder names), image paths and their labels, ordered by class then path."""
    files = [f for f in files if not _hidden(f)]
    folders = [d for d in folders if d and not _hidden(d)]
    prefix = ""
    tops = {name.split("/")[0] for name in files + folders}
    # zipping a folder wraps everything in it: look through a single top folder holding class folders
    wrapped_images = [f.count("/") >= 2 for f in files if _is_image(f)]
    if unwrap and len(tops) == 1 and wrapped_images and all(wrapped_images):
        prefix = tops.pop() + "/"
    inside = [f.removeprefix(prefix) for f in files if f.startswith(prefix)]
    images = sorted(f for f in inside if _is_image(f))
    loose = [f for f in images if "/" not in f]
    if loose:
        raise DatasetError(
            f"{source}: image {loose[0]!r} is not inside a class folder; put each image in a sub-folder "
            "named after its class"
        )
    inner_folders = [d.removeprefix(prefix) for d in folders if d.startswith(prefix)]
    classes = sorted({f.split("/")[0] for f in inside if "/" in f} | {d.split("/")[0] for d in inner_folders})
    if not images:
        raise DatasetError(
            f"{source}: no images found ({', '.join(sorted(IMAGE_EXTENSIONS))}); expected one sub-folder "
            "of images per class"
        )
    per_class: dict[str, list[str]] = {name: [] for name in classes}
    for image in images:
        per_class[image.split("/")[0]].append(image)
    empty = [name for name, members in per_class.items() if not members]
    if empty:
        raise DatasetError(
            f"{source}: class folder {empty[0]!r} has no images; add images or remove the folder"
        )
    names = [prefix + f for c in classes for f in per_class[c]]
    labels = [k for k, c in enumerate(classes) for _ in per_class[c]]
    return tuple(classes), names, labels


class _DirFiles:
    def __init__(self, root: Path) -> None:
        self._root = root

    @contextmanager
    def opened(self) -> Iterator[Callable[[str], bytes]]:
        def read(name: str) -> bytes:
            try:
                return (self._root / name).read_bytes()
            except OSError as exc:
                raise DatasetError(f"cannot read image {name!r}: {exc.strerror or exc}") from None

        yield read


class _ZipFiles:
    def __init__(self, path: Path, infos: dict[str, zipfile.ZipInfo]) -> None:
        self._path, self._infos = path, infos

    @contextmanager
    def opened(self) -> Iterator[Callable[[str], bytes]]:
        with _open_zip(self._path) as zf:
            yield lambda name: _read_member(zf, self._infos[name])


def _open_image(data: bytes, name: str, load: bool = False) -> Image.Image:
    """Open (and optionally decode) one image; oversized images count as decompression bombs, not warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if load:
                image.load()
            return image
        except Exception as exc:  # PIL raises many types on hostile input; all mean "not a usable image"
            raise DatasetError(f"cannot decode image {name!r} ({exc}); fix or remove the file") from None


def _decode_image(data: bytes, name: str, mode: str, size: tuple[int, int], resize: bool) -> np.ndarray:
    image = _open_image(data, name)
    try:
        image = image.convert(mode)
        if image.size != size and resize:
            image = image.resize(size, Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # truncated or malformed pixel data only shows up when decoding
        raise DatasetError(f"cannot decode image {name!r} ({exc}); fix or remove the file") from None
    if image.size != size:
        raise DatasetError(f"image {name!r} changed size since the dataset was opened; reload it")
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return np.divide(pixels, np.float32(255), dtype=np.float32)


class _ImageReader(_Reader):
    """Decodes images batch by batch, so memory stays flat however many there are."""

    def __init__(self, files, names: list[str], mode: str, size: tuple[int, int], resize: bool) -> None:
        self._files, self._names, self._mode, self._size, self._resize = files, names, mode, size, resize

    def _stack(self, read: Callable[[str], bytes], names: list[str]) -> torch.Tensor:
        images = [_decode_image(read(n), n, self._mode, self._size, self._resize) for n in names]
        return torch.from_numpy(np.stack(images))

    def iter_batches(self, count: int, batch_size: int) -> Iterator[torch.Tensor]:
        with self._files.opened() as read:
            for start in range(0, count, batch_size):
                yield self._stack(read, self._names[start : min(start + batch_size, count)])

    def read(self, indices: list[int]) -> torch.Tensor:
        with self._files.opened() as read:
            return self._stack(read, [self._names[i] for i in indices])


def _load_image_folder(
    text: str, path: Path, image_size: int | None, limits: tuple[int, int]
) -> tuple[DatasetInfo, np.ndarray, _Reader]:
    if path.is_dir():
        files, folders = _walk(path)
        access, fmt = _DirFiles(path), "imagefolder-dir"
    else:
        with _open_zip(path) as zf:
            _check_zip(zf, text, *limits)
            infos = {info.filename: info for info in zf.infolist() if not info.is_dir()}
            folders = [info.filename.rstrip("/") for info in zf.infolist() if info.is_dir()]
        files, access, fmt = list(infos), _ZipFiles(path, infos), "imagefolder-zip"
    classes, names, labels = _image_layout(files, folders, text, unwrap=fmt == "imagefolder-zip")
    digest, modes, sizes = hashlib.sha256(), set(), {}
    with access.opened() as read:
        # decode every image once now, one at a time, so a bad file fails the load rather than a late batch
        for name in sorted(names):
            data = read(name)
            if fmt == "imagefolder-dir":
                digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
            image = _open_image(data, name, load=True)
            if image.mode.startswith(("I", "F")):  # converting to 8 bits would silently clip, not rescale
                raise DatasetError(
                    f"{text}: image {name!r} has {image.mode} pixels (16-bit or floating point); "
                    "save it as an 8-bit grayscale or RGB image"
                )
            modes.add(image.mode)
            sizes.setdefault(image.size, name)
    if image_size is None and len(sizes) > 1:
        (a, first), (b, second) = list(sizes.items())[:2]
        raise DatasetError(
            f"{text}: images differ in size ({a[0]}×{a[1]} {first!r}, {b[0]}×{b[1]} {second!r}); "
            "pass an image size (--image-size N) to resize them all to N×N"
        )
    size = (image_size, image_size) if image_size is not None else next(iter(sizes))
    mode = "L" if modes <= GRAYSCALE_MODES else "RGB"
    sha = digest.hexdigest() if fmt == "imagefolder-dir" else _sha256_file(path)
    shape = (1 if mode == "L" else 3, size[1], size[0])
    info = DatasetInfo(text, fmt, sha, len(names), shape, len(classes), classes)
    reader = _ImageReader(access, names, mode, size, resize=image_size is not None)
    return info, np.asarray(labels, dtype=np.int64), reader


# --------------------------------------------------------------------------- entry point


def load_dataset(
    source: str | os.PathLike,
    *,
    image_size: int | None = None,
    split: str = "test",
    max_zip_bytes: int | None = None,
    max_zip_members: int | None = None,
) -> Dataset:
    """Open and validate a dataset; `split` only applies to digits, `image_size` resizes to a square."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise DatasetError(f"image size must be a whole number of pixels, got {image_size!r}")
    if image_size is not None and not 1 <= image_size <= 4096:
        raise DatasetError(f"image size {image_size} is outside 1..4096 pixels")
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; choose 'train' or 'test'")
    text = os.fspath(source)
    if isinstance(source, str) and text.strip().lower().split(":")[0] == "digits":
        info, labels, reader = _load_digits(text, split)
    else:
        path = Path(text).expanduser()
        limits = (
            MAX_ZIP_UNCOMPRESSED_BYTES if max_zip_bytes is None else max_zip_bytes,
            MAX_ZIP_MEMBERS if max_zip_members is None else max_zip_members,
        )
        try:
            info, labels, reader = _load_path(text, path, image_size, limits)
        except OSError as exc:
            raise DatasetError(f"cannot read dataset {text}: {exc.strerror or exc}") from None
    if image_size is not None and info.input_shape[1:] != (image_size, image_size):
        shape = (info.input_shape[0], image_size, image_size)
        info = replace(info, input_shape=shape)
    return Dataset(info, labels, reader, image_size)


def _load_path(
    text: str, path: Path, image_size: int | None, limits: tuple[int, int]
) -> tuple[DatasetInfo, np.ndarray, _Reader]:
    if not path.exists():
        raise DatasetError(f"dataset {text!r} not found. Supported: {SUPPORTED_FORMATS}")
    if path.is_dir():
        return _load_image_folder(text, path, image_size, limits)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(text, path, limits)
    if suffix == ".zip":
        return _load_image_folder(text, path, image_size, limits)
    raise DatasetError(
        f"unsupported dataset file {text!r} ({suffix or 'no extension'}). Supported: {SUPPORTED_FORMATS}"
    )
