"""CT windowing: Hounsfield units -> uint8 display values -> RGB images at the processor's size.

A window maps ``[level - width/2, level + width/2]`` HU linearly onto 0..255 (rounded half to even,
clipped outside). RGB mode puts three windows in the three channels (default lung / mediastinum /
bone, so one 2D image carries air, soft tissue and bone contrast); a single window gives gray
replicated to three channels, because the vision encoder takes RGB.

Slices are resized in HU (bilinear, antialiased) to the processor's size with the physical
in-plane aspect, then windowed: int16 slices through a 65536-entry packed-RGB lookup table.
The resize uses Pillow's BILINEAR weights (a triangle filter widened by the shrink factor, rows
normalised at the borders) applied as banded float32 matrix products: the values of Pillow's
float resize (to float32 rounding) in about half its time, the bulk of rendering a slice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from longllava.errors import InputError


@dataclass(frozen=True)
class Window:
    """A display window in HU: ``width`` > 0, centred on ``level``."""

    width: float
    level: float
    name: str = ""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise InputError(f"window {self.label}: width must be > 0 HU, got {self.width}")

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2

    @property
    def label(self) -> str:
        return self.name or f"W{self.width:g}/L{self.level:g}"


WINDOW_PRESETS: dict[str, Window] = {
    "lung": Window(1500, -600, "lung"),
    "mediastinum": Window(350, 50, "mediastinum"),
    "abdomen": Window(400, 40, "abdomen"),
    "bone": Window(1800, 400, "bone"),
    "brain": Window(80, 40, "brain"),
}
DEFAULT_WINDOWS = ("lung", "mediastinum", "bone")

_CUSTOM_WINDOW = re.compile(r"^\s*W?\s*(?P<width>[-+]?\d+(?:\.\d*)?)\s*/\s*L?\s*(?P<level>[-+]?\d+(?:\.\d*)?)\s*$", re.I)


def parse_window(spec: str | Window) -> Window:
    """A preset name (``lung``) or a custom ``WIDTH/LEVEL`` (``400/40``, ``W1500/L-600``)."""
    if isinstance(spec, Window):
        return spec
    key = spec.strip().lower()
    if key in WINDOW_PRESETS:
        return WINDOW_PRESETS[key]
    match = _CUSTOM_WINDOW.match(spec)
    if not match:
        raise InputError(
            f"unknown window {spec!r}: use a preset ({', '.join(WINDOW_PRESETS)}) or WIDTH/LEVEL in HU, e.g. 400/40"
        )
    return Window(float(match["width"]), float(match["level"]))


def parse_windows(spec: str | Window | Sequence[str | Window]) -> tuple[Window, ...]:
    """One window (gray) or three (RGB channels); a string may list several separated by commas."""
    if isinstance(spec, Window):
        items: Sequence[str | Window] = [spec]
    elif isinstance(spec, str):
        items = [part for part in spec.split(",") if part.strip()]
    else:
        items = list(spec)
    windows = tuple(parse_window(item) for item in items)
    if len(windows) not in (1, 3):
        raise InputError(
            f"got {len(windows)} windows ({', '.join(w.label for w in windows)}): give one window (gray) "
            "or three (the R, G, B channels), e.g. lung,mediastinum,bone"
        )
    return windows


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """HU -> uint8: ``round(255 * (hu - low) / width)`` clipped to 0..255."""
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(window.low)) * np.float32(255.0 / window.width)
    return np.rint(np.clip(scaled, 0, 255, out=scaled), out=scaled).astype(np.uint8)


@lru_cache(maxsize=16)
def _rgbx_lut(windows: tuple[Window, ...]) -> np.ndarray:
    """65536 packed RGBX pixels (little-endian uint32), indexed by the int16 bit pattern read as
    uint16: windowing an int16 slice is then one ``np.take``."""
    every_int16 = np.arange(65536, dtype=np.uint16).view(np.int16)
    channels = [apply_window(every_int16, w) for w in windows]
    if len(channels) == 1:
        channels *= 3
    rgbx = np.stack([*channels, np.full(65536, 255, dtype=np.uint8)], axis=-1)
    return np.ascontiguousarray(rgbx).view("<u4").ravel()


def hu_to_rgb(hu_slice: np.ndarray, windows: Sequence[str | Window] | str | Window = DEFAULT_WINDOWS) -> np.ndarray:
    """A 2D HU slice -> (H, W, 3) uint8: three windows as R, G, B, or one window as gray."""
    windows = parse_windows(windows)
    if hu_slice.ndim != 2:
        raise InputError(f"expected a 2D slice, got an array of shape {hu_slice.shape}")
    if hu_slice.dtype == np.int16:
        return np.take(_rgbx_lut(windows), hu_slice.view(np.uint16)).view(np.uint8).reshape(*hu_slice.shape, 4)[..., :3]
    channels = [apply_window(hu_slice, w) for w in windows]
    if len(channels) == 1:
        channels *= 3
    return np.stack(channels, axis=-1)


def display_size(shape_yx: tuple[int, int], spacing_yx_mm: tuple[float, float], size: int) -> tuple[int, int]:
    """(width, height) in pixels whose longer side is ``size`` and whose aspect is the physical one."""
    if size < 1:
        raise InputError(f"output size must be >= 1 pixel, got {size}")
    height_mm = shape_yx[0] * spacing_yx_mm[0]
    width_mm = shape_yx[1] * spacing_yx_mm[1]
    scale = size / max(height_mm, width_mm)
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))


_BAND_ROWS = 16  # output pixels per weight block: small bands skip the zeros, large ones feed BLAS well
# OpenBLAS splits a product over its own threads above m * n * k = 65536 * 4 (SMP_THRESHOLD_MIN *
# GEMM_MULTITHREAD_THRESHOLD). For these small products its threads cost about twice the CPU time
# for no gain in wall time (measured on 1024-pixel slices), and they would compete with the slice
# rendering threads: bands stay below that size.
_SINGLE_THREAD_PRODUCT = 65536 * 4


@lru_cache(maxsize=32)
def _resize_bands(n_in: int, n_out: int, other: int) -> tuple[tuple[slice, slice, np.ndarray], ...]:
    """Pillow's BILINEAR resize along one axis as (output slice, input slice, float32 weights) bands.

    Output pixel ``i`` is centred at input coordinate ``c = (i + 0.5) * n_in / n_out``; its weights
    are the triangle ``1 - |x + 0.5 - c| / s`` (``s`` = shrink factor, at least 1: antialiasing),
    clipped at 0 and normalised over the pixels inside the image. ``other`` is the length of the
    slice along the other axis: a band's product costs ``other`` times its weight block.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    weights = np.clip(1 - np.abs(np.arange(n_in) + 0.5 - centres[:, None]) / support, 0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    bands = []
    start = 0
    while start < n_out:
        count = min(_BAND_ROWS, n_out - start)
        while True:
            rows = slice(start, start + count)
            used = np.flatnonzero(weights[rows].any(axis=0))
            if count == 1 or count * (int(used[-1]) + 1 - int(used[0])) * other <= _SINGLE_THREAD_PRODUCT:
                break
            count -= 1
        columns = slice(int(used[0]), int(used[-1]) + 1)
        bands.append((rows, columns, np.ascontiguousarray(weights[rows, columns], dtype=np.float32)))
        start += count
    return tuple(bands)


def resample_hu(hu_slice: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of a HU slice; int16 stays int16 (rounded).

    Interpolating HU before windowing is resampling the scan itself, as volume resampling does.
    A non-finite voxel (float volumes) makes the output pixels it contributes to NaN, as in Pillow.
    """
    if size_wh == (hu_slice.shape[1], hu_slice.shape[0]):
        return hu_slice
    width, height = size_wh
    if width < 1 or height < 1:
        raise InputError(f"resize target must be at least 1x1 pixels, got {width}x{height}")
    # Reoriented volumes are reversed views (NIfTI: x and y); casting those runs ~4x slower, so
    # resample the stored order and reverse the result (the weights are mirror-symmetric).
    reversed_axes = tuple(axis for axis in (0, 1) if hu_slice.strides[axis] < 0)
    hu = np.asarray(np.flip(hu_slice, reversed_axes), dtype=np.float32)
    if hu_slice.dtype == np.int16:
        resized = _resample_bands(hu, width, height)
        resized = np.rint(resized, out=resized).astype(np.int16)
        return np.flip(resized, reversed_axes)
    # A band's zero weights would carry NaN * 0 = NaN to all of its outputs: resample the finite
    # values and the non-finite mask separately.
    bad = ~np.isfinite(hu)
    if not bad.any():
        return np.flip(_resample_bands(hu, width, height), reversed_axes)
    resized = _resample_bands(np.where(bad, np.float32(0), hu), width, height)
    resized[_resample_bands(bad.astype(np.float32), width, height) > 0] = np.nan
    return np.flip(resized, reversed_axes)


def _resample_bands(hu: np.ndarray, width: int, height: int) -> np.ndarray:
    """The two separable passes (rows, then columns) of a float32 slice as banded matrix products."""
    rows_resized = np.empty((height, hu.shape[1]), dtype=np.float32)
    for out, used, weights in _resize_bands(hu.shape[0], height, hu.shape[1]):
        np.matmul(weights, hu[used], out=rows_resized[out])
    resized = np.empty((height, width), dtype=np.float32)
    for out, used, weights in _resize_bands(hu.shape[1], width, height):
        np.matmul(rows_resized[:, used], weights.T, out=resized[:, out])
    return resized


def render_slice(
    hu_slice: np.ndarray,
    windows: Sequence[str | Window] | str | Window = DEFAULT_WINDOWS,
    spacing_yx_mm: tuple[float, float] = (1.0, 1.0),
    size: int = 336,
) -> Image.Image:
    """A HU slice -> RGB image whose longer side is ``size`` with the physical in-plane aspect."""
    windows = parse_windows(windows)
    width, height = display_size(hu_slice.shape, spacing_yx_mm, size)
    hu = resample_hu(hu_slice, (width, height))
    if hu.dtype == np.int16:
        # Every uint16 index is inside the table: "wrap" only skips numpy's per-index bounds check.
        packed = np.take(_rgbx_lut(windows), hu.view(np.uint16), mode="wrap")
        # One unpacking copy into Pillow's RGB storage (4x faster than mapping RGBX and converting).
        return Image.frombytes("RGB", (width, height), packed, "raw", "RGBX")
    return Image.fromarray(hu_to_rgb(hu, windows))
