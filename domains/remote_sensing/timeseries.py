"""Multi-date scenes: several rasters of one area on one grid, as time stacks.

The rasters are put on one grid: the CRS, pixel size and bounds of the first raster given (or
``bounds``, in that CRS or in ``bounds_crs``). Each raster is seen through a GDAL warped VRT onto
that grid (:class:`rasterio.vrt.WarpedVRT`), so every read is a windowed read reprojected on the
fly: a tile reads only the source blocks under it, and a global view is one decimated read (from
overviews when present); no full raster is ever loaded. Each grid is then an ordinary
:class:`~longllava.domains.remote_sensing.scene.Scene`, tiled by
:func:`~longllava.domains.remote_sensing.tiling.tile_scene`, so every date has the same tile
geometry. Non-uint8 data is stretched with one stretch for all dates (percentiles of the valid
pixels of every date's decimated read), so a change of brightness between dates stays visible.

Dates, in this order of precedence: given; from the raster's tags (``ACQUISITIONDATETIME``,
``DATE_ACQUIRED``, ``TIFFTAG_DATETIME``, ...); from the file name (``2021-06-30``, ``20210630``,
``2021_06_30``). The scenes are sorted by date.

The prompt forms are built by :func:`~longllava.domains.remote_sensing.visuals.time_series_visuals`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.errors import NotGeoreferencedWarning as RasterioNotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from longllava.core.files import files_in
from longllava.domains.remote_sensing.scene import DEFAULT_PERCENTILES, Scene, Stretch, _choose_bands
from longllava.domains.remote_sensing.tiling import TileGrid, tile_scene
from longllava.errors import InputError

DATE_TAGS = ("ACQUISITIONDATETIME", "ACQUISITION_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED",
             "SENSING_TIME", "DATETIME", "TIFFTAG_DATETIME", "DATE")
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc"}
_DATE_IN_TEXT = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_:]?(0[1-9]|1[0-2])[-_:]?(0[1-9]|[12]\d|3[01])(?!\d)")


def _parse_date(text: str) -> str | None:
    """The first plausible calendar date in ``text`` as ISO 8601 (YYYY-MM-DD), else None."""
    for match in _DATE_IN_TEXT.finditer(text):
        try:
            return dt.date(int(match[1]), int(match[2]), int(match[3])).isoformat()
        except ValueError:
            continue
    return None


def raster_date(path: Path, tags: dict[str, str]) -> str | None:
    """The acquisition date of a raster from its tags, else from its file name; None if neither says."""
    upper = {key.upper(): value for key, value in tags.items()}
    for key in DATE_TAGS:
        if key in upper and (date := _parse_date(str(upper[key]))):
            return date
    return _parse_date(path.stem)


def _normalise_date(text: str, where: str) -> str:
    date = _parse_date(text)
    if date is None:
        raise InputError(f"{where}: {text!r} is not a date; give dates as YYYY-MM-DD")
    return date


@dataclass(eq=False)
class TimeSeries:
    """Dated scenes on one grid, in date order; use as a context manager (or :meth:`close`)."""

    scenes: list[Scene]  # each over a warped VRT onto the common grid
    dates: list[str]
    crs: CRS
    bounds: tuple[float, float, float, float]  # the grid's (left, bottom, right, top) in ``crs``
    _datasets: list = field(default_factory=list, repr=False)

    @property
    def paths(self) -> list[Path]:
        return [scene.path for scene in self.scenes]

    @property
    def width(self) -> int:
        return self.scenes[0].width

    @property
    def height(self) -> int:
        return self.scenes[0].height

    def global_views(self) -> list[Image.Image]:
        """Each date's whole grid from one decimated read (<= 1024 px a side)."""
        return [scene.preview()[0].copy() for scene in self.scenes]

    def grids(self, tile: int = 336, max_tiles: int | None = 64) -> list[TileGrid]:
        """One tile grid per date, all of the same geometry."""
        return [tile_scene(scene, tile=tile, max_tiles=max_tiles) for scene in self.scenes]

    def summary(self) -> dict:
        return {"paths": [str(p) for p in self.paths], "dates": list(self.dates), "crs": self.crs.to_string(),
                "bounds": [round(v, 3) for v in self.bounds], "width": self.width, "height": self.height,
                "bands": list(self.scenes[0].bands),
                "stretch": self.scenes[0].stretch.to_dict() if self.scenes[0].stretch else None}

    def close(self) -> None:
        for scene in self.scenes:
            scene.close()
        for dataset in self._datasets:
            dataset.close()

    def __enter__(self) -> TimeSeries:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RasterioNotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as error:
        raise InputError(f"{path}: not a raster GDAL can read ({error}); expected a GeoTIFF / COG") from error
    if dataset.crs is None:
        dataset.close()
        raise InputError(f"{path}: the raster has no CRS, so it cannot be put on a common grid with the other dates; "
                         "georeference it first (gdal_translate -a_srs / -a_ullr)")
    return dataset


def _grid_bounds(reference, bounds, bounds_crs) -> tuple[float, float, float, float]:
    if bounds is None:
        return tuple(reference.bounds)
    left, bottom, right, top = (float(v) for v in bounds)
    if not (left < right and bottom < top):
        raise InputError(f"bounds must be left,bottom,right,top with left < right and bottom < top, got {list(bounds)}")
    if bounds_crs is not None:
        try:
            source_crs = CRS.from_user_input(bounds_crs)
        except CRSError as error:
            raise InputError(f"bounds CRS {bounds_crs!r} is not a CRS ({error}); give e.g. EPSG:4326") from error
        left, bottom, right, top = transform_bounds(source_crs, reference.crs, left, bottom, right, top)
    return left, bottom, right, top


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def open_time_series(paths: Sequence[str | PathLike[str]], *, dates: Sequence[str] | None = None, bands=None,
                     bounds: Sequence[float] | None = None, bounds_crs: str | None = None,
                     resampling: str = "nearest",
                     percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> TimeSeries:
    """Rasters of one area (files or folders) on the first raster's grid, sorted by date.

    ``bounds`` (left, bottom, right, top; in the first raster's CRS, or in ``bounds_crs``) crops or
    extends the grid; the pixel size stays the first raster's. ``bands`` are 1-based band indexes
    shown as R,G,B for every date (all rasters must have the same band count). ``resampling`` is a
    :class:`rasterio.enums.Resampling` name.
    """
    paths = files_in(paths, RASTER_SUFFIXES, "raster")
    if len(paths) < 2:
        raise InputError(f"a time series needs at least two rasters, got {len(paths)}")
    if dates is not None and len(dates) != len(paths):
        raise InputError(f"{len(dates)} dates given for {len(paths)} rasters; give one date per raster")
    try:
        method = Resampling[resampling]
    except KeyError:
        raise InputError(f"unknown resampling {resampling!r}; use one of nearest, bilinear, cubic, average") from None
    datasets = []
    try:
        for path in paths:
            datasets.append(_open(path))
        return _build(paths, datasets, dates, bands, bounds, bounds_crs, method, percentiles)
    except BaseException:
        for dataset in datasets:
            dataset.close()
        raise


def _build(paths, datasets, dates, bands, bounds, bounds_crs, method, percentiles) -> TimeSeries:
    reference = datasets[0]
    counts = {path.name: dataset.count for path, dataset in zip(paths, datasets)}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise InputError(f"the rasters have different band counts ({listed}); a time series needs the same bands "
                         "on every date - select matching bands first (gdal_translate -b)")
    chosen = _choose_bands(paths[0], reference, bands)
    grid_bounds = _grid_bounds(reference, bounds, bounds_crs)
    for path, dataset in zip(paths, datasets):
        footprint = transform_bounds(dataset.crs, reference.crs, *dataset.bounds)
        if not _overlap(footprint, grid_bounds):
            raise InputError(
                f"{path}: the raster does not overlap the common grid (its bounds {[round(v, 2) for v in footprint]} "
                f"vs the grid's {[round(v, 2) for v in grid_bounds]} in {reference.crs.to_string()}); give rasters of "
                "one area, or --bounds inside all of them")
    if dates is not None:
        dated = [_normalise_date(str(date), f"date of {path}") for path, date in zip(paths, dates)]
    else:
        dated = []
        for path, dataset in zip(paths, datasets):
            date = raster_date(path, dataset.tags())
            if date is None:
                raise InputError(f"{path}: no acquisition date in its tags (ACQUISITIONDATETIME, DATE_ACQUIRED, "
                                 "TIFFTAG_DATETIME) nor in its file name (e.g. scene_2021-06-30.tif); give the dates "
                                 "(CLI: --dates 2021-06-30,...)")
            dated.append(date)
    x_res, y_res = reference.res
    left, bottom, right, top = grid_bounds
    width, height = max(1, math.ceil((right - left) / x_res - 1e-9)), max(1, math.ceil((top - bottom) / y_res - 1e-9))
    transform = from_origin(left, top, x_res, y_res)
    scenes = []
    for path, dataset in zip(paths, datasets):
        vrt = WarpedVRT(dataset, crs=reference.crs, transform=transform, width=width, height=height,
                        # without a nodata value, an alpha band marks where the raster does not reach
                        resampling=method, add_alpha=dataset.nodata is None)
        scenes.append(Scene(path=path, dataset=vrt, bands=chosen, percentiles=tuple(percentiles)))
    _common_stretch(scenes)
    order = sorted(range(len(paths)), key=lambda k: (dated[k], k))
    return TimeSeries([scenes[k] for k in order], [dated[k] for k in order], reference.crs,
                      (left, top - height * y_res, left + width * x_res, top), datasets)


def _common_stretch(scenes: list[Scene]) -> None:
    """One 8-bit stretch for every date (none for uint8), from each date's decimated read."""
    samples = []
    for scene in scenes:
        data, valid = scene.read_raw(Window(0, 0, scene.width, scene.height), scene.preview_shape())
        if not valid.any():
            raise InputError(f"{scene.path}: no valid pixel of the raster falls on the common grid (all nodata "
                             "there); check the bounds and the nodata value")
        samples.append(data[:, valid])
    if np.dtype(scenes[0].dtype) == np.uint8:
        return
    values = np.concatenate(samples, axis=1).astype(np.float64)
    lows, highs = [], []
    for plane in values:
        low, high = np.percentile(plane[np.isfinite(plane)], scenes[0].percentiles)
        lows.append(float(low))
        highs.append(float(high) if high > low else float(low) + 1.0)
    stretch = Stretch(tuple(lows), tuple(highs), tuple(scenes[0].percentiles), "decimated reads of all dates")
    for scene in scenes:
        scene.stretch = stretch
