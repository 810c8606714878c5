"""Multi-date scenes: rasters of one area in different CRSs / extents on one grid, as time stacks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from longllava.core import protocol
from longllava.domains.remote_sensing.timeseries import open_time_series, raster_date
from longllava.domains.remote_sensing.visuals import time_series_visuals
from longllava.errors import InputError

UTM = "EPSG:32633"
LEFT, TOP, RES, SIDE = 500000.0, 5000000.0, 30.0, 40  # the reference grid: 40 x 40 pixels of 30 m
SPLIT_X = LEFT + 20 * RES  # easting between grid columns 19 and 20


def halves(left_value, right_value, split, x):
    return np.where(x < split, left_value, right_value).astype(np.uint8)


@pytest.fixture
def three_dates(tmp_path, write_geotiff):
    """A: the reference (UTM, 2021-06-30 in its TIFF tag), halves 60 | 180 split at SPLIT_X.
    B: lon/lat (EPSG:4326), wider, date in its file name (2020-01-15), halves 100 | 220 at the same easting.
    C: UTM shifted 10 columns east and 5 rows north (2022-03-01 in its name), band 1 = a pixel counter."""
    cols = LEFT + (np.arange(SIDE) + 0.5) * RES
    a_band = np.broadcast_to(halves(60, 180, SPLIT_X, cols), (SIDE, SIDE))
    a = np.stack([a_band, np.full((SIDE, SIDE), 10, np.uint8), np.full((SIDE, SIDE), 20, np.uint8)])
    path_a = write_geotiff(tmp_path / "a.tif", a, UTM, from_origin(LEFT, TOP, RES, RES),
                   tags={"TIFFTAG_DATETIME": "2021:06:30 10:12:00"})

    west, south, east, north = transform_bounds(UTM, "EPSG:4326", LEFT, TOP - SIDE * RES, LEFT + SIDE * RES, TOP)
    step = 0.0001
    west, north = west - 0.003, north + 0.003
    width, height = int((east + 0.003 - west) / step), int((north - (south - 0.003)) / step)
    lons = west + (np.arange(width) + 0.5) * step
    lats = north - (np.arange(height) + 0.5) * step
    grid_lon, grid_lat = np.meshgrid(lons, lats)
    eastings, _ = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(grid_lon, grid_lat)
    b_band = halves(100, 220, SPLIT_X, eastings)
    b = np.stack([b_band, np.full_like(b_band, 30), np.full_like(b_band, 40)])
    path_b = write_geotiff(tmp_path / "b_20200115.tif", b, "EPSG:4326", from_origin(west, north, step, step))

    counter = (np.arange(SIDE * SIDE).reshape(SIDE, SIDE) % 250 + 1).astype(np.uint8)
    c = np.stack([counter, np.full_like(counter, 50), np.full_like(counter, 60)])
    path_c = write_geotiff(tmp_path / "c_2022-03-01.tif", c, UTM, from_origin(LEFT + 10 * RES, TOP + 5 * RES, RES, RES))
    return path_a, path_b, path_c, counter


def test_dates_from_tags_and_file_names(tmp_path):
    assert raster_date(tmp_path / "x.tif", {"TIFFTAG_DATETIME": "2021:06:30 10:12:00"}) == "2021-06-30"
    assert raster_date(tmp_path / "S2A_20200115T101021.tif", {}) == "2020-01-15"
    assert raster_date(tmp_path / "scene_2022_03_01.tif", {}) == "2022-03-01"
    assert raster_date(tmp_path / "scene_20221301.tif", {}) is None  # month 13: not a date
    assert raster_date(tmp_path / "scene.tif", {"acquisitionDateTime": "2019-05-04T11:00:00Z"}) == "2019-05-04"


def test_rasters_in_other_crs_and_extent_land_on_one_grid(three_dates):
    path_a, path_b, path_c, counter = three_dates
    with open_time_series([path_a, path_b, path_c]) as series:
        assert series.dates == ["2020-01-15", "2021-06-30", "2022-03-01"]  # sorted by date
        assert [p.name for p in series.paths] == ["b_20200115.tif", "a.tif", "c_2022-03-01.tif"]
        assert series.crs.to_string() == UTM and (series.width, series.height) == (SIDE, SIDE)
        assert series.bounds == pytest.approx((LEFT, TOP - SIDE * RES, LEFT + SIDE * RES, TOP))
        b_view, a_view, c_view = (np.asarray(image) for image in series.global_views())
    assert b_view.shape == (SIDE, SIDE, 3)
    # A: the reference itself
    assert (a_view[:, :20, 0] == 60).all() and (a_view[:, 20:, 0] == 180).all()
    assert (a_view[..., 1] == 10).all() and (a_view[..., 2] == 20).all()
    # B, reprojected from lon/lat: the split falls between the same columns (1 px tolerance at the edge)
    assert (b_view[:, :19, 0] == 100).all() and (b_view[:, 21:, 0] == 220).all()
    assert (b_view[..., 1] == 30).all()
    # C, shifted 10 columns east and 5 rows north: grid pixel (r, c) is C's (r + 5, c - 10); beyond it nothing
    assert np.array_equal(c_view[:35, 10:, 0], counter[5:, :30])
    assert (c_view[:, :10] == 0).all() and (c_view[35:] == 0).all()


def test_tile_positions_become_stacks_of_dates(three_dates):
    path_a, path_b, path_c, counter = three_dates
    with open_time_series([path_a, path_b, path_c]) as series:
        visuals = time_series_visuals(series, "tiles", tile=20, max_tiles=None)
        message = protocol.user_message(visuals, "What changed?")
    assert len(visuals) == 1 + 4  # global views, then 2 x 2 tile positions
    stack = protocol.render_stack(3)
    assert message.text == "\n".join([stack] * 5 + ["What changed?"])
    tiles = message.trace[3:]
    assert [(t["row"], t["col"], t["date"]) for t in tiles[:3]] == [
        (0, 0, "2020-01-15"), (0, 0, "2021-06-30"), (0, 0, "2022-03-01")]
    first = tiles[0]
    assert first["window"] == [0, 0, 20, 20] and first["crs"] == UTM and first["path"].endswith("b_20200115.tif")
    assert first["bounds"] == pytest.approx([LEFT, TOP - 20 * RES, LEFT + 20 * RES, TOP])
    west, south, east, north = first["lonlat_bounds"]
    assert 14.99 < west < east < 15.02 and 45.1 < south < north < 45.2
    # the tile at row 1, col 1 of date 3 holds C's pixels (rows 25..39, cols 10..29), then 5 empty rows
    image = np.asarray(message.images[message.trace.index(next(
        t for t in message.trace if t.get("row") == 1 and t.get("col") == 1 and t["date"] == "2022-03-01"))])
    assert np.array_equal(image[:15, :, 0], counter[25:, 10:30]) and (image[15:] == 0).all()
    assert message.trace[0]["kind"] == "frame" and "row" not in message.trace[0]
    with open_time_series([path_a, path_b, path_c]) as series:
        global_only = time_series_visuals(series, "global")
    assert len(global_only) == 1 and len(global_only[0].frames) == 3


def test_bounds_crop_the_grid(three_dates):
    path_a, path_b, _, _ = three_dates
    with open_time_series([path_a, path_b], bounds=(LEFT + 300, TOP - 600, LEFT + 900, TOP)) as series:
        assert (series.width, series.height) == (20, 20)
        a_view = np.asarray(series.global_views()[1])
    assert (a_view[:, :10, 0] == 60).all() and (a_view[:, 10:, 0] == 180).all()


def test_non_uint8_dates_share_one_stretch(tmp_path, write_geotiff):
    low = np.full((1, 10, 10), 1000, np.uint16)
    high = np.full((1, 10, 10), 3000, np.uint16)
    low[0, :, :5] = 0
    transform = from_origin(LEFT, TOP, RES, RES)
    paths = [write_geotiff(tmp_path / "d_2020-01-01.tif", low, UTM, transform, nodata=0),
             write_geotiff(tmp_path / "d_2020-02-01.tif", high, UTM, transform, nodata=0)]
    with open_time_series(paths, percentiles=(0, 100)) as series:
        first, second = (np.asarray(image) for image in series.global_views())
        assert series.summary()["stretch"]["low"] == [1000.0]
    assert (first[:, 5:] == 0).all() and (second == 255).all()  # 1000 -> 0 and 3000 -> 255 on both dates
    assert (first[:, :5] == 0).all()  # nodata stays black


def test_bad_time_series_give_clear_errors(tmp_path, three_dates, write_geotiff):
    path_a, _, _, _ = three_dates
    far = write_geotiff(tmp_path / "far_2020-01-01.tif", np.ones((3, 10, 10), np.uint8), UTM,
                from_origin(LEFT + 100000, TOP, RES, RES))
    with pytest.raises(InputError, match="far_2020-01-01.tif: the raster does not overlap the common grid"):
        open_time_series([path_a, far])
    one_band = write_geotiff(tmp_path / "gray_2020-01-01.tif", np.ones((1, 10, 10), np.uint8), UTM,
                     from_origin(LEFT, TOP, RES, RES))
    with pytest.raises(InputError, match=r"different band counts \(a.tif: 3, gray_2020-01-01.tif: 1\)"):
        open_time_series([path_a, one_band])
    undated = write_geotiff(tmp_path / "undated.tif", np.ones((3, 10, 10), np.uint8), UTM, from_origin(LEFT, TOP, RES, RES))
    with pytest.raises(InputError, match="undated.tif: no acquisition date"):
        open_time_series([path_a, undated])
    with open_time_series([path_a, undated], dates=["2021-06-30", "2019-12-31"]) as series:
        assert series.dates == ["2019-12-31", "2021-06-30"]
    with pytest.raises(InputError, match="1 dates given for 2 rasters"):
        open_time_series([path_a, undated], dates=["2021-06-30"])
    with pytest.raises(InputError, match="at least two rasters"):
        open_time_series([path_a])
    with pytest.raises(InputError, match="raster not found: .*missing.tif"):
        open_time_series([path_a, tmp_path / "missing.tif"])
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(tmp_path / "nocrs_2020-01-01.tif", "w", driver="GTiff", width=4, height=4, count=3,
                           dtype="uint8") as dst:
            dst.write(np.ones((3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="nocrs_2020-01-01.tif: the raster has no CRS"):
        open_time_series([path_a, tmp_path / "nocrs_2020-01-01.tif"])
    with pytest.raises(InputError, match="left < right"):
        open_time_series([path_a, undated], dates=["2021-06-30", "2019-12-31"], bounds=(1, 1, 0, 2))


def test_folder_of_dates_and_bounds_in_lonlat(three_dates, tmp_path):
    path_a, path_b, _, _ = three_dates
    folder = tmp_path / "dates"
    folder.mkdir()
    for path in (path_a, path_b):
        (folder / path.name).write_bytes(path.read_bytes())
    west, south, east, north = transform_bounds(UTM, "EPSG:4326", LEFT + 300, TOP - 600, LEFT + 900, TOP)
    with open_time_series([folder], bounds=(west, south, east, north), bounds_crs="EPSG:4326") as series:
        # the folder's rasters in name order: a.tif is first, so its grid; sorted by date afterwards
        assert [p.name for p in series.paths] == ["b_20200115.tif", "a.tif"]
        assert series.bounds[0] <= LEFT + 300 and series.bounds[2] >= LEFT + 900
        assert series.crs.to_string() == UTM
    with pytest.raises(InputError, match="'EPSG:0' is not a CRS"):
        open_time_series([folder], bounds=(west, south, east, north), bounds_crs="EPSG:0")
