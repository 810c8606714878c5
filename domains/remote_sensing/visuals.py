"""Scene tile grids as protocol visuals: a global view (the thumbnail) + the tiles in raster
order; dated scenes of one area as time stacks. Every tile carries its
:class:`~longllava.traces.ImageTrace`: grid row / column, pixel window in the full-resolution
scene, bounds in the scene CRS and in lon/lat; every dated image its date and file too."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rasterio.windows import Window

from longllava.core.processor import open_image
from longllava.core.protocol import HighResInput, StackInput
from longllava.domains.remote_sensing.tiling import Tile, TileGrid
from longllava.domains.remote_sensing.timeseries import TimeSeries
from longllava.errors import InputError
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


def date_trace(series: TimeSeries, k: int, tile: Tile | None = None) -> ImageTrace:
    """Date ``k`` of the series: its file and date, and where the image lies (a tile: as
    :func:`tile_trace`; the global view: the whole grid)."""
    scene = series.scenes[k]
    if tile is not None:
        return replace(tile_trace(tile), path=str(scene.path), date=series.dates[k])
    lonlat = scene.lonlat_bounds(Window(0, 0, series.width, series.height))
    return ImageTrace(path=str(scene.path), date=series.dates[k], bounds=tuple(float(v) for v in series.bounds),
                      crs=series.crs.to_string(),
                      lonlat_bounds=None if lonlat is None else tuple(round(float(v), LONLAT_DECIMALS) for v in lonlat))


def time_series_visuals(series: TimeSeries, mode: str = "tiles", *, tile: int = 336,
                        max_tiles: int | None = 64) -> list[StackInput]:
    """The dates as time stacks: ``"global"``, one ``<vid>`` stack of the global views in date
    order; ``"tiles"``, that stack followed by one stack of dates per tile position, in raster
    order (every date has the same tile geometry)."""
    if mode not in ("tiles", "global"):
        raise InputError(f"time-series mode must be 'tiles' or 'global', got {mode!r}")
    dates = range(len(series.dates))
    visuals = [StackInput(series.global_views(), [date_trace(series, k) for k in dates])]
    if mode == "global":
        return visuals
    grids = series.grids(tile=tile, max_tiles=max_tiles)
    for position in range(len(grids[0].tiles)):
        cells = [grid.tiles[position] for grid in grids]
        visuals.append(StackInput([cell.image() for cell in cells], [date_trace(series, k, cells[k]) for k in dates]))
    return visuals


def image_pair_stack(before: str | Path, after: str | Path) -> StackInput:
    """A before / after image pair of one area (change detection) as a two-frame stack in time order."""
    paths = [Path(before), Path(after)]
    return StackInput([open_image(path) for path in paths],
                      [ImageTrace(path=str(path), index=k) for k, path in enumerate(paths)])
