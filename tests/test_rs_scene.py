"""open_scene / tile_scene on generated rasters (uint16, 4-band, rotated, no CRS) and on bad input."""

import math
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin

from longllava.domains.remote_sensing.scene import NotGeoreferencedWarning, open_scene
from longllava.domains.remote_sensing.tiling import tile_scene, tile_to_geo
from longllava.errors import InputError

UTM = "EPSG:32633"


def write_raster(path, data, *, crs=UTM, transform=None, nodata=None, colorinterp=None, overviews=None,
                 **profile):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                           dtype=profile.pop("dtype", data.dtype), crs=crs,
                           transform=transform or from_origin(500000, 5000000, 10, 10),
                           nodata=nodata, **profile) as dataset:
            dataset.write(data)
            if colorinterp:
                dataset.colorinterp = colorinterp
            if overviews:
                dataset.build_overviews(overviews, Resampling.nearest)
    return path


def ramp_uint16(height=200, width=300, bands=4):
    rng = np.random.default_rng(1)
    return (1000 + rng.integers(0, 4000, (bands, height, width))).astype(np.uint16)


def test_uint16_four_band_percentile_stretch(tmp_path):
    data = ramp_uint16()
    path = write_raster(tmp_path / "u16.tif", data)
    with open_scene(path) as scene:
        assert scene.bands == (1, 2, 3)  # no colour interpretation: the first three
        stretch = scene.stretch
        assert stretch.source == "full read"  # small scene: the decimated read is the raster itself
        for band in range(3):
            low, high = np.percentile(data[band], (2, 98))
            assert stretch.low[band] == pytest.approx(low) and stretch.high[band] == pytest.approx(high)
        grid = tile_scene(scene, tile=168)
        assert (grid.rows, grid.cols) == (2, 2)
        image = np.asarray(grid.tile_at(0, 0).image())
    low, high = np.array(stretch.low)[:, None, None], np.array(stretch.high)[:, None, None]
    expected = np.clip((data[:3, :168, :168].astype(np.float32) - low) * (255 / (high - low)), 0, 255)
    assert np.abs(image.astype(int) - np.moveaxis(expected, 0, -1).astype(np.uint8)).max() <= 1
    assert image.min() == 0 and image.max() == 255

    with open_scene(path, bands=(4, 3, 2)) as scene:
        assert scene.bands == (4, 3, 2)
        assert scene.stretch.low[0] == pytest.approx(np.percentile(data[3], 2))
    with open_scene(path, bands=(4,)) as scene:  # one band: grey
        image = np.asarray(tile_scene(scene).tile_at(0, 0).image())
        assert np.array_equal(image[..., 0], image[..., 2]) and image[:200, :300, 0].std() > 0


def test_stretch_from_overviews_or_decimated_read(tmp_path):
    data = ramp_uint16(1500, 2100, bands=3)
    with open_scene(write_raster(tmp_path / "ovr.tif", data, overviews=[2, 4], tiled=True)) as scene:
        assert scene.stretch.source == "overviews"
        assert scene.preview_shape() == (732, 1024)
        assert tile_scene(scene).thumbnail.size == (1024, 732)
        assert scene.stretch.low[0] == pytest.approx(np.percentile(data[0], 2), rel=0.02)
    with open_scene(write_raster(tmp_path / "plain.tif", data)) as scene:
        assert scene.stretch.source == "decimated read"


class RecordingDataset:
    """Forwards to a rasterio dataset and records the size of every pixel read."""

    def __init__(self, dataset):
        self._dataset = dataset
        self.reads = []

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def read(self, indexes=None, *, window=None, out_shape=None, **kwargs):
        self.reads.append((window, out_shape))
        return self._dataset.read(indexes, window=window, out_shape=out_shape, **kwargs)


def test_never_reads_the_full_scene(tmp_path):
    data = np.full((3, 2000, 2500), 77, dtype=np.uint8)
    with open_scene(write_raster(tmp_path / "big.tif", data, tiled=True)) as scene:
        recorder = RecordingDataset(scene.dataset)
        scene.dataset = recorder
        grid = tile_scene(scene, tile=336)
        for tile in grid.tiles:
            tile.image()
        grid.thumbnail  # already cached by open_scene's check
    largest = max(math.prod(shape[1:]) for _, shape in recorder.reads)
    assert largest <= 336 * 336
    assert len(recorder.reads) == grid.rows * grid.cols == 6 * 8


def test_alpha_band_masks_pixels(tmp_path):
    rgb = np.full((3, 64, 80), 200, dtype=np.uint8)
    alpha = np.zeros((1, 64, 80), dtype=np.uint8)
    alpha[0, :32] = 255
    path = write_raster(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]), photometric="RGB", alpha="YES")
    with open_scene(path) as scene:
        tile = tile_scene(scene, tile=64).tile_at(0, 0)
        image = np.asarray(tile.image())
        assert tile.valid_fraction == pytest.approx(0.5)
        assert (image[:32, :64] == 200).all() and not image[32:].any()


def test_float_nan_nodata_is_invalid(tmp_path):
    data = np.linspace(0.0, 1.0, 50 * 60, dtype=np.float32).reshape(1, 50, 60)
    data[0, :, :30] = np.nan
    with open_scene(write_raster(tmp_path / "f32.tif", data, nodata=float("nan"))) as scene:
        assert scene.bands == (1,)
        tile = tile_scene(scene, tile=60).tile_at(0, 0)
        image = np.asarray(tile.image())
        assert tile.valid_fraction == pytest.approx(0.5)
        assert not image[:, :30].any() and image[:, 30:].max() == 255


def test_rotated_transform_footprints(tmp_path):
    transform = Affine.translation(600000, 4000000) @ Affine.rotation(30) @ Affine.scale(10, -10)
    data = np.full((3, 100, 150), 50, dtype=np.uint8)
    with open_scene(write_raster(tmp_path / "rot.tif", data, transform=transform)) as scene:
        grid = tile_scene(scene, tile=64)
        assert (grid.rows, grid.cols) == (2, 3)
        corners = [transform @ c for c in ((0, 0), (150, 0), (150, 100), (0, 100))]
        xs, ys = zip(*corners)
        assert grid.bounds == pytest.approx((min(xs), min(ys), max(xs), max(ys)))
        total = 0.0
        for tile in grid.tiles:
            ring = tile.footprint
            c0, r0, w, h = tile_to_geo(grid, tile.row, tile.col)["window"]
            expected = [transform @ c for c in ((c0, r0), (c0 + w, r0), (c0 + w, r0 + h), (c0, r0 + h))]
            assert sorted(map(tuple, np.round(ring[:4], 6))) == sorted(map(tuple, np.round(expected, 6)))
            edge = np.subtract(ring[1], ring[0])
            assert min(abs(edge[0]), abs(edge[1])) > 1  # not axis-aligned
            total += 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]))
        assert total == pytest.approx(150 * 100 * 100)  # footprints partition the rotated scene
        assert grid.gsd == pytest.approx(10, rel=0.01)


def test_no_crs_tiles_in_pixel_coordinates(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", np.full((3, 40, 50), 9, dtype=np.uint8), crs=None,
                        transform=Affine.identity())
    with pytest.warns(NotGeoreferencedWarning, match="no CRS"):
        scene = open_scene(path)
    with scene:
        grid = tile_scene(scene, tile=32)
        assert (grid.rows, grid.cols) == (2, 2)
        assert grid.crs is None and grid.gsd is None and grid.lonlat_bounds is None
        geo = tile_to_geo(grid, 1, 1)
        assert geo["bounds"] == [32, 32, 50, 40] and geo["lonlat_bounds"] is None
        collection = grid.to_geojson()
        assert all(f["geometry"] is None for f in collection["features"]) and "bbox" not in collection
        assert np.asarray(grid.tile_at(1, 1).image())[:8, :18].min() == 9


def test_one_pixel_scene_and_tile_larger_than_scene(tmp_path):
    with open_scene(write_raster(tmp_path / "px.tif", np.full((3, 1, 1), 120, dtype=np.uint8))) as scene:
        grid = tile_scene(scene)
        assert (grid.rows, grid.cols, len(grid.tiles)) == (1, 1, 1)
        tile = grid.tiles[0]
        image = np.asarray(tile.image())
        assert image.shape == (336, 336, 3) and (image[0, 0] == 120).all() and image.sum() == 360
        assert tile.valid_fraction == 1.0
        assert tile.bounds == pytest.approx((500000, 4999990, 500010, 5000000))
    with open_scene(write_raster(tmp_path / "small.tif", np.full((3, 100, 90), 5, dtype=np.uint8))) as scene:
        grid = tile_scene(scene, tile=512)
        assert (grid.rows, grid.cols) == (1, 1)
        assert grid.tiles[0].image().size == (512, 512)


def test_more_than_four_bands_needs_band_choice(tmp_path):
    path = write_raster(tmp_path / "ms.tif", ramp_uint16(30, 40, bands=6))
    with pytest.raises(InputError, match="6 bands.*--bands"):
        open_scene(path)
    with open_scene(path, bands=(5, 3, 2)) as scene:
        assert scene.bands == (5, 3, 2)
    with pytest.raises(InputError, match=r"band\(s\) \[7\] do not exist"):
        open_scene(path, bands=(7, 3, 2))
    with pytest.raises(InputError, match="3 band indexes"):
        open_scene(path, bands=(1, 2))
    interp = [ColorInterp.undefined, ColorInterp.blue, ColorInterp.green, ColorInterp.red,
              ColorInterp.undefined, ColorInterp.undefined]
    tagged = write_raster(tmp_path / "tagged.tif", ramp_uint16(30, 40, bands=6), colorinterp=interp)
    with open_scene(tagged) as scene:
        assert scene.bands == (4, 3, 2)  # red, green, blue by colour interpretation


def test_complex_dtype_rejected(tmp_path):
    path = write_raster(tmp_path / "slc.tif", np.ones((1, 8, 8), dtype=np.complex64))
    with pytest.raises(InputError, match="complex"):
        open_scene(path)


def test_paletted_rejected(tmp_path):
    path = write_raster(tmp_path / "pal.tif", np.zeros((1, 8, 8), dtype=np.uint8))
    with rasterio.open(path, "r+") as dataset:
        dataset.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255)})
    with pytest.raises(InputError, match="paletted"):
        open_scene(path)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_all_nodata_scene_rejected(tmp_path, dtype):
    path = write_raster(tmp_path / "empty.tif", np.zeros((3, 20, 20), dtype=dtype), nodata=0)
    with pytest.raises(InputError, match="no valid pixel"):
        open_scene(path)


def test_truncated_tiff(tmp_path):
    rng = np.random.default_rng(0)
    full = write_raster(tmp_path / "full.tif", rng.integers(0, 255, (3, 256, 256), dtype=np.uint8),
                        tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    content = full.read_bytes()
    (tmp_path / "half.tif").write_bytes(content[: len(content) // 2])
    (tmp_path / "head.tif").write_bytes(content[:200])
    with pytest.raises(InputError, match="corrupt or truncated"):
        open_scene(tmp_path / "half.tif")
    with pytest.raises(InputError, match="half.tif|head.tif"):
        open_scene(tmp_path / "head.tif")


def test_not_a_raster_and_zero_size(tmp_path):
    (tmp_path / "notes.tif").write_text("this is not an image\n")
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "zero.vrt").write_text(
        '<VRTDataset rasterXSize="0" rasterYSize="0"><VRTRasterBand dataType="Byte" band="1"/></VRTDataset>')
    for name in ("notes.tif", "empty.tif", "zero.vrt"):
        with pytest.raises(InputError, match=f"{name}: not a raster"):
            open_scene(tmp_path / name)
    with pytest.raises(InputError, match="no such file"):
        open_scene(tmp_path / "missing.tif")
