"""Zip archives opened safely: members validated from the central directory, caps enforced, reads bounded."""

from __future__ import annotations

import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.errors import DatasetError

if TYPE_CHECKING:
    from _typeshed import SupportsRead


@dataclass(frozen=True)
class ZipLimits:
    """Caps on an archive; a member is a suspected bomb when it passes both bomb thresholds."""

    max_bytes: int | None  # total uncompressed size; None when members are streamed, never held whole
    max_members: int
    bomb_ratio: float
    bomb_min_bytes: int  # tiny files may compress very well, so the ratio alone is not enough


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open an archive, turning zipfile's many failures into one DatasetError."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable zip archive ({exc}); re-create the file") from None


def check_zip(zf: zipfile.ZipFile, path: str, limits: ZipLimits) -> None:
    """Refuse unsafe archives from the central directory alone, before reading any member."""
    max_bytes, max_members = limits.max_bytes, limits.max_members
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
        if info.file_size > limits.bomb_min_bytes and ratio > limits.bomb_ratio:
            raise DatasetError(
                f"{path}: member {name!r} inflates {ratio:.0f}:1 to {info.file_size} bytes; "
                "that looks like a zip bomb, so the archive is refused (store genuinely repetitive data uncompressed)"
            )
        total += info.file_size
        if max_bytes is not None and total > max_bytes:
            raise DatasetError(
                f"{path} unpacks to more than {max_bytes} bytes, above the size limit; use a smaller dataset"
            )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, never more than its central-directory size (a lying local header cannot inflate it)."""
    # zipfile stops at the central directory's file_size, which check_zip capped; reading one byte more
    # and comparing catches a member whose data does not match what the directory promised
    try:
        with zf.open(info) as stream:
            data = stream.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DatasetError(f"cannot read {info.filename!r} from the archive ({exc}); it is corrupt") from None
    if len(data) != info.file_size:
        raise DatasetError(f"{info.filename!r} in the archive is not the size its header claims; refusing it")
    return data


def read_exact(stream: SupportsRead[bytes], size: int, what: str) -> bytes:
    """Exactly `size` bytes from a stream, or a DatasetError naming `what` as truncated."""
    data = stream.read(size)
    if len(data) != size:
        raise DatasetError(f"{what} ends early: the file is truncated or corrupt; re-create it")
    return data
