"""ImageFolder datasets (one sub-folder of images per class), from a directory or a zip of one."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from services.dataset_types import DatasetInfo, Reader
from services.errors import DatasetError
from services.files import sha256_file
from services.safe_zip import ZipLimits, check_zip, open_zip, read_member

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
GRAYSCALE_MODES = frozenset({"1", "L", "LA"})


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


class _Files(Protocol):
    """The images of a dataset by name: a directory's files or a zip's members."""

    def opened(self) -> AbstractContextManager[Callable[[str], bytes]]: ...


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
        with open_zip(self._path) as zf:
            yield lambda name: read_member(zf, self._infos[name])


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


class _ImageReader(Reader):
    """Decodes images batch by batch, so memory stays flat however many there are."""

    def __init__(
        self, files: _Files, names: list[str], mode: str, size: tuple[int, int], resize: bool
    ) -> None:
        self._files, self._names, self._mode, self._size, self._resize = files, names, mode, size, resize

    def _stack(self, read: Callable[[str], bytes], names: list[str]) -> torch.Tensor:
        images = [_decode_image(read(n), n, self._mode, self._size, self._resize) for n in names]
        return torch.from_numpy(np.stack(images))

    def iter_batches(self, count: int, batch_size: int, start: int = 0) -> Iterator[torch.Tensor]:
        with self._files.opened() as read:
            for first in range(start, count, batch_size):
                yield self._stack(read, self._names[first : min(first + batch_size, count)])

    def read(self, indices: list[int]) -> torch.Tensor:
        with self._files.opened() as read:
            return self._stack(read, [self._names[i] for i in indices])


def load_image_folder(
    text: str, path: Path, image_size: int | None, limits: ZipLimits
) -> tuple[DatasetInfo, np.ndarray, Reader]:
    """Validate an ImageFolder directory or zip, decoding every image once; batches decode them again."""
    access: _Files
    if path.is_dir():
        files, folders = _walk(path)
        access, fmt = _DirFiles(path), "imagefolder-dir"
    else:
        with open_zip(path) as zf:
            check_zip(zf, text, limits)
            infos = {info.filename: info for info in zf.infolist() if not info.is_dir()}
            folders = [info.filename.rstrip("/") for info in zf.infolist() if info.is_dir()]
        files, access, fmt = list(infos), _ZipFiles(path, infos), "imagefolder-zip"
    classes, names, labels = _image_layout(files, folders, text, unwrap=fmt == "imagefolder-zip")
    digest = hashlib.sha256()
    modes: set[str] = set()
    sizes: dict[tuple[int, int], str] = {}  # first image of each size
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
    sha = digest.hexdigest() if fmt == "imagefolder-dir" else sha256_file(path)
    shape = (1 if mode == "L" else 3, size[1], size[0])
    info = DatasetInfo(text, fmt, sha, len(names), shape, len(classes), classes)
    reader = _ImageReader(access, names, mode, size, resize=image_size is not None)
    return info, np.asarray(labels, dtype=np.int64), reader
