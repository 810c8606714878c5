"""FIT-RS, FIT-RSFG-Bench and STAR readers on small fixtures in the real formats."""

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from longllava.core.records import RecordErrors
from longllava.domains.remote_sensing.datasets import (
    parse_dota_split_name,
    read_dota_annfile,
    read_fit_rs_instructions,
    read_fit_rsfg_bench,
    read_star,
)
from longllava.domains.remote_sensing.scene import NotGeoreferencedWarning, open_scene
from longllava.domains.remote_sensing.tiling import tile_scene
from longllava.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "remote_sensing"


def test_parse_dota_split_name():
    assert parse_dota_split_name("P0003__512__0___412.png") == {
        "source_scene": "P0003", "tile_size": 512, "x_offset": 0, "y_offset": 412}
    assert parse_dota_split_name("imgs/P2805__1.0__1648___824.png")["tile_size"] == 1.0
    assert parse_dota_split_name("my__scene__512__824___0.png")["source_scene"] == "my__scene"
    assert parse_dota_split_name("scene_17.png") is None


def test_fit_rs_instructions():
    records = list(read_fit_rs_instructions(FIXTURES / "fit_rs_instructions.json", "/data/fitrs"))
    assert [r.id for r in records] == ["P0003__512__0___412_det", "P0003__512__0___412_vqa", "P1088__512__824___0_rel"]
    first = records[0]
    assert first.images == [Path("/data/fitrs/P0003__512__0___412.png")]
    assert first.answer == "There are 2 small-vehicle in the image: {<12><34><3><2>|<45>}, {<61><70><3><2>|<-30>}."
    assert first.question == "[detection] Detect all small-vehicle in the image."
    assert first.source.endswith("fit_rs_instructions.json#0") and first.meta["dataset"] == "FIT-RS"
    second = records[1]  # no placeholder in the data: one is put before the first turn
    assert second.conversations[0]["value"] == "<image>\n[vqa] Is there a bridge over the river?"
    assert second.num_placeholders() == 1 and len(second.conversations) == 4
    assert "{<20><20><8><8>|<0>}" in records[2].question


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("record, field", [
    ({"conversations": [{"from": "human", "value": "<image>\nq"}]}, "image"),
    ({"image": "a.png", "conversations": []}, "conversations"),
    ({"image": "a.png", "conversations": [{"from": "bot", "value": "x"}]}, "conversations[0]"),
    ({"image": "a.png", "conversations": [{"from": "gpt", "value": "x"}]}, "conversations[0].from"),
    ({"image": "a.png", "conversations": [{"from": "human", "value": "<image><image> q"}]}, "conversations"),
])
def test_fit_rs_bad_records(tmp_path, record, field):
    good = {"image": "b.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    path = write_json(tmp_path / "train.json", [good, record])
    with pytest.raises(InputError, match=re.escape(f"train.json record 1: field '{field}'")):
        list(read_fit_rs_instructions(path, tmp_path))
    errors = RecordErrors(skip_bad=True)
    kept = list(read_fit_rs_instructions(path, tmp_path, errors=errors))
    assert len(kept) == 1 and errors.summary()["num_bad"] == 1
    assert len(list(read_fit_rs_instructions(path, tmp_path, skip_bad=True))) == 1


def test_fit_rs_not_a_list(tmp_path):
    with pytest.raises(InputError, match="expected a JSON list"):
        list(read_fit_rs_instructions(write_json(tmp_path / "x.json", {"a": 1}), tmp_path))
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(InputError, match="not valid JSON"):
        list(read_fit_rs_instructions(tmp_path / "broken.json", tmp_path))


def test_fit_rsfg_bench():
    records = list(read_fit_rsfg_bench(FIXTURES / "test_FITRS_vqa_eval.jsonl", "/data/imgv2_split_512_100_vaild"))
    assert [r.id for r in records] == ["0", "1", "2", "3"]
    first = records[0]
    assert first.images == [Path("/data/imgv2_split_512_100_vaild/P0003__512__0___412.png")]
    assert first.conversations[0]["value"] == "<image>\nAre there any ships in the image? Answer yes or no."
    assert first.answer == "No"
    assert first.meta == {"dataset": "FIT-RSFG-Bench", "question_id": 0, "category": "object existence",
                          "ground_truth": "No", "source_scene": "P0003", "tile_size": 512, "x_offset": 0,
                          "y_offset": 412}
    assert records[2].meta["x_offset"] == 824 and records[2].meta["source_scene"] == "P1088"
    assert records[3].meta["source_scene"] is None  # not a DOTA split name


def test_fit_rsfg_bench_bad_lines(tmp_path):
    lines = FIXTURES.joinpath("test_FITRS_vqa_eval.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["ground_truth"]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(bad), "{not json", lines[2]]) + "\n")
    with pytest.raises(InputError, match="bench.jsonl record 1: field 'ground_truth'"):
        list(read_fit_rsfg_bench(path, tmp_path))
    errors = RecordErrors(skip_bad=True)
    assert [r.id for r in read_fit_rsfg_bench(path, tmp_path, errors=errors)] == ["0", "2"]
    assert errors.summary()["num_bad"] == 2 and "record 2: field '(line)'" in errors.summary()["bad"][1]


def by_id(records):
    return {r.id: r for r in records}


def test_star_questions_exact_answers():
    records = by_id(read_star(FIXTURES / "star"))
    assert len(records) == 2 * 3 + 2 * 1  # count + tiles question per class present
    count = records["P0001-count-small-vehicle"]
    assert count.answer == "3" and count.meta["answer"] == 3 and count.meta["num_difficult"] == 1
    assert count.images == [FIXTURES / "star" / "images" / "P0001.png"]
    assert count.question == "How many small vehicle objects are in this scene? Answer with a number."
    tiles = records["P0001-tiles-small-vehicle"]
    assert (tiles.meta["rows"], tiles.meta["cols"], tiles.meta["downsample"]) == (3, 3, 1)
    assert tiles.answer == "(0, 0), (0, 1)"
    assert tiles.meta["count_per_tile"] == {"0,0": 2, "0,1": 1}
    assert tiles.meta["rows_with_class"] == [0] and tiles.meta["cols_with_class"] == [0, 1]
    assert records["P0001-tiles-storage_tank"].answer == "(1, 1)"
    assert records["P0001-tiles-ship"].answer == "(1, 2)"
    assert records["P0002-count-boat"].answer == "2"
    assert records["P0002-tiles-boat"].answer == "(0, 0), (2, 0)"  # 512 x 768 -> 3 rows x 2 cols
    assert "3 rows and 2 columns" in records["P0002-tiles-boat"].question


def test_star_grid_matches_tile_scene():
    records = by_id(read_star(FIXTURES / "star", tile=168, max_tiles=9))
    meta = records["P0001-tiles-ship"].meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_scene(FIXTURES / "star" / "images" / "P0001.png") as scene:
            grid = tile_scene(scene, tile=168, max_tiles=9)
    assert (meta["rows"], meta["cols"], meta["downsample"]) == (grid.rows, grid.cols, grid.downsample) == (3, 3, 2)
    # ship centre (730, 670): full-resolution window of cell (1, 2) spans x 672..800, y 336..672
    c0, r0, w, h = (int(v) for v in grid.tile_at(1, 2).window.flatten())
    assert c0 <= 730 < c0 + w and r0 <= 670 < r0 + h
    assert records["P0001-tiles-ship"].answer == "(1, 2)"


def test_dota_annfile_header_and_errors(tmp_path):
    objects = read_dota_annfile(FIXTURES / "star" / "annfiles" / "P0001.txt")
    assert len(objects) == 5 and objects[0].label == "small-vehicle" and objects[0].center == (25.0, 20.0)
    bad = tmp_path / "bad.txt"
    bad.write_text("imagesource:GoogleEarth\n1 2 3 4 5 6 7 8 ship 0\n1 2 3 4 5 six 7 8 ship 0\n")
    with pytest.raises(InputError, match="bad.txt line 3: a corner coordinate"):
        read_dota_annfile(bad)
    bad.write_text("1 2 3 4 5 6 7 8\n")
    with pytest.raises(InputError, match="line 1: expected"):
        read_dota_annfile(bad)


def test_star_bad_scene_is_reported_whole(tmp_path):
    root = tmp_path / "star"
    shutil.copytree(FIXTURES / "star", root)
    with (root / "annfiles" / "P0002.txt").open("a") as annfile:
        annfile.write("1 2 3 4 5 6 7 8 boat 7\n")
    (root / "annfiles" / "P0003.txt").write_text("1 2 3 4 5 6 7 8 ship 0\n")  # no image
    with pytest.raises(InputError, match="P0002.txt record P0002: field 'annotations'.*difficulty"):
        list(read_star(root))
    errors = RecordErrors(skip_bad=True)
    records = list(read_star(root, errors=errors))
    assert {r.meta["scene"] for r in records} == {"P0001"}  # no partial answers for a bad scene
    assert errors.summary()["num_bad"] == 2 and "field 'image'" in errors.summary()["bad"][1]
    with pytest.raises(InputError, match="no 'annfiles' folder"):
        list(read_star(tmp_path))
