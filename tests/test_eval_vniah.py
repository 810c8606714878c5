"""V-NIAH: haystacks from a real CT and a real scene, needle placement by depth, scoring, heat map."""

import json
from pathlib import Path

import numpy as np
import pytest

from longllava.cli import main
from longllava.errors import InputError
from longllava.eval.vniah import (VniahConfig, haystack_kind, needle_found, open_haystack,
                                  score_vniah, spread_indices, vniah_items)
from longllava.eval.needles import NEEDLE_COLOURS

FIXTURES = Path(__file__).parent / "fixtures"
CT = FIXTURES / "ct" / "example_ct.nii.gz"  # 112 axial slices
SCENE = FIXTURES / "scenes" / "RGB.byte.tif"  # 791 x 718: a 3 x 3 grid of 336 px tiles, two all-nodata


@pytest.fixture(scope="module")
def ct_haystack():
    return open_haystack(CT)


def test_spread_indices_keep_the_ends_or_repeat_a_short_source():
    assert spread_indices(112, 4) == [0, 37, 74, 111]
    assert spread_indices(112, 1) == [0]
    assert spread_indices(3, 7) == [0, 1, 2, 0, 1, 2, 0]


def test_haystack_kind_from_the_path():
    assert haystack_kind(CT) == "ct" and haystack_kind(FIXTURES / "ct" / "example_ct_dicom") == "ct"
    assert haystack_kind(SCENE) == "scene" and haystack_kind(SCENE, "ct") == "ct"
    with pytest.raises(InputError, match="auto, ct or scene"):
        haystack_kind(SCENE, "video")


def test_needle_is_drawn_at_the_depth_into_the_ct_slice_stack(ct_haystack):
    config = VniahConfig(data=str(CT), out="unused", lengths=[2, 4], depths=[0.0, 0.5, 1.0])
    items = vniah_items(ct_haystack, config)
    assert [item.id for item in items][:3] == ["n2-depth0-s0", "n2-depth0.5-s0", "n2-depth1-s0"]
    for item in items:
        n, depth = item.fields["n"], item.fields["depth"]
        message = item.message()
        plain, traces = ct_haystack.take(n)
        index = item.fields["needle_index"]
        assert index == round(depth * (n - 1))
        colour = np.array(NEEDLE_COLOURS[item.fields["colour"]], dtype=np.uint8)
        for position, (shown, original) in enumerate(zip(message.images, plain)):
            shown, original = np.asarray(shown), np.asarray(original)
            has_mark = (shown == colour).all(axis=-1).sum() >= 4
            assert has_mark == (position == index)  # the colour appears on the needle slice only
            assert (shown == original).all() == (position != index)
        assert message.text.count("<image>") == n and message.text.startswith("<vid>")
        assert [t.get("needle") for t in message.trace] == [
            item.fields["colour"] if k == index else None for k in range(n)]
        z = [t["z_mm"] for t in message.trace]
        assert z == sorted(z) and [t.slice_index for t in traces] == spread_indices(112, n)
    # the same (seed, N, depth, sample) asks the same question again (resume, shards)
    again = vniah_items(ct_haystack, config)[5]
    again.message()
    assert (again.fields["colour"], again.fields["needle_index"]) == (
        items[5].fields["colour"], items[5].fields["needle_index"])


def test_scene_haystack_takes_tiles_in_raster_order_without_empty_ones():
    haystack = open_haystack(SCENE)
    # the rotated footprint leaves the bottom-left and bottom-right tiles without data
    assert haystack.kind == "scene" and haystack.count == 7
    images, traces = haystack.take(3)
    assert [(t.row, t.col) for t in traces] == [(0, 0), (1, 0), (2, 1)]
    assert all(image.size == (336, 336) for image in images)


def test_bad_lengths_and_depths_are_input_errors(ct_haystack):
    with pytest.raises(InputError, match=r"depths must lie in \[0, 1\]"):
        vniah_items(ct_haystack, VniahConfig(data=str(CT), out="x", lengths=[2], depths=[1.5]))
    with pytest.raises(InputError, match="at least 1 image"):
        vniah_items(ct_haystack, VniahConfig(data=str(CT), out="x", lengths=[0], depths=[0.0]))


@pytest.mark.parametrize("answer, colour, found", [
    ("Red.", "red", True), ("The square is BLUE", "blue", True), ("blue, not red", "red", False),
    ("", "green", False), ("reddish", "red", False)])
def test_needle_found_reads_the_first_colour_named(answer, colour, found):
    assert needle_found(answer, colour) is found


def test_score_vniah_grid_by_depth_and_length():
    records = [{"n": 2, "depth": 0.0, "text": "red", "colour": "red"},
               {"n": 2, "depth": 0.0, "text": "blue", "colour": "red"},
               {"n": 4, "depth": 0.0, "text": "green", "colour": "green"},
               {"n": 2, "depth": 1.0, "text": "yellow", "colour": "blue"}]
    result = score_vniah(records, [2, 4], [0.0, 1.0], {"kind": "ct"})
    assert result.accuracy == [[50.0, 100.0], [0.0, None]]
    assert result.counts == [[2, 1], [1, 0]] and result.overall == 50.0


def test_vniah_cli_on_a_real_ct_writes_heatmap_json_and_predictions(tmp_path, capsys):
    out = tmp_path / "vniah"
    assert main(["eval", "vniah", "--model", "tiny-random", "--device", "cpu", "--data", str(CT),
                 "--out", str(out), "--lengths", "2,4", "--depths", "0,1", "--max-new-tokens", "1",
                 "--batch-size", "2"]) == 0
    assert "V-NIAH over 112 ct image(s)" in capsys.readouterr().out
    results = json.loads((out / "vniah.json").read_text(encoding="utf-8"))
    assert results["lengths"] == [2, 4] and results["depths"] == [0.0, 1.0]
    assert results["counts"] == [[1, 1], [1, 1]] and results["haystack"]["images"] == 112
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["n"], r["depth"], r["needle_index"]) for r in records] == [
        (2, 0.0, 0), (2, 1.0, 1), (4, 0.0, 0), (4, 1.0, 3)]
    grid = [[100.0 * needle_found(r["text"], r["colour"]) for r in records[k::2]] for k in (0, 1)]
    assert results["accuracy"] == grid
    assert (out / "vniah_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vniah_cli_haystack_defaults_to_the_package_example_ct():
    from longllava.cli import build_parser
    from longllava.examples import EXAMPLE_CT

    args = build_parser().parse_args(["eval", "vniah", "--out", "runs/v"])
    assert Path(args.data) == EXAMPLE_CT and EXAMPLE_CT.resolve() == CT.resolve()  # the fixture links to it
    assert build_parser().parse_args(["eval", "vniah", "--out", "o", "--data", str(SCENE)]).data == str(SCENE)
    with pytest.raises(SystemExit):  # the benchmarks still need their data
        build_parser().parse_args(["eval", "vqa-rad", "--out", "o"])
