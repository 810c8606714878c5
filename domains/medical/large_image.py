"""Large 2D images (pathology tiles, slide levels, PNG/JPEG figures) -> one RGB ``PIL.Image``.

TIFF goes through tifffile, which decodes strips / tiles straight into one preallocated array:
no whole-file buffer, no Pillow decoder, so Pillow's decompression-bomb guard is neither tripped
nor touched; the size limit is instead the explicit ``max_pixels`` argument, and a pyramidal
slide can be read at a coarser ``level``. PNG / JPEG go through Pillow with its guard as set
(``PIL.Image.MAX_IMAGE_PIXELS``): a larger image is an error that says what to do.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from longllava.errors import InputError

DEFAULT_MAX_PIXELS = 1_000_000_000  # 3 GB as RGB uint8
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def load_large_image(path: str | PathLike[str], *, level: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB image from PNG / JPEG / TIFF (tiled, striped or pyramidal; ``level`` 0 = full size)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic in _TIFF_MAGIC:
        return _read_tiff(path, level, max_pixels)
    if level != 0:
        raise InputError(f"{path}: level={level} needs a pyramidal TIFF; this file has a single resolution")
    return _read_with_pillow(path)


def _read_tiff(path: Path, level: int, max_pixels: int) -> Image.Image:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.series:
                raise InputError(f"{path}: the TIFF holds no image")
            series = tiff.series[0]
            if not 0 <= level < len(series.levels):
                raise InputError(f"{path}: level {level} does not exist; the TIFF has levels 0..{len(series.levels) - 1}")
            chosen = series.levels[level]
            axes, shape = chosen.axes, chosen.shape
            height, width = shape[axes.index("Y")], shape[axes.index("X")]
            if height * width > max_pixels:
                raise InputError(
                    f"{path}: level {level} is {width}x{height} = {width * height:,} pixels, above max_pixels="
                    f"{max_pixels:,}; read a coarser pyramid level (level=1, ...) or raise max_pixels if memory allows"
                )
            pixels = chosen.asarray()
    except InputError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError) as error:
        raise InputError(f"{path}: not a readable TIFF ({error})") from error
    return Image.fromarray(_to_rgb_uint8(pixels, axes, path))


def _to_rgb_uint8(pixels: np.ndarray, axes: str, path: Path) -> np.ndarray:
    extra = [a for a in axes if a not in "YXS"]
    if any(pixels.shape[axes.index(a)] != 1 for a in extra):
        raise InputError(f"{path}: a TIFF with axes {axes} and shape {pixels.shape}; expected one 2D image (gray or RGB)")
    keep = "".join(a for a in axes if a in "YXS")
    pixels = pixels.reshape([pixels.shape[axes.index(a)] for a in keep])
    if "S" in keep:
        pixels = np.moveaxis(pixels, keep.index("S"), -1)
    else:
        pixels = pixels[..., None]
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)  # 16-bit scanners: keep the top 8 bits
    elif pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:
        raise InputError(f"{path}: {pixels.dtype} samples are not supported; expected 8- or 16-bit unsigned integers")
    channels = pixels.shape[-1]
    if channels == 1:
        return np.repeat(pixels, 3, axis=-1)
    if channels in (3, 4):
        return np.ascontiguousarray(pixels[..., :3])
    raise InputError(f"{path}: {channels} samples per pixel; expected gray, RGB or RGBA")


def _read_with_pillow(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise InputError(
            f"{path}: the image exceeds Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels): {error}. Convert it to a tiled TIFF (read by tiles here), "
            "or raise PIL.Image.MAX_IMAGE_PIXELS yourself if you trust the file"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise InputError(f"{path}: not a readable PNG / JPEG / TIFF image ({error})") from error
