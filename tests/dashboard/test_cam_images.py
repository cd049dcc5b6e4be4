"""CAM gallery images: a map over its input image when the archive holds the images, else the map alone."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from api.services import cam_images


def _archive(path, with_images: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "clean": rng.random((2, 8, 8), dtype=np.float32),
        "adversarial": rng.random((2, 8, 8), dtype=np.float32),
    }
    if with_images:
        arrays |= {
            "images": np.zeros((2, 1, 8, 8), np.float32),
            "adversarial_images": np.ones((2, 1, 8, 8), np.float32),
        }
    np.savez(path, **arrays)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255


def test_maps_are_drawn_over_their_images_when_stored(tmp_path):
    bare, overlaid = tmp_path / "bare.npz", tmp_path / "overlaid.npz"
    _archive(bare, with_images=False)
    _archive(overlaid, with_images=True)
    assert not cam_images._stores_images(bare) and cam_images._stores_images(overlaid)
    heat = _pixels(cam_images._render(bare, 1, "clean"))
    assert heat.shape == (8, 8, 3)
    on_black = _pixels(cam_images._render(overlaid, 1, "clean"))
    on_white = _pixels(cam_images._render(overlaid, 1, "adversarial"))
    # 45 % heat map over the image: a black image darkens the colours, a white one lightens them.
    assert np.allclose(on_black, 0.45 * heat, atol=2 / 255)
    assert on_white.mean() > _pixels(cam_images._render(bare, 1, "adversarial")).mean()
