"""load_large_image: PNG / JPEG through Pillow (guard intact), TIFF (tiled, planar, pyramidal) through tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from longllava.domains.medical.large_image import load_large_image
from longllava.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
HISTOLOGY = FIXTURES / "pathology" / "ihc_colon.png"


def test_real_histology_png():
    image = load_large_image(HISTOLOGY)
    assert image.mode == "RGB" and image.size == (512, 512)
    with Image.open(HISTOLOGY) as reference:
        np.testing.assert_array_equal(np.asarray(image), np.asarray(reference.convert("RGB")))


def test_jpeg(tmp_path):
    Image.open(HISTOLOGY).convert("RGB").save(tmp_path / "h.jpg", quality=95)
    image = load_large_image(tmp_path / "h.jpg")
    assert image.mode == "RGB" and image.size == (512, 512)


def test_real_planar_geotiff_becomes_rgb():
    image = load_large_image(FIXTURES / "scenes" / "RGB.byte.tif")
    bands = tifffile.imread(FIXTURES / "scenes" / "RGB.byte.tif")  # (718, 791, 3)
    assert image.mode == "RGB" and image.size == (791, 718)
    np.testing.assert_array_equal(np.asarray(image), bands)
    assert np.asarray(image)[359, 395].tolist() != [0, 0, 0]  # the scene's centre holds data


def test_tiled_tiff_is_read_by_tiles_without_touching_the_pillow_guard(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "tiled.tif", pixels, tile=(64, 64), compression="zlib", photometric="rgb")
    Image.fromarray(pixels).save(tmp_path / "same.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 60,000 pixels is > 2x the guard
    image = load_large_image(tmp_path / "tiled.tif")
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert Image.MAX_IMAGE_PIXELS == 20_000  # guard neither disabled nor changed
    with pytest.raises(InputError, match="decompression-bomb limit.*tiled TIFF"):
        load_large_image(tmp_path / "same.png")


def test_pyramid_levels_and_the_explicit_pixel_limit(tmp_path):
    full = np.random.default_rng(1).integers(0, 256, size=(256, 128, 3), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as tif:
        tif.write(full, tile=(64, 64), subifds=1, photometric="rgb")
        tif.write(full[::2, ::2], tile=(64, 64), subfiletype=1, photometric="rgb")
    assert load_large_image(tmp_path / "pyramid.tif").size == (128, 256)
    np.testing.assert_array_equal(np.asarray(load_large_image(tmp_path / "pyramid.tif", level=1)), full[::2, ::2])
    with pytest.raises(InputError, match=r"^\S*pyramid.tif: level 3 does not exist; the TIFF has levels 0..1"):
        load_large_image(tmp_path / "pyramid.tif", level=3)
    with pytest.raises(InputError, match=r"^\S*pyramid.tif: level 0 is 128x256 = 32,768 pixels, above max_pixels=10,000.*coarser pyramid level"):
        load_large_image(tmp_path / "pyramid.tif", max_pixels=10_000)


def test_gray_16_bit_tiff_is_scaled_to_8_bit_rgb(tmp_path):
    gray = np.array([[0, 256, 65535], [512, 1024, 32768]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    image = np.asarray(load_large_image(tmp_path / "g.tif"))
    assert image.shape == (2, 3, 3)
    assert image[..., 0].tolist() == [[0, 1, 255], [2, 4, 128]]
    assert (image[..., 0] == image[..., 2]).all()


def test_bad_images(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable PNG / JPEG / TIFF"):
        load_large_image(tmp_path / "notes.png")
    with pytest.raises(InputError, match="no such image file"):
        load_large_image(tmp_path / "missing.tif")
    (tmp_path / "cut.tif").write_bytes(b"II*\x00" + b"\x00" * 4)
    with pytest.raises(InputError, match="cut.tif: (not a readable TIFF|the TIFF holds no image)"):
        load_large_image(tmp_path / "cut.tif")
    with pytest.raises(InputError, match="needs a pyramidal TIFF"):
        load_large_image(HISTOLOGY, level=1)
