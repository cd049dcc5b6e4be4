"""The features-at-depth pictures, composed with Pillow (services.picture_sheets explains why not matplotlib).

`depth_sheet`: one PNG per depth, a row per channel: its top-activating dataset patches (each cropped to the
receptive field and scaled up, nearest neighbour), then the input optimised for the channel. `shift_plot`: a
small line plot of how far each depth moves under attack, with the CAM drift of the last layer beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from services.feature_types import DepthFeatures, Features
from services.picture_sheets import INK, WHITE, _font, as_picture

TILE = 64
GAP = 6
LABEL_WIDTH = 128
MUTED = (110, 110, 110)
FRAME = (200, 200, 200)
CLIPPED = (230, 230, 230)  # where a patch's box was clipped at the image's border
BLUE = (31, 119, 180)
ORANGE = (230, 120, 20)
GREY = (120, 120, 120)


def _tile(chw: np.ndarray, side: int = TILE) -> Image.Image:
    """A (C, h, w) picture scaled up (nearest neighbour, aspect kept) into a framed square of `side` pixels."""
    picture = np.clip(as_picture(chw), 0, 1)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    image = Image.fromarray((picture * 255 + 0.5).astype(np.uint8), "RGB")
    scale = (side - 2) / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    square = Image.new("RGB", (side, side), CLIPPED)
    square.paste(image.resize(size, resample), ((side - size[0]) // 2, (side - size[1]) // 2))
    ImageDraw.Draw(square).rectangle((0, 0, side - 1, side - 1), outline=FRAME)
    return square


def _centred(
    draw: ImageDraw.ImageDraw, x: float, y: float, text: str, size: int, fill: tuple[int, int, int] = INK
) -> None:
    font = _font(size)
    draw.text((x - draw.textlength(text, font=font) / 2, y), text, fill=fill, font=font)


def depth_sheet(depth: DepthFeatures, title_note: str, path: Path) -> None:
    """A row per channel: its top patches (sample index and activation above each), then its act-max image."""
    channels = depth.channels
    patches = max((len(c.patches) for c in channels), default=0)
    caption, row_gap, head = 14, 10, 44
    row_height = caption + TILE + row_gap
    actmax_x = LABEL_WIDTH + patches * (TILE + GAP) + 3 * GAP
    width = actmax_x + TILE + 2 * GAP
    sheet = Image.new("RGB", (width, head + len(channels) * row_height + 4), WHITE)
    draw = ImageDraw.Draw(sheet)
    field = "×".join(map(str, depth.depth.receptive_field))
    c, h, w = depth.output_shape
    title = f"{depth.depth.role}: {depth.depth.layer}  ·  {c}×{h}×{w} map  ·  receptive field {field} px"
    _centred(draw, width / 2, 4, title, 13)
    _centred(draw, width / 2, 23, title_note, 11, MUTED)
    _centred(draw, actmax_x + TILE / 2, head - 4, "act-max", 10, MUTED)
    separator = actmax_x - 1.5 * GAP  # the dataset's patches to its left, the optimised input to its right
    draw.line((separator, head + 4, separator, sheet.height - 6), fill=FRAME, width=1)
    for row, channel in enumerate(channels):
        top = head + row * row_height + 8
        label = _font(12)
        draw.text((GAP, top + caption + 10), f"channel {channel.channel}", fill=INK, font=label)
        draw.text((GAP, top + caption + 28), f"mean {channel.dataset_mean:.3g}", fill=MUTED, font=_font(10))
        for i, (patch, crop) in enumerate(zip(channel.patches, channel.crops, strict=True)):
            x = LABEL_WIDTH + i * (TILE + GAP)
            _centred(draw, x + TILE / 2, top, f"#{patch.sample}  {patch.activation:.3g}", 9, MUTED)
            sheet.paste(_tile(crop), (x, top + caption))
        if channel.actmax_image is not None and channel.actmax_activation is not None:
            ratio = channel.actmax_activation / channel.dataset_mean if channel.dataset_mean > 0 else None
            note = f"{channel.actmax_activation:.3g}" + (f" ({ratio:.1f}× mean)" if ratio else "")
            _centred(draw, actmax_x + TILE / 2, top, note, 9, MUTED)
            sheet.paste(_tile(channel.actmax_image), (actmax_x, top + caption))
    sheet.save(path, optimize=False)


def depth_sheet_names(features: Features) -> list[str]:
    return [f"features_depth_{i}.png" for i in range(len(features.depths))]


def _series(
    draw: ImageDraw.ImageDraw,
    points: Sequence[tuple[float, float | None]],
    colour: tuple[int, int, int],
    marker: str,
) -> None:
    drawn = [(x, y) for x, y in points if y is not None]
    for (x0, y0), (x1, y1) in zip(drawn, drawn[1:], strict=False):
        draw.line((x0, y0, x1, y1), fill=colour, width=2)
    for x, y in drawn:
        box = (x - 4, y - 4, x + 4, y + 4)
        (draw.rectangle if marker == "square" else draw.ellipse)(box, fill=colour)


def shift_plot(features: Features, cam_drift: float | None, path: Path) -> None:
    """Relative L2 change and 1 − channel cosine per depth (lines), the CAM drift beside them (a diamond)."""
    depths = features.depths
    changes = [d.shift.relative_l2_change if d.shift else None for d in depths]
    gaps = [
        1 - d.shift.channel_cosine if d.shift and d.shift.channel_cosine is not None else None for d in depths
    ]
    values = [v for v in (*changes, *gaps, cam_drift) if v is not None]
    top_value = max(1.0, *values) if values else 1.0
    width, height, left, right, top, bottom = 460, 270, 46, 18, 40, 62
    columns = len(depths) + (1 if cam_drift is not None else 0)
    plot = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(plot)
    eps = features.attack_eps or 0.0
    _centred(
        draw,
        width / 2,
        4,
        f"Depth under attack: FGSM ε = {eps * 255:.1f}/255, {features.attack_samples} samples",
        13,
    )
    inner_w, inner_h = width - left - right, height - top - bottom

    def to_y(value: float) -> float:
        return top + inner_h * (1 - value / top_value)

    def to_x(column: int) -> float:
        return left + inner_w * (column + 0.5) / max(columns, 1)

    for tick in np.linspace(0, top_value, 5):
        y = to_y(float(tick))
        draw.line((left, y, width - right, y), fill=(235, 235, 235))
        text = f"{tick:.2g}"
        draw.text((left - 6 - draw.textlength(text, font=_font(10)), y - 6), text, fill=MUTED, font=_font(10))
    draw.line((left, top, left, top + inner_h, width - right, top + inner_h), fill=MUTED)
    for column, depth in enumerate(depths):
        _centred(draw, to_x(column), top + inner_h + 6, depth.depth.role, 11)
        _centred(draw, to_x(column), top + inner_h + 21, depth.depth.layer, 9, MUTED)
    _series(draw, [(to_x(i), to_y(v) if v is not None else None) for i, v in enumerate(changes)], BLUE, "dot")
    _series(
        draw, [(to_x(i), to_y(v) if v is not None else None) for i, v in enumerate(gaps)], ORANGE, "square"
    )
    if cam_drift is not None:
        x, y = to_x(len(depths)), to_y(cam_drift)
        draw.polygon([(x, y - 6), (x + 6, y), (x, y + 6), (x - 6, y)], fill=GREY)
        _centred(draw, x, top + inner_h + 6, "CAM map", 11)
        _centred(draw, x, top + inner_h + 21, "drift", 9, MUTED)
    legend = [(BLUE, "‖a′ − a‖ / ‖a‖"), (ORANGE, "1 − cos(channel means)")]
    if cam_drift is not None:
        legend.append((GREY, "CAM drift"))
    x = left
    for colour, text in legend:
        draw.rectangle((x, height - 16, x + 10, height - 6), fill=colour)
        draw.text((x + 14, height - 19), text, fill=INK, font=_font(11))
        x += 24 + draw.textlength(text, font=_font(11))
    plot.save(path, optimize=False)


def has_shift(features: Features) -> bool:
    return any(depth.shift is not None for depth in features.depths)
