"""``longllava ask --video`` (videos, cine DICOM) and ``ask --scene ... --time-series`` (tiny-random model)."""

import json

import numpy as np
from rasterio.transform import from_origin

from longllava.cli import main

UTM = "EPSG:32633"


def ask_json(capsys, *args):
    assert main(["ask", "--model", "tiny-random", "--max-new-tokens", "2", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_ask_about_a_video_and_a_cine_loop(capsys, clips, tmp_path):
    video = tmp_path / "clip.mp4"
    clips.write_mp4(video, list(range(10)))  # 4 fps: 0 .. 2.25 s
    out = ask_json(capsys, "--video", str(video), "--question", "What happens?")
    assert out["num_images"] == 3 and out["num_image_tokens"] == 3 * 144
    assert [(t["kind"], t["frame"], t["index"], t["time_s"]) for t in out["used"]] == [
        ("frame", 0, 0, 0.0), ("frame", 1, 4, 1.0), ("frame", 2, 8, 2.0)]
    out = ask_json(capsys, "--video", str(video), "--fps", "4", "--max-frames", "4", "--question", "What happens?")
    assert [t["time_s"] for t in out["used"]] == [0.0, 0.75, 1.5, 2.25]
    assert main(["ask", "--model", "tiny-random", "--max-new-tokens", "2", "--video", str(video), "--question", "?"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "frames used at (s): 0, 1, 2"

    cine = tmp_path / "echo.dcm"
    clips.write_cine(cine, frame_time_ms=250.0, patient="Doe^Jane")  # 5 frames, 0 .. 1 s
    out = ask_json(capsys, "--video", str(cine), "--fps", "2", "--question", "Is the ventricle contracting?")
    assert [t["time_s"] for t in out["used"]] == [0.0, 0.5, 1.0] and [t["index"] for t in out["used"]] == [0, 2, 4]
    assert "Doe" not in json.dumps(out)


def dated(write_geotiff, tmp_path, name, value, shift=0, bands=3):
    data = np.full((bands, 40, 40), value, np.uint8)
    return str(write_geotiff(tmp_path / name, data, UTM, from_origin(500000.0 + 30 * shift, 5000000.0, 30.0, 30.0)))


def test_ask_about_dated_scenes_as_time_stacks(capsys, write_geotiff, tmp_path):
    paths = [dated(write_geotiff, tmp_path, "site_2022-06-30.tif", 90), dated(write_geotiff, tmp_path, "site_2021-06-30.tif", 60),
             dated(write_geotiff, tmp_path, "site_2023-06-30.tif", 120, shift=10)]
    out = ask_json(capsys, "--scene", *paths, "--time-series", "--tile", "20", "--max-tiles", "4", "--question", "What changed?")
    assert out["num_images"] == 3 * (1 + 4)  # the global views, then 2 x 2 tile positions, each a stack of 3 dates
    frames = out["used"]
    assert [t["date"] for t in frames[:3]] == ["2021-06-30", "2022-06-30", "2023-06-30"]
    assert "row" not in frames[0] and frames[0]["crs"] == UTM and len(frames[0]["lonlat_bounds"]) == 4
    assert [(t["row"], t["col"], t["date"]) for t in frames[3:6]] == [(0, 0, "2021-06-30"), (0, 0, "2022-06-30"),
                                                                       (0, 0, "2023-06-30")]
    assert frames[3]["window"] == [0, 0, 20, 20] and frames[3]["path"].endswith("site_2021-06-30.tif")
    assert main(["ask", "--model", "tiny-random", "--max-new-tokens", "2", "--scene", *paths, "--time-series",
                 "--time-series-mode", "global", "--question", "?"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "dates used: 2021-06-30, 2022-06-30, 2023-06-30"

    out = ask_json(capsys, "--scene", str(tmp_path), "--time-series", "--time-series-mode", "global",
                   "--dates", "2001-01-01,2003-01-01,2002-01-01", "--bounds", "500000,4999400,500600,5000000",
                   "--question", "What changed?")
    # the folder's rasters in name order get the given dates; the grid is cropped to 20 x 20 px
    assert [t["date"] for t in out["used"]] == ["2001-01-01", "2002-01-01", "2003-01-01"]
    assert [t["path"].rsplit("_", 1)[-1] for t in out["used"]] == ["2021-06-30.tif", "2023-06-30.tif", "2022-06-30.tif"]
    assert out["used"][0]["bounds"] == [500000.0, 4999400.0, 500600.0, 5000000.0]


def test_bad_clips_and_time_series_are_clear_errors(capsys, write_geotiff, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all" * 50)
    assert main(["ask", "--video", str(corrupt), "--question", "?"]) == 2
    assert "corrupt.mp4: the video cannot be read" in capsys.readouterr().err
    a = dated(write_geotiff, tmp_path, "a_2020-01-01.tif", 10)
    b = dated(write_geotiff, tmp_path, "b_2021-01-01.tif", 20, bands=1)
    assert main(["ask", "--scene", a, b, "--question", "?"]) == 2
    assert "2 --scene rasters: several dates of one area are read with --time-series" in capsys.readouterr().err
    assert main(["ask", "--scene", a, b, "--time-series", "--question", "?"]) == 2
    assert "different band counts (a_2020-01-01.tif: 3, b_2021-01-01.tif: 1)" in capsys.readouterr().err
    assert main(["ask", "--scene", a, "--dates", "2020-01-01", "--question", "?"]) == 2
    assert "--dates: several dates of one area are read with --time-series" in capsys.readouterr().err
