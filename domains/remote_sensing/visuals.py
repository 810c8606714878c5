"""Scene tile grids as protocol visuals: a global view (the thumbnail) + the tiles in raster
order. Every tile carries its :class:`~longllava.traces.ImageTrace`: grid row / column, pixel
window in the full-resolution scene, bounds in the scene CRS and in lon/lat."""

from __future__ import annotations

from longllava.core.protocol import HighResInput
from longllava.domains.remote_sensing.tiling import Tile, TileGrid
from longllava.traces import ImageTrace

LONLAT_DECIMALS = 6  # ~0.1 m on the ground


def tile_trace(tile: Tile) -> ImageTrace:
    """Where a tile lies: its grid cell, pixel window, and bounds (scene CRS, lon/lat)."""
    window = tile.window
    crs = tile.grid.crs
    lonlat = tile.lonlat_bounds
    return ImageTrace(
        row=tile.row, col=tile.col,
        window=(int(window.col_off), int(window.row_off), int(window.width), int(window.height)),
        bounds=tuple(float(v) for v in tile.bounds) if crs is not None else None,
        crs=crs.to_string() if crs is not None else None,
        lonlat_bounds=None if lonlat is None else tuple(round(float(v), LONLAT_DECIMALS) for v in lonlat),
    )


def scene_input(grid: TileGrid, tiles: list | None = None) -> HighResInput:
    """The grid as a high-resolution input (``tiles``: the tile images, if already read)."""
    images = tiles if tiles is not None else [tile.image() for tile in grid.tiles]
    return HighResInput(grid.thumbnail, images, grid.rows, grid.cols, [tile_trace(t) for t in grid.tiles])
