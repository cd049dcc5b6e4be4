"""Image sheets of a report (CAM gallery, triptychs) composed with Pillow: pictures and captions, no axes.

Matplotlib lays out every subplot and title twice (once for the tight bounding box); a sheet of 32 small
images took it more than a second. Pasting the pictures and drawing the captions directly takes milliseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from services.report import CamAudit, Triptych

ClassName = Callable[[int], str]
Picture = np.ndarray  # (H, W) or (H, W, 3) floats in [0, 1]

CELL = 112  # pixels per picture side (small inputs are scaled up, nearest neighbour: pixels stay visible)
TRIPTYCH_CELL = 170  # wider: its captions are longer
GAP = 8
WHITE = (255, 255, 255)
INK = (20, 20, 20)


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, which matplotlib ships (Pillow's built-in font has no ε or ∇)."""
    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _tile(picture: Picture, side: int = CELL) -> Image.Image:
    """A float picture as an RGB square of `side` pixels (aspect kept, centred on white)."""
    array = np.clip(picture, 0, 1)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    image = Image.fromarray((array * 255 + 0.5).astype(np.uint8), "RGB")
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    scaled = image.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(scaled, ((side - size[0]) // 2, (side - size[1]) // 2))
    return square


def _fitted(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> str:
    """`text`, shortened with an ellipsis until it fits `width` pixels."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text


def _captioned(picture: Picture, lines: Sequence[str], font_size: int, width: int = CELL) -> Image.Image:
    """A tile with its caption lines above it, in a cell `width` pixels wide."""
    font = _font(font_size)
    line_height = font_size + 3
    caption = line_height * len(lines) + 2
    cell = Image.new("RGB", (width, caption + CELL), WHITE)
    draw = ImageDraw.Draw(cell)
    for row, line in enumerate(lines):
        text = _fitted(draw, line, font, width)
        draw.text(
            ((width - draw.textlength(text, font=font)) / 2, row * line_height), text, fill=INK, font=font
        )
    cell.paste(_tile(picture), ((width - CELL) // 2, caption))
    return cell


def _sheet(cells: Sequence[Image.Image], columns: int, title: str, footer: str = "") -> Image.Image:
    """Cells in a grid under a title line (and above a footer line), on white."""
    width, height = cells[0].size
    rows = (len(cells) + columns - 1) // columns
    font = _font(13)
    head, foot = 24, 22 if footer else 0
    sheet = Image.new(
        "RGB", (GAP + columns * (width + GAP), head + rows * (height + GAP) + GAP + foot), WHITE
    )
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        sheet.paste(cell, (GAP + c * (width + GAP), head + r * (height + GAP)))
    draw = ImageDraw.Draw(sheet)
    draw.text(((sheet.width - draw.textlength(title, font=font)) / 2, 5), title, fill=INK, font=font)
    if footer:
        x = (sheet.width - draw.textlength(footer, font=font)) / 2
        draw.text((x, sheet.height - foot), footer, fill=INK, font=font)
    return sheet


def as_picture(chw: np.ndarray) -> Picture:
    """(C, H, W) in [0, 1] → (H, W) grey for one channel, (H, W, 3) RGB otherwise."""
    if chw.shape[0] == 1:
        return np.asarray(chw[0])
    rgb: Picture = np.clip(np.transpose(chw[:3], (1, 2, 0)), 0, 1)
    return rgb


def cam_gallery(
    cam: CamAudit,
    class_name: ClassName,
    path: Path,
    overlay: Callable[[np.ndarray, np.ndarray], Picture],
    columns: int = 4,
) -> None:
    """Clean and adversarial overlays side by side, per image, with their similarity."""
    cells = []
    for i in range(len(cam.indices)):
        cells.append(
            _captioned(
                overlay(cam.images[i], cam.clean[i]),
                [
                    f"#{cam.indices[i]} label {class_name(int(cam.labels[i]))}",
                    f"clean: {class_name(int(cam.clean_class[i]))} {100 * cam.clean_confidence[i]:.0f}%",
                ],
                11,
            )
        )
        cells.append(
            _captioned(
                overlay(cam.adversarial_images[i], cam.adversarial[i]),
                [
                    f"adv: {class_name(int(cam.adversarial_class[i]))} "
                    f"{100 * cam.adversarial_confidence[i]:.0f}%",
                    f"r={cam.similarity[i]:.2f} IoU={cam.top20_iou[i]:.2f}",
                ],
                11,
            )
        )
    method = {"cam": "CAM", "gradcam": "Grad-CAM"}.get(cam.method, cam.method)
    title = f"{method} on {cam.layer}: clean vs adversarial at ε = {cam.eps:.4f} ({cam.eps * 255:.1f}/255)"
    _sheet(cells, 2 * min(columns, max(1, len(cam.indices))), title).save(path, optimize=False)


def triptych(t: Triptych, class_name: ClassName, path: Path) -> None:
    """clean (class, confidence) + ε·sign(∇) = adversarial (class, confidence)."""
    cells = [
        _captioned(
            as_picture(t.clean),
            [f"clean: {class_name(t.clean_class)}", f"{100 * t.clean_confidence:.1f} % confidence"],
            12,
            TRIPTYCH_CELL,
        ),
        _captioned(
            as_picture(0.5 + 0.5 * t.perturbation),
            ["ε · sign(∇x loss)", f"ε = {t.eps:.4f} ({t.eps * 255:.1f}/255)"],
            12,
            TRIPTYCH_CELL,
        ),
        _captioned(
            as_picture(t.adversarial),
            [
                f"adversarial: {class_name(t.adversarial_class)}",
                f"{100 * t.adversarial_confidence:.1f} % confidence",
            ],
            12,
            TRIPTYCH_CELL,
        ),
    ]
    width, height = cells[0].size
    operator = 26  # room for "+" and "=" between the pictures
    row = Image.new("RGB", (3 * width + 2 * operator, height), WHITE)
    draw, font = ImageDraw.Draw(row), _font(22)
    for i, cell in enumerate(cells):
        row.paste(cell, (i * (width + operator), 0))
    for i, sign in enumerate("+="):
        x = (i + 1) * width + i * operator + (operator - draw.textlength(sign, font=font)) / 2
        draw.text((x, height - CELL / 2 - 14), sign, fill=INK, font=font)
    _sheet([row], 1, f"sample {t.index}, true label {class_name(t.label)}").save(path, optimize=False)
