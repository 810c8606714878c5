"""``longllava scene-tiles`` on the real Landsat scene, its errors, and a tiny ``bench scene`` run."""

import json
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from longllava.cli import main

LANDSAT = Path(__file__).parent / "fixtures" / "scenes" / "RGB.byte.tif"


def test_scene_tiles_writes_tiles_thumbnail_geojson(tmp_path, capsys):
    out = tmp_path / "tiles"
    assert main(["scene-tiles", str(LANDSAT), "--out", str(out), "--tile", "336", "--drop-empty", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["cols"], summary["tile"]) == (3, 3, 336)
    assert summary["crs"] == "EPSG:32618" and summary["downsample"] == 1
    assert summary["bounds"] == [101985.0, 2611485.0, 339315.0, 2826915.0]
    assert summary["gsd"] > 290 and len(summary["lonlat_bounds"]) == 4
    with rasterio.open(LANDSAT) as dataset:
        expected = np.moveaxis(dataset.read(window=((336, 672), (336, 672))), 0, -1)
        mask = dataset.dataset_mask()
    empty = [[r, c] for r in range(3) for c in range(3) if not mask[r * 336:(r + 1) * 336, c * 336:(c + 1) * 336].any()]
    assert summary["dropped"] == empty and summary["num_dropped"] == len(empty) > 0
    assert summary["num_tiles"] + summary["num_dropped"] == 9
    written = sorted(p.name for p in out.glob("tile_*.png"))
    assert written == [f"tile_r{r:03d}_c{c:03d}.png" for r in range(3) for c in range(3) if [r, c] not in empty]
    assert np.array_equal(np.asarray(Image.open(out / "tile_r001_c001.png")), expected)
    assert Image.open(out / "thumbnail.png").size == (791, 718)
    collection = json.loads((out / "grid.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 9
    assert json.loads((out / "summary.json").read_text())["num_tiles"] == summary["num_tiles"]


def test_scene_tiles_human_summary_and_options(tmp_path, capsys):
    out = tmp_path / "coarse"
    assert main(["scene-tiles", str(LANDSAT), "--out", str(out), "--max-tiles", "4", "--bands", "3,2,1"]) == 0
    text = capsys.readouterr().out
    assert "2 x 2 tiles of 336 px" in text and "downsample 2" in text
    assert len(list(out.glob("tile_*.png"))) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bands"] == [3, 2, 1]


def test_scene_tiles_bad_input_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "notes.tif"
    bad.write_text("not a raster")
    assert main(["scene-tiles", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "notes.tif: not a raster" in capsys.readouterr().err
    assert main(["scene-tiles", str(LANDSAT), "--out", str(tmp_path / "o"), "--bands", "1,2,9"]) == 2
    assert "band(s) [9] do not exist" in capsys.readouterr().err


def test_bench_scene_small(tmp_path, capsys):
    assert main(["bench", "scene", "--size", "700", "--workdir", str(tmp_path), "--repeat", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["grid"] == "3 x 3 tiles of 336 px" and report["tiles_read"] == 9
    assert report["tiles_per_s"] > 0 and report["floor_tiles_per_s"] > 0 and report["peak_rss_mb"] > 0
    assert 0.49 < report["valid_fraction"] < 0.51  # the diamond footprint covers half the scene
    assert not list(tmp_path.iterdir())  # the generated scene is removed


def test_ask_repeated_scene_flags_accumulate(capsys):
    """``--scene a --scene b`` is two rasters (once the second replaced the first): without
    --time-series that is the clear error, not an answer about b alone."""
    assert main(["ask", "--model", "tiny-random", "--scene", str(LANDSAT), "--scene", str(LANDSAT), "--question", "?"]) == 2
    assert "2 --scene rasters: several dates of one area are read with --time-series" in capsys.readouterr().err
