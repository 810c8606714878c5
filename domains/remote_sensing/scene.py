"""Open a large raster scene for tiling: band choice, 8-bit rendering, nodata and masks, georeferencing.

Pixels are only ever touched through windowed reads (one tile at a time) or one decimated read of at
most ``PREVIEW_MAX_SIDE`` pixels a side (served from overviews when the file has them), so a
30,000 x 30,000 scene never sits in memory. The decimated read gives both the percentile stretch of
non-uint8 data and the global thumbnail.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from pyproj import Geod, Transformer
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning as RasterioNotGeoreferencedWarning
from rasterio.errors import RasterioError
from rasterio.windows import Window

from longllava.errors import InputError

PREVIEW_MAX_SIDE = 1024  # longest side of the decimated read used for the stretch and the thumbnail
DEFAULT_PERCENTILES = (2.0, 98.0)
MAX_AUTO_BANDS = 4  # beyond this (multispectral) "the first three" is rarely RGB: ask for --bands
LONLAT = "EPSG:4326"
_RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


class NotGeoreferencedWarning(UserWarning):
    """The scene has no CRS: tiles carry pixel coordinates only, no map or lon/lat bounds."""


def _read_error(path: Path, error: Exception) -> InputError:
    detail = f"{error}: {error.__cause__}" if error.__cause__ else str(error)
    return InputError(
        f"{path}: the raster cannot be read ({detail}); the file is corrupt or truncated - "
        "re-download or re-export it (gdalinfo -checksum shows the damaged blocks)"
    )


@dataclass(frozen=True)
class Stretch:
    """Linear map of each chosen band from [low, high] to [0, 255] (percentiles of valid pixels)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float]
    source: str  # where the sample came from: "overviews", "decimated read" or "full read"

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(bands, h, w) raw values -> uint8."""
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = np.asarray(self.high, dtype=np.float32)[:, None, None] - low
        scaled = (data.astype(np.float32) - low) * (255.0 / span)
        return np.nan_to_num(np.clip(scaled, 0, 255), nan=0.0).astype(np.uint8)

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "percentiles": list(self.percentiles),
                "source": self.source}


@dataclass(eq=False)
class Scene:
    """An open raster, the bands rendered as RGB, and how raw values map to 8 bits.

    Use as a context manager (or call :meth:`close`). ``bands`` are 1-based band indexes rendered as
    red, green, blue; a single index renders grey. ``stretch`` is None for uint8 data (used as is).
    """

    path: Path
    dataset: rasterio.io.DatasetReader = field(repr=False)
    bands: tuple[int, ...]
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    stretch: Stretch | None = None
    _preview: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    # -- georeferencing -------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.dataset.width

    @property
    def height(self) -> int:
        return self.dataset.height

    @property
    def crs(self):
        return self.dataset.crs

    @property
    def transform(self):
        return self.dataset.transform

    @property
    def nodata(self) -> float | None:
        return self.dataset.nodata

    @property
    def dtype(self) -> str:
        return self.dataset.dtypes[self.bands[0] - 1]

    @property
    def georeferenced(self) -> bool:
        return self.dataset.crs is not None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the scene footprint in the scene CRS (pixels if none)."""
        return footprint_bounds(self.footprint(Window(0, 0, self.width, self.height)))

    @cached_property
    def to_lonlat(self) -> Transformer | None:
        if not self.georeferenced:
            return None
        return Transformer.from_crs(self.crs, LONLAT, always_xy=True)

    def footprint(self, window: Window) -> list[tuple[float, float]]:
        """Closed, counter-clockwise ring of a pixel window's corners in the scene CRS.

        Mapped through the full affine transform, so rotated / sheared scenes get their true
        (non axis-aligned) outline.
        """
        c0, r0 = window.col_off, window.row_off
        c1, r1 = c0 + window.width, r0 + window.height
        ring = [self.transform @ corner for corner in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
        return _closed_ccw(ring)

    def lonlat_footprint(self, window: Window, densify: int = 8) -> list[tuple[float, float]] | None:
        """The window outline in lon/lat, each edge densified (projected edges curve in lon/lat)."""
        if self.to_lonlat is None:
            return None
        ring = self.footprint(window)
        xs, ys = [], []
        for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]):
            for step in range(densify):
                t = step / densify
                xs.append(x0 + (x1 - x0) * t)
                ys.append(y0 + (y1 - y0) * t)
        lons, lats = self.to_lonlat.transform(xs, ys)
        return _closed_ccw(list(zip(map(float, lons), map(float, lats))))

    def lonlat_bounds(self, window: Window) -> tuple[float, float, float, float] | None:
        ring = self.lonlat_footprint(window)
        return None if ring is None else footprint_bounds(ring)

    @cached_property
    def gsd(self) -> float | None:
        """Native ground sampling distance in metres (geodesic, at the scene centre); None without CRS."""
        if self.to_lonlat is None:
            return None
        col, row = self.width / 2, self.height / 2
        points = [self.transform @ (col, row), self.transform @ (col + 1, row), self.transform @ (col, row + 1)]
        lons, lats = self.to_lonlat.transform([p[0] for p in points], [p[1] for p in points])
        geod = Geod(ellps="WGS84")
        _, _, along_x = geod.inv(lons[0], lats[0], lons[1], lats[1])
        _, _, along_y = geod.inv(lons[0], lats[0], lons[2], lats[2])
        return float((along_x + along_y) / 2)

    # -- pixels ---------------------------------------------------------------------------------
    def read_raw(self, window: Window, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Raw values (bands, h, w) of a window resampled to ``out_shape`` (nearest), and the valid mask."""
        try:
            data = self.dataset.read(list(self.bands), window=window, out_shape=(len(self.bands), *out_shape),
                                     resampling=Resampling.nearest)
            return data, self._valid(data, window, out_shape)
        except RasterioError as error:
            raise _read_error(self.path, error) from error

    def read_image(self, window: Window, out_shape: tuple[int, int], pad_to: int | None = None
                   ) -> tuple[Image.Image, np.ndarray]:
        """RGB image of a window resampled to ``out_shape`` (w x h = out_shape[::-1]) and its valid mask.

        Invalid pixels are black; with ``pad_to`` the image is a ``pad_to`` square, black beyond the
        window.
        """
        data, valid = self.read_raw(window, out_shape)
        return self.render(data, valid, pad_to), valid

    def read_valid(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        """Only the valid mask of a window (reads the data when validity comes from nodata values)."""
        if self._mask_flags & {MaskFlags.per_dataset, MaskFlags.alpha}:
            try:
                return self.dataset.read_masks(self.bands[0], window=window, out_shape=out_shape) > 0
            except RasterioError as error:
                raise _read_error(self.path, error) from error
        return self.read_raw(window, out_shape)[1]

    def render(self, data: np.ndarray, valid: np.ndarray, pad_to: int | None = None) -> Image.Image:
        """Raw (bands, h, w) -> RGB image (``pad_to`` square if given), invalid pixels black."""
        pixels = self.stretch.apply(data) if self.stretch is not None else data
        if not self._invalid_already_black:
            pixels = np.where(valid, pixels, np.uint8(0))
        height, width = pixels.shape[1:]
        # Image.merge of per-band planes: several times faster than a (bands, h, w) -> (h, w, 3) copy
        planes = [Image.fromarray(np.ascontiguousarray(plane), mode="L") for plane in pixels]
        image = Image.merge("RGB", planes * 3 if len(planes) == 1 else planes)
        if pad_to is not None and (width, height) != (pad_to, pad_to):
            canvas = Image.new("RGB", (pad_to, pad_to))
            canvas.paste(image, (0, 0))
            image = canvas
        return image

    @cached_property
    def _invalid_already_black(self) -> bool:
        """uint8 shown as is with nodata 0 on every band: invalid pixels are 0 already (skip a pass)."""
        return (self.stretch is None and self._mask_flags <= {MaskFlags.nodata, MaskFlags.all_valid}
                and all(self.dataset.nodatavals[b - 1] in (0, None) for b in self.bands))

    def preview_shape(self) -> tuple[int, int]:
        scale = max(self.width, self.height) / PREVIEW_MAX_SIDE
        if scale <= 1:
            return self.height, self.width
        return max(1, math.ceil(self.height / scale)), max(1, math.ceil(self.width / scale))

    def preview(self) -> tuple[Image.Image, np.ndarray]:
        """(RGB image, valid mask) of the whole scene from one decimated read (overviews when present); cached."""
        if self._preview is None:
            data, valid = self.read_raw(Window(0, 0, self.width, self.height), self.preview_shape())
            self._preview = (self.render(data, valid), valid)
        return self._preview

    @cached_property
    def _mask_flags(self) -> frozenset:
        return frozenset(flag for band in self.bands for flag in self.dataset.mask_flag_enums[band - 1])

    @cached_property
    def _typed_nodata(self) -> list | None:
        """Per chosen band, its nodata value in the band's dtype (comparing uint8 data with a Python
        float would upcast every tile to float64); None when some band has no usable nodata value,
        which makes every pixel valid (GDAL's per-band masks are OR-ed)."""
        typed = []
        for band in self.bands:
            nodata = self.dataset.nodatavals[band - 1]
            dtype = np.dtype(self.dataset.dtypes[band - 1])
            if nodata is None or math.isnan(nodata):  # NaN is handled by the finiteness test
                return None
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                if nodata != int(nodata) or not info.min <= nodata <= info.max:
                    return None  # no pixel can hold this value
            typed.append(dtype.type(nodata))
        return typed

    def _valid(self, data: np.ndarray, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        """A pixel is valid when any chosen band is (GDAL's rule for per-band nodata)."""
        flags = self._mask_flags
        if flags & {MaskFlags.per_dataset, MaskFlags.alpha}:
            valid = self.dataset.read_masks(self.bands[0], window=window, out_shape=out_shape) > 0
        elif MaskFlags.nodata in flags and self._typed_nodata is not None:
            valid = data[0] != self._typed_nodata[0]
            for plane, nodata in zip(data[1:], self._typed_nodata[1:]):
                np.logical_or(valid, plane != nodata, out=valid)
        else:
            valid = np.ones(out_shape, dtype=bool)
        if data.dtype.kind == "f":  # NaN / inf are never data, whatever the header says
            valid &= np.isfinite(data).any(axis=0)
        return valid

    def _compute_stretch(self) -> None:
        data, valid = self.read_raw(Window(0, 0, self.width, self.height), self.preview_shape())
        if not valid.any():
            raise _all_nodata(self)
        if self.preview_shape() == (self.height, self.width):
            source = "full read"
        elif self.dataset.overviews(self.bands[0]):
            source = "overviews"
        else:
            source = "decimated read"
        lows, highs = [], []
        for plane in data:
            low, high = np.percentile(plane[valid & np.isfinite(plane)], self.percentiles)
            lows.append(float(low))
            highs.append(float(high) if high > low else float(low) + 1.0)
        self.stretch = Stretch(tuple(lows), tuple(highs), tuple(self.percentiles), source)
        self._preview = (self.render(data, valid), valid)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        return {
            "path": str(self.path), "width": self.width, "height": self.height, "bands": list(self.bands),
            "dtype": self.dtype, "nodata": self.nodata, "crs": self.crs.to_string() if self.crs else None,
            "transform": list(self.transform)[:6], "gsd": self.gsd,
            "stretch": self.stretch.to_dict() if self.stretch else None,
        }


def footprint_bounds(ring: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return (min(xs), min(ys), max(xs), max(ys))


def _closed_ccw(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Close a ring and orient it counter-clockwise (GeoJSON's right-hand rule)."""
    points = [(float(x), float(y)) for x, y in ring]
    twice_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    if twice_area < 0:
        points.reverse()
    return points + [points[0]]


def _all_nodata(scene: Scene) -> InputError:
    rows, cols = scene.preview_shape()
    return InputError(
        f"{scene.path}: no valid pixel in bands {list(scene.bands)} (every pixel of a {cols}x{rows} "
        f"{'read' if (rows, cols) == (scene.height, scene.width) else 'overview/decimated read'} is "
        f"nodata or masked; nodata={scene.nodata}); check the nodata value and the mask, or choose "
        "other --bands"
    )


def _choose_bands(path: Path, dataset, bands) -> tuple[int, ...]:
    count = dataset.count
    if bands is not None:
        chosen = tuple(int(b) for b in bands)
        if len(chosen) not in (1, 3):
            raise InputError(f"{path}: --bands needs 3 band indexes (R,G,B) or 1 (grey), got {list(chosen)}")
        bad = [b for b in chosen if not 1 <= b <= count]
        if bad:
            raise InputError(f"{path}: band(s) {bad} do not exist; the scene has bands 1..{count}")
        return chosen
    interp = list(dataset.colorinterp)
    if all(colour in interp for colour in _RGB):
        return tuple(interp.index(colour) + 1 for colour in _RGB)
    if count > MAX_AUTO_BANDS:
        raise InputError(
            f"{path}: {count} bands and none marked red/green/blue, so which three to show is ambiguous; "
            "choose them with --bands R,G,B (e.g. --bands 4,3,2 for Sentinel-2 / Landsat 8)"
        )
    return (1, 2, 3) if count >= 3 else (1,)


def open_scene(path: str | Path, *, bands=None, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Scene:
    """Open a GeoTIFF / COG / any GDAL raster for tiling.

    Bands: red/green/blue by colour interpretation, else the first three (1 or 2 bands: band 1 as
    grey); ``bands`` overrides (1-based, e.g. ``(4, 3, 2)``). uint8 is used as is; other integer and
    float types are stretched to 8 bits between per-band ``percentiles`` of the valid pixels of one
    decimated read (from overviews when present). Nodata values, alpha bands and mask bands mark
    invalid pixels. A scene without CRS opens with a :class:`NotGeoreferencedWarning`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RasterioNotGeoreferencedWarning)  # we warn once, below
            dataset = rasterio.open(path)
    except RasterioError as error:
        raise InputError(
            f"{path}: not a raster GDAL can read ({error}); expected a GeoTIFF / COG or another GDAL format"
        ) from error
    try:
        scene = _make_scene(path, dataset, bands, percentiles)
    except BaseException:
        dataset.close()
        raise
    return scene


def _make_scene(path: Path, dataset, bands, percentiles) -> Scene:
    chosen = _choose_bands(path, dataset, bands)
    dtypes = {dataset.dtypes[b - 1] for b in chosen}
    if any(d.startswith("complex") for d in dtypes):  # complex64/128 and GDAL's complex_int16/32
        raise InputError(
            f"{path}: complex pixel type {sorted(dtypes)} (e.g. SAR SLC) cannot be shown as an image; "
            "convert to amplitude first (gdal_translate or numpy.abs)"
        )
    palette = [b for b in chosen if dataset.colorinterp[b - 1] == ColorInterp.palette]
    if palette:
        raise InputError(
            f"{path}: band {palette[0]} is paletted; expand it to RGB first "
            "(gdal_translate -expand rgb in.tif out.tif)"
        )
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    scene = Scene(path=path, dataset=dataset, bands=chosen, percentiles=tuple(percentiles))
    if dataset.crs is None:
        warnings.warn(
            f"{path} has no CRS: tiles carry pixel coordinates only (no map or lon/lat bounds)",
            NotGeoreferencedWarning, stacklevel=3,
        )
    if np.dtype(scene.dtype) == np.uint8:
        if not scene.preview()[1].any():
            raise _all_nodata(scene)
    else:
        scene._compute_stretch()
    return scene
