"""The demos' time inputs served on a free local port and driven through gradio_client (tiny-random
model): a clip in the medical demo (frame slider), several dates in the remote-sensing demo (date slider)."""

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from rasterio.transform import from_origin

from longllava.apps.medical import build_medical_app
from longllava.apps.remote_sensing import build_remote_sensing_app

UTM = "EPSG:32633"
LEFT, TOP, RES = 500000.0, 5000000.0, 30.0


@pytest.fixture(scope="module")
def medical(serve_demo):
    with serve_demo(build_medical_app, "medical-time-test", 4) as served:
        yield served


@pytest.fixture(scope="module")
def remote_sensing(serve_demo):
    with serve_demo(build_remote_sensing_app, "remote-sensing-time-test", 4) as served:
        yield served


@pytest.fixture
def three_dates(tmp_path, write_geotiff):
    """Three 40 x 40 px dates of one area (dates in their names), given out of date order; the last
    one (2022-03-01) lies 10 columns east of the first, so the west of the grid is empty on it."""
    def date(name, value, shift=0):
        data = np.full((3, 40, 40), value, np.uint8)
        return write_geotiff(tmp_path / name, data, UTM, from_origin(LEFT + shift * RES, TOP, RES, RES))

    return date("a_2021-06-30.tif", 60), date("b_20200115.tif", 100), date("c_2022-03-01.tif", 200, shift=10)


def image_path(value) -> str:
    return value if isinstance(value, str) else value["value"]["path"] if isinstance(value.get("value"), dict) else value["value"]


def test_clip_upload_frame_slider_and_answer_with_times(medical, clips, tmp_path):
    path = tmp_path / "clip.mp4"
    clips.write_mp4(path, list(range(10)))  # 4 fps, 10 frames: 0 .. 2.25 s
    client = Client(medical.url, verbose=False)
    info, view, slider, chat, used = client.predict([handle_file(str(path))], 1.0, 32, api_name="/load_clip")
    assert "**clip.mp4** (video): 10 frames over 2.25 s; **3 frames** go to the model (432 image tokens)" in info
    assert (slider["maximum"], slider["value"]) == (2, 0) and chat == [] and used["data"] == []
    view = client.predict(2, api_name="/show_frame")
    assert view["label"] == "frame 3 of 3: t = 2.00 s (source frame 8)"
    with Image.open(image_path(view)) as shown:
        assert clips.frame_colour_index(shown.convert("RGB"), 10) == 8

    chat, used, cleared = client.predict("When does the colour change?", [], 4, api_name="/ask_clip")
    assert used["data"] == [[1, 0, 0.0], [2, 4, 1.0], [3, 8, 2.0]]
    assert cleared == "" and "based on 3 frames at 0 to 2 s" in medical.text(chat[1])
    chat, used, _ = client.predict("And then?", chat, 4, api_name="/ask_clip")
    assert len(chat) == 4 and "sent with the first question" in medical.text(chat[3])

    # other sampling: other frames, so a new conversation
    info, _, slider, chat, used = client.predict(4.0, 4, api_name="/sample_clip")
    assert "**4 frames** go to the model" in info and slider["maximum"] == 3 and chat == []


def test_cine_upload_never_shows_patient_identifiers_and_bad_clips_give_messages(medical, clips, tmp_path):
    client = Client(medical.url, verbose=False)
    cine = tmp_path / "echo.dcm"
    clips.write_cine(cine, frame_times_ms=[0, 400, 800, 100, 1200], photometric="YBR_FULL", patient="Doe^Jane")
    info, _, slider, _, _ = client.predict([handle_file(str(cine))], 1.0, 32, api_name="/load_clip")
    assert "**echo.dcm** (cine DICOM): 5 frames over 2.50 s; **3 frames**" in info and slider["maximum"] == 2
    assert "modality US" in info and "Doe" not in info and "998877" not in info

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(AppError) as raised:
        client.predict([handle_file(str(corrupt))], 1.0, 32, api_name="/load_clip")
    assert str(raised.value).startswith("corrupt.mp4: the video cannot be read") and "Traceback" not in str(raised.value)
    untimed = tmp_path / "untimed.dcm"
    clips.write_cine(untimed, patient="Doe^Jane")
    with pytest.raises(AppError, match="untimed.dcm: 5 frame.* with neither frame times") as raised:
        client.predict([handle_file(str(untimed))], 1.0, 32, api_name="/load_clip")
    assert "Doe" not in str(raised.value)
    # the clip loaded before is still there
    assert client.predict(1, api_name="/show_frame")["label"].startswith("frame 2 of 3")


def test_dates_side_by_side_date_slider_and_answer_per_date(remote_sensing, three_dates):
    path_a, path_b, path_c = three_dates
    client = Client(remote_sensing.url, verbose=False)
    files = [handle_file(str(p)) for p in (path_a, path_b, path_c)]
    info, gallery, view, slider, chat, used = client.predict(
        files, "", "global views + tile stacks", 168, 4, api_name="/load_series")
    assert "**3 dates** (2020-01-15, 2021-06-30, 2022-03-01) on one grid of 40 × 40 px in EPSG:32633" in info
    assert "Global views + 1 tile stacks: 6 images (864 image tokens)" in info
    assert [item["caption"] for item in gallery] == ["2020-01-15", "2021-06-30", "2022-03-01"]
    assert (slider["maximum"], view["label"]) == (2, "2020-01-15: b_20200115.tif")
    view = client.predict(2, api_name="/show_date")
    assert view["label"] == "2022-03-01: c_2022-03-01.tif"
    with Image.open(image_path(view)) as shown:
        pixels = np.asarray(shown.convert("RGB"))
    # C does not reach the west of the grid (the grid outline and label aside)
    assert pixels.shape[:2] == (40, 40) and (pixels[30:38, 2:8] == 0).all() and (pixels[30:38, 12:38] == 200).all()

    chat, used, _, cleared = client.predict("What changed?", [], 2, 4, api_name="/ask_series")
    assert used["data"] == [["2020-01-15", 2, 1], ["2021-06-30", 2, 1], ["2022-03-01", 2, 1]]
    assert cleared == "" and "based on 3 dates" in remote_sensing.text(chat[1])

    info, gallery, *_ = client.predict("2019-01-01, 2018-01-01, 2017-01-01", "global views only", 168, 4,
                                       api_name="/series_settings")
    assert [item["caption"] for item in gallery] == ["2017-01-01", "2018-01-01", "2019-01-01"]
    assert "Global views only: 3 images" in info


def test_bad_date_uploads_give_messages(remote_sensing, three_dates, write_geotiff, tmp_path):
    path_a, *_ = three_dates
    client = Client(remote_sensing.url, verbose=False)
    grey = write_geotiff(tmp_path / "grey_2020-01-01.tif", np.ones((1, 10, 10), np.uint8), UTM, from_origin(LEFT, TOP, RES, RES))
    with pytest.raises(AppError, match=r"different band counts \(a_2021-06-30.tif: 3, grey_2020-01-01.tif: 1\)"):
        client.predict([handle_file(str(path_a)), handle_file(str(grey))], "", "global views only", 336, 4,
                       api_name="/load_series")
    far = write_geotiff(tmp_path / "far_2020-01-01.tif", np.ones((3, 10, 10), np.uint8), UTM, from_origin(LEFT + 1e5, TOP, RES, RES))
    with pytest.raises(AppError, match="far_2020-01-01.tif: the raster does not overlap the common grid"):
        client.predict([handle_file(str(path_a)), handle_file(str(far))], "", "global views only", 336, 4,
                       api_name="/load_series")
    with pytest.raises(AppError, match="load the dates first"):
        client.predict("What changed?", [], 0, 4, api_name="/ask_series")
    assert json.dumps(client.view_api(return_format="dict"))  # still serving
