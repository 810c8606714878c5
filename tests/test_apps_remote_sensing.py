"""The remote-sensing demo served on a free local port and driven through gradio_client (tiny-random model)."""

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from longllava.apps.remote_sensing import EXAMPLE_SCENE, build_remote_sensing_app
from longllava.domains.remote_sensing.scene import open_scene
from longllava.domains.remote_sensing.tiling import tile_scene, tile_to_geo


@pytest.fixture(scope="module")
def demo(serve_demo):
    with serve_demo(build_remote_sensing_app, "remote-sensing-test", 4) as served:
        yield served


def expected_rows(cells, **tiling):
    with open_scene(EXAMPLE_SCENE) as scene:
        grid = tile_scene(scene, **tiling)
        rows = []
        for row, col in cells:
            geo = tile_to_geo(grid, row, col)
            rows.append([f"r{row}c{col}", ", ".join(map(str, geo["window"])), *[round(v, 5) for v in geo["lonlat_bounds"]]])
        return rows, grid.to_geojson()


def test_scene_upload_grid_geojson_and_answer_with_named_tiles(demo, monkeypatch):
    client = Client(demo.url, verbose=False)
    grid_view, info, tiles, geojson, chat, named = client.predict(
        handle_file(str(EXAMPLE_SCENE)), 336, 4, "", api_name="/load_scene")
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    expected, expected_geojson = expected_rows(cells, tile=336, max_tiles=4)
    assert tiles["data"] == expected
    assert "**RGB.byte.tif**: 791 × 718 px, bands [1, 2, 3] (uint8); CRS EPSG:32618" in info
    assert "Global view + 2 × 2 tiles of 336 px, read at 1/2 to fit the tile limit" in info and "5 images (720 image tokens)" in info
    with open(geojson) as handle:
        assert json.load(handle) == json.loads(json.dumps(expected_geojson))
    with Image.open(grid_view) as picture:
        plain = np.asarray(picture.convert("RGB")).astype(int)
    assert plain.shape[:2] == (718, 791)  # the scene's global view (it is under 1024 px a side)
    assert chat == [] and named["data"] == []

    chat, _, named, cleared = client.predict("Is there a ship in this scene? Answer yes or no.", [], 4, api_name="/ask")
    assert cleared == "" and "based on the global view + 2 × 2 tiles of 336 px" in demo.text(chat[1])

    # only generation is replaced: protocol, processor and wiring run as they are
    monkeypatch.setattr(demo.llava, "answer_prompts", lambda prompts, images, *generation: ["The ship is in row 1 column 0."])
    chat, marked_view, named, _ = client.predict("Which tile contains the ship?", chat, 8, api_name="/ask")
    assert len(chat) == 4
    assert "sent with the first question; names r1c0 (highlighted, bounds below)" in demo.text(chat[3])
    assert named["data"] == [expected[2]]
    with Image.open(marked_view) as picture:
        marked = np.asarray(picture.convert("RGB")).astype(int)
    # r1c0 covers full-resolution pixels x 0-671, y 672-717, and the view is the full-size scene
    assert (marked[700, 100] != plain[700, 100]).any()
    assert (marked[100, 731] == plain[100, 731]).all()  # inside r0c1, not named

    # other controls: smaller tiles give a finer grid
    grid_view, info, tiles, *_ = client.predict(168, 64, "3,2,1", api_name="/retile")
    assert len(tiles["data"]) == 25 and "5 × 5 tiles of 168 px" in info and "bands [3, 2, 1]" in info


def test_bad_scenes_give_messages_and_the_app_keeps_serving(demo, tmp_path):
    client = Client(demo.url, verbose=False)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"this is not a GeoTIFF" * 100)
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(str(broken)), 336, 4, "", api_name="/load_scene")
    message = str(raised.value)
    assert message.startswith("broken.tif: not a raster GDAL can read") and "Traceback" not in message
    with pytest.raises(AppError, match=r"band\(s\) \[7\] do not exist; the scene has bands 1..3"):
        client.predict(handle_file(str(EXAMPLE_SCENE)), 336, 4, "1,2,7", api_name="/load_scene")
    with pytest.raises(AppError, match="load a scene first"):
        client.predict("Which tile?", [], 4, api_name="/ask")
    _, info, tiles, *_ = client.predict(336, 4, "", api_name="/load_example_scene")
    assert len(tiles["data"]) == 4 and "RGB.byte.tif" in info
