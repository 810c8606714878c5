"""Tiling the real Landsat scene (tests/fixtures/scenes/RGB.byte.tif): grid, bounds, nodata, GeoJSON."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import transform_bounds

from longllava.domains.remote_sensing.scene import open_scene
from longllava.domains.remote_sensing.tiling import plan_grid, tile_scene, tile_to_geo
from longllava.errors import InputError

LANDSAT = Path(__file__).parent / "fixtures" / "scenes" / "RGB.byte.tif"


@pytest.fixture(scope="module")
def landsat():
    with rasterio.open(LANDSAT) as dataset:
        data = dataset.read()
        mask = dataset.dataset_mask() > 0
        info = {"bounds": tuple(dataset.bounds), "transform": dataset.transform, "crs": dataset.crs}
    return data, mask, info


@pytest.fixture
def scene():
    with open_scene(LANDSAT) as opened:
        yield opened


def ring_area(ring):
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]))


def test_scene_metadata(scene, landsat):
    _, _, info = landsat
    assert (scene.width, scene.height) == (791, 718)
    assert scene.bands == (1, 2, 3)  # red, green, blue by colour interpretation
    assert scene.stretch is None  # uint8 is used as is
    assert scene.nodata == 0
    assert scene.crs.to_epsg() == 32618
    assert scene.bounds == pytest.approx(info["bounds"])
    assert scene.gsd == pytest.approx(300, rel=0.01)  # Landsat ETM+ at 300 m in this clip


@pytest.mark.parametrize("tile, shape", [(336, (3, 3)), (168, (5, 5)), (512, (2, 2))])
def test_grid_shape_and_tiles_partition_scene_bounds(scene, landsat, tile, shape):
    _, _, info = landsat
    grid = tile_scene(scene, tile=tile)
    assert (grid.rows, grid.cols) == shape
    assert [(t.row, t.col) for t in grid.tiles] == [(r, c) for r in range(shape[0]) for c in range(shape[1])]
    left, bottom, right, top = info["bounds"]
    # the tiles' bounds cover the scene bounds exactly: outer edges coincide, areas add up, no gaps
    assert min(t.bounds[0] for t in grid.tiles) == pytest.approx(left)
    assert max(t.bounds[2] for t in grid.tiles) == pytest.approx(right)
    assert min(t.bounds[1] for t in grid.tiles) == pytest.approx(bottom)
    assert max(t.bounds[3] for t in grid.tiles) == pytest.approx(top)
    area = sum((t.bounds[2] - t.bounds[0]) * (t.bounds[3] - t.bounds[1]) for t in grid.tiles)
    assert area == pytest.approx((right - left) * (top - bottom), rel=1e-9)
    for t in grid.tiles:
        if t.col + 1 < grid.cols:
            assert t.bounds[2] == pytest.approx(grid.tile_at(t.row, t.col + 1).bounds[0])
        if t.row + 1 < grid.rows:
            assert t.bounds[1] == pytest.approx(grid.tile_at(t.row + 1, t.col).bounds[3])
    assert sum(t.window.width * t.window.height for t in grid.tiles) == 791 * 718


def test_lonlat_bounds(scene, landsat):
    _, _, info = landsat
    grid = tile_scene(scene)
    expected = transform_bounds(info["crs"], "EPSG:4326", *info["bounds"], densify_pts=21)
    assert grid.lonlat_bounds == pytest.approx(expected, abs=1e-3)
    assert -79.0 < grid.lonlat_bounds[0] < -78.9 and 25.5 < grid.lonlat_bounds[3] < 25.6  # off the Bahamas
    to_lonlat = Transformer.from_crs(info["crs"], "EPSG:4326", always_xy=True)
    for t in grid.tiles:
        geo = tile_to_geo(grid, t.row, t.col)
        x = sum(p[0] for p in geo["footprint"][:4]) / 4
        y = sum(p[1] for p in geo["footprint"][:4]) / 4
        lon, lat = to_lonlat.transform(x, y)
        west, south, east, north = geo["lonlat_bounds"]
        assert west < lon < east and south < lat < north
        col, row = ~info["transform"] @ (x, y)  # the footprint centre is the window centre
        c0, r0, w, h = geo["window"]
        assert (col, row) == pytest.approx((c0 + w / 2, r0 + h / 2))


def test_tile_pixels_padding_and_valid_fraction(scene, landsat):
    data, mask, _ = landsat
    grid = tile_scene(scene)
    for t in grid.tiles:
        image = np.asarray(t.image())
        assert image.shape == (336, 336, 3) and image.dtype == np.uint8
        c0, r0, w, h = int(t.window.col_off), int(t.window.row_off), int(t.window.width), int(t.window.height)
        expected = np.moveaxis(data[:, r0:r0 + h, c0:c0 + w], 0, -1)
        assert np.array_equal(image[:h, :w], expected)
        assert not image[h:].any() and not image[:, w:].any()  # padding is black
        assert t.valid_fraction == pytest.approx(mask[r0:r0 + h, c0:c0 + w].mean())
    assert sum(t.valid_fraction * t.window.width * t.window.height for t in grid.tiles) == pytest.approx(mask.sum())
    assert grid.tile_at(2, 2).valid_fraction == 0.0  # bottom-right corner is outside the footprint


def test_thumbnail_is_whole_scene(scene, landsat):
    data, _, _ = landsat
    thumbnail = tile_scene(scene).thumbnail
    assert thumbnail.mode == "RGB" and thumbnail.size == (791, 718)  # small scene: read at full size
    assert np.array_equal(np.asarray(thumbnail), np.moveaxis(data, 0, -1))


def test_geojson_is_valid_feature_collection(scene):
    grid = tile_scene(scene, tile=168, drop_empty=True)
    collection = json.loads(json.dumps(grid.to_geojson()))
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == grid.rows * grid.cols == 25
    for feature in features:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert ring_area(ring) > 0  # counter-clockwise exterior ring (RFC 7946 right-hand rule)
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
        props = feature["properties"]
        assert set(props) >= {"row", "col", "window", "valid_fraction", "dropped", "bounds"}
        assert props["dropped"] == (grid.tile_at(props["row"], props["col"]) is None)
    west, south, east, north = collection["bbox"]
    assert all(west <= lon <= east and south <= lat <= north for f in features
               for lon, lat in f["geometry"]["coordinates"][0])


def test_drop_empty_keeps_grid_shape(scene, landsat):
    _, mask, _ = landsat
    kept = tile_scene(scene, tile=168)
    grid = tile_scene(scene, tile=168, drop_empty=True)
    assert (grid.rows, grid.cols) == (kept.rows, kept.cols) == (5, 5)
    empty = [(t.row, t.col) for t in kept.tiles if t.valid_fraction == 0.0]
    assert empty and grid.dropped == empty and grid.num_dropped == len(empty)
    for row, col in empty:
        assert grid.tile_at(row, col) is None
        c0, r0, w, h = tile_to_geo(grid, row, col)["window"]  # dropped cells still locate
        assert not mask[r0:r0 + h, c0:c0 + w].any()
    assert len(grid.tiles) + grid.num_dropped == 25


def test_max_tiles_reads_coarser_level(scene, landsat):
    data, _, _ = landsat
    grid = tile_scene(scene, max_tiles=4)
    assert (grid.rows, grid.cols, grid.downsample) == (2, 2, 2)
    assert grid.gsd == pytest.approx(2 * scene.gsd)
    first = grid.tile_at(0, 0)
    assert (first.window.width, first.window.height) == (672, 672)
    image = np.asarray(first.image())
    assert np.array_equal(image[:10, :10], np.moveaxis(data[:, 0:20:2, 0:20:2], 0, -1))  # nearest decimation
    last = grid.tile_at(1, 1)
    assert (last.window.width, last.window.height) == (791 - 672, 718 - 672)
    assert not np.asarray(last.image())[23:].any()  # 46 rows / 2 = 23 rows of content, then padding
    assert tile_scene(scene, max_tiles=9).downsample == 1


def test_overlap_windows(scene):
    grid = tile_scene(scene, tile=336, overlap=36)
    assert (grid.rows, grid.cols) == (3, 3)
    assert [int(grid.tile_at(0, c).window.col_off) for c in range(3)] == [0, 300, 600]
    assert grid.tile_at(0, 2).window.width == 191


def test_plan_grid_large_scene():
    plan = plan_grid(33000, 40000, tile=336)
    assert (plan.rows, plan.cols, plan.downsample) == (120, 99, 1)  # ~12,000 tiles at full resolution
    fitted = plan_grid(33000, 40000, tile=336, max_tiles=1000)
    assert fitted.rows * fitted.cols <= 1000
    assert fitted.downsample == 4  # ceil(8250/336) x ceil(10000/336) = 25 x 30 = 750 tiles
    finer = fitted.downsample - 1  # the smallest downsample that fits: one step finer does not
    assert math.ceil(33000 / finer / 336) * math.ceil(40000 / finer / 336) > 1000


@pytest.mark.parametrize("kwargs", [{"tile": 0}, {"tile": 336, "overlap": 336}, {"tile": 336, "overlap": -1},
                                    {"max_tiles": 0}])
def test_bad_grid_options(scene, kwargs):
    with pytest.raises(InputError):
        tile_scene(scene, **kwargs)


def test_tile_to_geo_out_of_grid(scene):
    with pytest.raises(InputError, match="outside the 3x3 grid"):
        tile_to_geo(tile_scene(scene), 3, 0)
