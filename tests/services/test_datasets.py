"""Dataset loading: digits, streamed .npz, ImageFolder dirs and zips, and every refusal."""

from __future__ import annotations

import hashlib
import json
import stat
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from services import datasets
from services.datasets import digits_split, load_dataset
from services.errors import DatasetError


def _all(dataset, batch_size=7, limit=None):
    xs, ys = zip(*dataset.batches(batch_size, limit=limit), strict=True)
    return torch.cat(xs), torch.cat(ys)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(source, *words, **kwargs):
    with pytest.raises(DatasetError) as caught:
        load_dataset(source, **kwargs)
    for word in words:
        assert word in str(caught.value), str(caught.value)
    return str(caught.value)


# --------------------------------------------------------------------------- digits


def test_digits_test_split_shapes_range_and_names():
    dataset = load_dataset("digits")
    x, y = _all(dataset, batch_size=100)
    assert len(dataset) == 360 and x.shape == (360, 1, 32, 32) and y.shape == (360,)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.is_contiguous()
    assert x.min() >= 0 and x.max() <= 1
    info = dataset.info
    assert (info.format, info.input_shape, info.num_classes) == ("digits", (1, 32, 32), 10)
    assert info.class_names == tuple("0123456789")
    assert json.loads(json.dumps(info.to_dict()))["input_shape"] == [1, 32, 32]


def test_digits_split_is_fixed_and_deterministic():
    x_train, y_train = digits_split("train")
    x_test, y_test = digits_split("test")
    assert x_train.shape == (1437, 1, 32, 32) and x_test.shape == (360, 1, 32, 32)
    assert x_test.dtype == np.float32 and y_test.dtype == np.int64
    # pinned: the split is part of the demo models' contract and must never move
    assert y_test[:12].tolist() == [7, 9, 4, 7, 0, 2, 6, 1, 3, 1, 3, 7]
    assert np.bincount(y_test).tolist() == [31, 35, 39, 33, 44, 29, 40, 40, 28, 41]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    test_rows = np.random.RandomState(0).permutation(1797)[-360:]
    assert np.array_equal(y_test, bunch.target[test_rows])
    again_x, again_y = digits_split("test")
    assert np.array_equal(again_x, x_test) and np.array_equal(again_y, y_test)
    expected = hashlib.sha256(x_test.tobytes() + y_test.tobytes()).hexdigest()
    assert load_dataset("digits").info.sha256 == load_dataset("digits:test").info.sha256 == expected
    train = load_dataset("digits:train")
    assert len(train) == 1437 and train.info.sha256 != expected
    assert len(load_dataset("digits", split="train")) == 1437
    _refused("digits:valid", "digits:train")


# --------------------------------------------------------------------------- npz


def _unit(n, c=1, h=4, w=5, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_npz_float_streams_back_exactly_with_limit_and_take(tmp_path):
    x, y = _unit(23, c=3), np.arange(23) % 4
    path = tmp_path / "data.npz"
    np.savez_compressed(path, x=x, y=y)
    dataset = load_dataset(path)
    assert dataset.info.to_dict() == {
        "source": str(path),
        "format": "npz",
        "sha256": _sha(path),
        "num_samples": 23,
        "input_shape": [3, 4, 5],
        "num_classes": 4,
        "class_names": None,
    }
    got_x, got_y = _all(dataset, batch_size=5)
    assert torch.equal(got_x, torch.from_numpy(x)) and torch.equal(got_y, torch.from_numpy(y))
    limited_x, _ = _all(dataset, batch_size=5, limit=7)
    assert torch.equal(limited_x, torch.from_numpy(x[:7]))
    assert dataset.labels(limit=7).tolist() == y[:7].tolist() and len(dataset.labels()) == 23
    some_x, some_y = dataset.take([20, 3, 20])
    assert torch.equal(some_x, torch.from_numpy(x[[20, 3, 20]])) and some_y.tolist() == [0, 3, 0]


@pytest.mark.parametrize("shape", [(6, 3, 4), (6, 3, 4, 1), (6, 3, 4, 3)])
def test_npz_uint8_is_scaled_and_moved_to_channels_first(tmp_path, shape):
    x = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "u8.npz"
    np.savez(path, x=x, y=np.zeros(6, dtype=np.int32))
    dataset = load_dataset(path)
    expected = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    assert dataset.info.input_shape == expected.shape[1:]
    got, _ = _all(dataset, batch_size=4)
    assert torch.equal(got, torch.from_numpy(expected.astype(np.float32) / np.float32(255)))


def test_npz_batches_never_load_x_whole(tmp_path, monkeypatch):
    x = _unit(6000, h=32, w=32)  # 24.6 MB
    path = tmp_path / "big.npz"
    np.savez(path, x=x, y=np.zeros(6000, dtype=np.int64))

    def forbidden(*args, **kwargs):
        raise AssertionError("the whole array was loaded")

    monkeypatch.setattr(np, "load", forbidden)
    monkeypatch.setattr(np.lib.format, "read_array", forbidden)
    tracemalloc.start()
    try:
        dataset = load_dataset(path)
        total = sum(float(xb.sum()) for xb, _ in dataset.batches(64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == pytest.approx(float(x.sum(dtype=np.float64)), rel=1e-4)
    assert peak < x.nbytes / 8, f"peak {peak} bytes while streaming a {x.nbytes}-byte array"


def _npz(tmp_path, name="bad.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_missing_key_names_the_keys_present(tmp_path):
    _refused(_npz(tmp_path, x=_unit(3), labels=np.zeros(3, int)), "'y'", "'labels'", "np.savez")


def test_npz_refuses_label_problems(tmp_path):
    x = _unit(10)
    _refused(_npz(tmp_path, x=x, y=np.zeros(9, int)), "10 samples", "9 labels")
    _refused(_npz(tmp_path, x=x, y=np.array([0, 1, -1] + [0] * 7)), "y[2]", "negative")
    _refused(_npz(tmp_path, x=x, y=np.full(10, 1.5)), "integer class indices")
    _refused(_npz(tmp_path, x=x, y=np.eye(10, dtype=int)), "argmax")


def test_npz_refuses_out_of_range_and_nan_at_load(tmp_path):
    x = _unit(10)
    x[3, 0, 1, 1] = 2.0
    _refused(_npz(tmp_path, x=x, y=np.zeros(10, int)), "sample 3", "outside [0, 1]", "scale")
    x[3, 0, 1, 1] = np.nan
    _refused(_npz(tmp_path, x=x, y=np.zeros(10, int)), "sample 3", "NaN")


def test_npz_checks_range_while_streaming_past_the_first_chunk(tmp_path):
    x = _unit(400).astype(np.float64)
    x[300, 0, 0, 0] = -0.25
    dataset = load_dataset(_npz(tmp_path, x=x, y=np.zeros(400, int)))  # the load-time check sees 256 rows
    with pytest.raises(DatasetError, match="sample 300"):
        _all(dataset, batch_size=64)


class _Payload:
    """Unpickling this would create a file; the loader must never unpickle."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("key", ["x", "y"])
def test_npz_object_arrays_are_refused_never_unpickled(tmp_path, key):
    marker = tmp_path / "pwned"
    payload = np.array([_Payload(str(marker))] * 2, dtype=object)
    arrays = {"x": _unit(2), "y": np.zeros(2, int), key: payload}
    _refused(_npz(tmp_path, **arrays), "Python objects", "never loaded")
    assert not marker.exists()


def test_npz_refuses_bad_shapes_dtypes_and_layouts(tmp_path):
    y = np.zeros(0, int)
    _refused(_npz(tmp_path, x=np.zeros((0, 1, 4, 4), np.float32), y=y), "empty")
    _refused(_npz(tmp_path, x=np.zeros((3, 4, 4), np.float32), y=np.zeros(3, int)), "(N, C, H, W)")
    _refused(_npz(tmp_path, x=np.zeros((3, 4, 4, 5), np.uint8), y=np.zeros(3, int)), "(N, H, W, C)")
    _refused(_npz(tmp_path, x=np.full((3, 1, 2, 2), "a"), y=np.zeros(3, int)), "not supported")
    _refused(_npz(tmp_path, x=np.zeros((3, 1, 2, 2), np.int64), y=np.zeros(3, int)), "int64")
    fortran = np.asfortranarray(_unit(3, c=2))
    _refused(_npz(tmp_path, x=fortran, y=np.zeros(3, int)), "Fortran", "ascontiguousarray")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    _refused(junk, "not a readable zip")


def test_unknown_extension_and_missing_path_list_the_formats(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("1,2\n")
    _refused(csv, ".csv", "Supported", ".npz", "ImageFolder")
    _refused(tmp_path / "nope.npz", "not found", "Supported")


def test_bad_arguments_are_refused(tmp_path):
    dataset = load_dataset(_npz(tmp_path, x=_unit(3), y=np.zeros(3, int)))
    for call in (lambda: dataset.batches(0), lambda: dataset.labels(limit=0), lambda: dataset.take([3])):
        with pytest.raises(DatasetError):
            call()
    _refused("digits", "image size", image_size=0)
    _refused("digits", "split", split="val")


# --------------------------------------------------------------------------- ImageFolder


def _image(path, size=(6, 5), mode="L", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (size[1], size[0]), "RGB": (size[1], size[0], 3)}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, channels, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return pixels


def _folder(root, mode="L", size=(6, 5)):
    """Two classes, three images; returns the expected (x, y) in loader order."""
    pixels = [
        _image(root / "cat" / "a.png", size, mode, 1),
        _image(root / "cat" / "b.PNG", size, mode, 2),
        _image(root / "dog" / "c.png", size, mode, 3),
    ]
    stacked = np.stack([p[None] if p.ndim == 2 else p.transpose(2, 0, 1) for p in pixels])
    return torch.from_numpy(stacked.astype(np.float32) / np.float32(255)), torch.tensor([0, 0, 1])


def _zip(directory, target, prefix=""):
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            archive.write(path, prefix + path.relative_to(directory).as_posix())
    return target


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_image_folder_directory(tmp_path, mode):
    expected_x, expected_y = _folder(tmp_path / "data", mode)
    (tmp_path / "data" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "data" / "dog" / "._c.png").write_bytes(b"junk")
    dataset = load_dataset(tmp_path / "data")
    info = dataset.info
    assert (info.format, info.num_samples, info.num_classes) == ("imagefolder-dir", 3, 2)
    assert info.class_names == ("cat", "dog") and info.input_shape == (1 if mode == "L" else 3, 5, 6)
    x, y = _all(dataset, batch_size=2)
    assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
    assert torch.equal(dataset.take([2, 0])[0], expected_x[[2, 0]])
    assert load_dataset(tmp_path / "data").info.sha256 == info.sha256


def test_one_color_image_makes_the_folder_rgb(tmp_path):
    _folder(tmp_path / "data", "L")
    _image(tmp_path / "data" / "dog" / "d.png", mode="RGB")
    dataset = load_dataset(tmp_path / "data")
    assert dataset.info.input_shape == (3, 5, 6) and _all(dataset)[0].shape == (4, 3, 5, 6)


@pytest.mark.parametrize("prefix", ["", "wrapped/"])
def test_image_folder_zip_matches_the_directory(tmp_path, prefix):
    expected_x, expected_y = _folder(tmp_path / "data", "RGB")
    archive = _zip(tmp_path / "data", tmp_path / "data.zip", prefix)
    with zipfile.ZipFile(archive, "a") as extra:
        extra.writestr("__MACOSX/cat/._a.png", b"resource fork")
    dataset = load_dataset(archive)
    assert dataset.info.format == "imagefolder-zip" and dataset.info.class_names == ("cat", "dog")
    assert dataset.info.sha256 == _sha(archive)
    x, y = _all(dataset)
    assert torch.equal(x, expected_x) and torch.equal(y, expected_y)


def test_mixed_sizes_need_image_size(tmp_path):
    _image(tmp_path / "d" / "a" / "1.png", size=(8, 8))
    _image(tmp_path / "d" / "b" / "2.png", size=(10, 6), mode="RGB")
    _refused(tmp_path / "d", "differ in size", "--image-size")
    dataset = load_dataset(tmp_path / "d", image_size=12)
    x, _ = _all(dataset)
    assert dataset.info.input_shape == (3, 12, 12) and x.shape == (2, 3, 12, 12)
    assert x.min() >= 0 and x.max() <= 1


def test_image_size_also_resizes_array_datasets():
    dataset = load_dataset("digits", image_size=16)
    assert dataset.info.input_shape == (1, 16, 16)
    assert next(iter(dataset.batches(8)))[0].shape == (8, 1, 16, 16)


def test_image_folder_refusals(tmp_path):
    _folder(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _refused(tmp_path / "corrupt", "bad.png")
    truncated = tmp_path / "truncated"
    _folder(truncated)
    png = (truncated / "cat" / "a.png").read_bytes()
    (truncated / "cat" / "a.png").write_bytes(png[: len(png) // 2])
    _refused(truncated, "a.png")
    _folder(tmp_path / "empty")
    (tmp_path / "empty" / "zebra").mkdir()
    _refused(tmp_path / "empty", "'zebra'", "no images")
    (tmp_path / "none" / "cat").mkdir(parents=True)
    (tmp_path / "none" / "cat" / "notes.txt").write_text("hi")
    _refused(tmp_path / "none", "no images found")
    _image(tmp_path / "loose" / "x.png")
    _refused(tmp_path / "loose", "'x.png'", "class folder")
    _folder(tmp_path / "deep")
    Image.fromarray(np.full((5, 6), 40_000, dtype=np.uint16)).save(tmp_path / "deep" / "dog" / "d.png")
    _refused(tmp_path / "deep", "'dog/d.png'", "16-bit", "8-bit")


# --------------------------------------------------------------------------- zip safety


def _zip_with(tmp_path, members, name="evil.zip"):
    """members: (ZipInfo or name, bytes)."""
    target = tmp_path / name
    png = tmp_path / "ok.png"
    _image(png)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(png, "cat/ok.png")
        for member, data in members:
            archive.writestr(member, data)
    return target


def test_zip_traversal_absolute_backslash_and_symlink_members_are_refused(tmp_path):
    _refused(_zip_with(tmp_path, [("cat/../../evil.png", b"x")]), "outside the archive")
    _refused(_zip_with(tmp_path, [("/etc/evil.png", b"x")]), "absolute")
    _refused(_zip_with(tmp_path, [("cat\\..\\..\\evil.png", b"x")]), "outside the archive")
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    _refused(_zip_with(tmp_path, [(link, b"/etc/passwd")]), "symbolic link")


def test_zip_bomb_and_member_count_are_refused_before_reading(tmp_path, monkeypatch):
    bomb = _zip_with(tmp_path, [("cat/zeros.png", bytes(2 * 1024 * 1024))])
    assert bomb.stat().st_size < 50_000
    _refused(bomb, "size limit", max_zip_bytes=1024 * 1024)
    monkeypatch.setattr(datasets, "ZIP_BOMB_MIN_BYTES", 1024 * 1024)
    _refused(bomb, "zip bomb")
    many = _zip_with(tmp_path, [(f"cat/{k}.txt", b"") for k in range(5)], name="many.zip")
    _refused(many, "6 members", "limit of 3", max_zip_members=3)


def test_zip_member_whose_directory_entry_lies_is_refused_while_reading(tmp_path):
    target = _zip_with(tmp_path, [("dog/zeros.png", bytes(100_000))])
    data = bytearray(target.read_bytes())
    entry = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)  # the second central-directory entry
    data[entry + 24 : entry + 28] = (1000).to_bytes(4, "little")  # claim 1000 bytes; it inflates to 100 000
    target.write_bytes(bytes(data))
    _refused(target, "zeros.png", "corrupt")
