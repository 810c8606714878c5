import json
import subprocess
import sys

from PIL import Image

from longllava.cli import main


def ask_json(capsys, *args):
    assert main(["ask", "--model", "tiny-random", "--max-new-tokens", "4", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_ask_single_image_real_pathology(capsys, fixtures):
    out = ask_json(capsys, "--image", str(fixtures / "pathology" / "ihc_colon.png"), "--question", "What stain is this?")
    assert set(out) >= {"answer", "num_images", "num_image_tokens", "num_prompt_tokens", "seconds"}
    assert out["num_images"] == 1 and out["num_image_tokens"] == 144
    assert out["num_prompt_tokens"] > 144 and isinstance(out["answer"], str) and out["answer"]


def test_ask_stack_directory_and_highres(capsys, fixtures, tmp_path):
    source = Image.open(fixtures / "pathology" / "ihc_colon.png")
    for i in range(3):
        source.rotate(90 * i).save(tmp_path / f"frame_{i:02d}.png")
    out = ask_json(capsys, "--stack", str(tmp_path), "--question", "What changes?")
    assert out["num_images"] == 3 and out["num_image_tokens"] == 3 * 144
    # 512x512 -> 2x2 tiles of 336 + the global view
    out = ask_json(capsys, "--highres", str(fixtures / "pathology" / "ihc_colon.png"), "--question", "Where?")
    assert out["num_images"] == 5
    out = ask_json(capsys, "--highres", str(fixtures / "pathology" / "ihc_colon.png"), "--tile", "168", "--question", "Where?")
    assert out["num_images"] == 1 + 16


def test_repeated_image_and_stack_flags_accumulate(capsys, fixtures, tmp_path):
    """``--image a --image b`` asks about both (a repeated flag once replaced the earlier one)."""
    pathology = str(fixtures / "pathology" / "ihc_colon.png")
    Image.open(pathology).rotate(90).save(tmp_path / "rotated.png")
    out = ask_json(capsys, "--image", pathology, "--image", str(tmp_path / "rotated.png"), "--question", "Same?")
    assert out["num_images"] == 2 and out["num_image_tokens"] == 2 * 144
    out = ask_json(capsys, "--image", pathology, str(tmp_path / "rotated.png"), "--image", pathology, "--question", "?")
    assert out["num_images"] == 3
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.open(pathology).rotate(45 * i).save(frames / f"frame_{i}.png")
    out = ask_json(capsys, "--stack", str(frames), "--stack", str(tmp_path / "rotated.png"), "--question", "Changes?")
    assert out["num_images"] == 3 and [t["frame"] for t in out["used"]] == [0, 1, 2]


def test_ask_about_real_ct_volumes_and_a_real_scene(capsys, fixtures):
    out = ask_json(capsys, "--ct", str(fixtures / "ct" / "example_ct.nii.gz"), "--max-slices", "8", "--question", "Lesion?")
    assert out["num_images"] == 8 and out["num_image_tokens"] == 8 * 144
    z = [t["z_mm"] for t in out["used"]]
    assert [t["kind"] for t in out["used"]] == ["frame"] * 8 and z == sorted(z)
    assert out["used"][0]["slice_index"] == 0 and out["used"][-1]["slice_index"] == 111  # first and last of 112 slices
    out = ask_json(capsys, "--ct", str(fixtures / "ct" / "example_ct_dicom"), "--question", "Lesion?")
    assert out["num_images"] == 20  # all 20 DICOM slices (fewer than --max-slices)
    out = ask_json(capsys, "--scene", str(fixtures / "scenes" / "RGB.byte.tif"), "--question", "Ships?")
    tiles = [t for t in out["used"] if t["kind"] == "tile"]
    assert out["num_images"] == 1 + 9 and len(tiles) == 9  # 791x718 at 336 px: 3x3 tiles + global view
    assert all(len(t["lonlat_bounds"]) == 4 for t in tiles)


def test_ask_bad_input_is_a_clear_error(capsys, tmp_path):
    assert main(["ask", "--image", str(tmp_path / "missing.png"), "--question", "?"]) == 2
    assert "image file not found" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["ask", "--image", str(tmp_path / "broken.png"), "--question", "?"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["ask", "--question", "?"]) == 2
    assert "at least one visual input" in capsys.readouterr().err


def test_console_script_runs_info_and_ask(fixtures):
    info = subprocess.run([sys.executable, "-m", "longllava", "info", "--model", "longllava-a13b", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["attention_layers"] == [4, 12, 20, 28]
    ask = subprocess.run(
        [sys.executable, "-m", "longllava", "ask", "--model", "tiny-random", "--image", str(fixtures / "pathology" / "ihc_colon.png"),
         "--question", "What is it?", "--max-new-tokens", "3"],
        capture_output=True, text=True, check=True,
    )
    assert "untrained random weights" in ask.stdout
