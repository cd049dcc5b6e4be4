"""PNG grid of a conv layer's filters: one tile per output channel, RGB for 3-channel inputs, else grayscale."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_TILES = 256  # wider layers show their first 256 filters; more tiles would be too small to read
TILE_PIXELS = 48  # each kernel is upscaled (nearest neighbour) to about this many pixels per side
GAP_PIXELS = 3
BACKGROUND = 0.25  # dark gray gaps stay visible between tiles whose borders are white


def render_filter_grid(weight: torch.Tensor, title: str, path: str | Path) -> None:
    """Write weight (out, in, kh, kw) as a tile grid; each filter is min–max normalised on its own."""
    filters = weight.detach().float().cpu()
    if filters.dim() == 3:  # Conv1d: (out, in, k) becomes a 1×k strip
        filters = filters.unsqueeze(2)
    shown = filters[:MAX_TILES]
    tiles = _normalised_tiles(shown)
    count, kernel_h, kernel_w = tiles.shape[0], tiles.shape[1], tiles.shape[2]
    scale = max(1, TILE_PIXELS // max(kernel_h, kernel_w))
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell_h, cell_w = kernel_h * scale + GAP_PIXELS, kernel_w * scale + GAP_PIXELS
    canvas = np.full(
        (rows * cell_h + GAP_PIXELS, columns * cell_w + GAP_PIXELS, 3), BACKGROUND, dtype=np.float32
    )
    for index in range(count):
        tile = np.kron(
            tiles[index], np.ones((scale, scale, 1), dtype=np.float32)
        )  # nearest-neighbour upscale
        top, left = GAP_PIXELS + (index // columns) * cell_h, GAP_PIXELS + (index % columns) * cell_w
        canvas[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    label = title if count == filters.shape[0] else f"{title} (first {count} of {filters.shape[0]})"
    dpi = 100
    width_in = max(canvas.shape[1], 320) / dpi
    figure = Figure(figsize=(width_in, width_in * canvas.shape[0] / canvas.shape[1] + 0.5), dpi=dpi)
    FigureCanvasAgg(figure)  # a private canvas: no pyplot global state, safe in worker threads
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.5 / figure.get_figheight()))
    axes.imshow(canvas, interpolation="nearest")
    axes.set_axis_off()
    figure.suptitle(label, fontsize=9, y=1.0 - 0.1 / figure.get_figheight(), va="top")
    figure.savefig(path, format="png", dpi=dpi)


def _normalised_tiles(filters: torch.Tensor) -> np.ndarray:
    """(n, kh, kw, 3) in [0, 1]: RGB when the filters see 3 channels, else the mean over inputs in gray."""
    if filters.shape[1] == 3:
        tiles = filters.permute(0, 2, 3, 1)
    else:
        tiles = filters.mean(dim=1, keepdim=True).permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
    low = tiles.amin(dim=(1, 2, 3), keepdim=True)
    high = tiles.amax(dim=(1, 2, 3), keepdim=True)
    span = torch.where(high > low, high - low, torch.ones_like(high))  # a constant filter renders mid-gray
    normalised = torch.where(high > low, (tiles - low) / span, torch.full_like(tiles, 0.5))
    return normalised.numpy().astype(np.float32)
