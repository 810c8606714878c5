"""A grid plan over a large image: rows x cols cells of ``tile`` pixels (with overlap), read at
the smallest integer downsample whose grid fits a cell budget.

The one grid geometry of the project: remote-sensing scene tiling, the STAR question generator and
the pathology sub-image grid all plan with :func:`plan_grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rasterio.windows import Window

from longllava.errors import InputError


@dataclass(frozen=True)
class GridPlan:
    """Geometry of a grid of tiles over an image, independent of pixels."""

    width: int  # full-resolution scene size
    height: int
    tile: int
    overlap: int
    downsample: int  # full-resolution pixels per tile pixel (1 = native resolution)
    rows: int
    cols: int

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def window(self, row: int, col: int) -> Window:
        """The cell's full-resolution pixel window, clipped to the scene (edge cells are smaller)."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise InputError(f"tile (row {row}, col {col}) is outside the {self.rows}x{self.cols} grid")
        step = self.stride * self.downsample
        col_off, row_off = col * step, row * step
        span = self.tile * self.downsample
        return Window(col_off, row_off, min(span, self.width - col_off), min(span, self.height - row_off))

    def content_shape(self, window: Window) -> tuple[int, int]:
        """(h, w) of the window at the grid's level: the unpadded part of the tile image."""
        return (math.ceil(window.height / self.downsample), math.ceil(window.width / self.downsample))

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) whose window holds full-resolution pixel coordinate (x, y); overlap 0 only."""
        if self.overlap:
            raise InputError("a point maps to one cell only without overlap")
        span = self.tile * self.downsample
        col = min(max(int(x // span), 0), self.cols - 1)
        row = min(max(int(y // span), 0), self.rows - 1)
        return row, col


def _cells(length: int, tile: int, stride: int) -> int:
    return 1 + math.ceil(max(0, length - tile) / stride)


def plan_grid(width: int, height: int, *, tile: int = 336, overlap: int = 0, max_tiles: int | None = None) -> GridPlan:
    """Grid shape for a scene; with ``max_tiles`` the smallest integer downsample whose grid fits."""
    if not isinstance(tile, int) or tile < 1:
        raise InputError(f"tile size must be a positive integer number of pixels (e.g. 336), got {tile!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise InputError(f"overlap must be an integer in [0, tile={tile}), got {overlap!r}")
    if max_tiles is not None and max_tiles < 1:
        raise InputError(f"max_tiles must be at least 1, got {max_tiles}")
    stride = tile - overlap

    def shape(downsample: int) -> tuple[int, int]:
        return (_cells(math.ceil(height / downsample), tile, stride),
                _cells(math.ceil(width / downsample), tile, stride))

    # the cell count never grows with the downsample, so bisect for the smallest one that fits
    low, high = 1, max(width, height, 1)
    while max_tiles is not None and low < high:
        middle = (low + high) // 2
        rows, cols = shape(middle)
        if rows * cols <= max_tiles:
            high = middle
        else:
            low = middle + 1
    rows, cols = shape(low)
    return GridPlan(width, height, tile, overlap, low, rows, cols)
