"""The medical demo served on a free local port and driven through gradio_client (tiny-random model)."""

import logging
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from longllava.apps.medical import EXAMPLE_CT, RGB_WINDOWS, build_medical_app
from longllava.domains.medical.ct import load_ct
from longllava.domains.medical.slices import ct_to_slices

UPLOAD_MB = 4
RGB = [RGB_WINDOWS, ""]  # window, custom W/L


@pytest.fixture(scope="module")
def demo(serve_demo):
    with serve_demo(build_medical_app, "medical-test", UPLOAD_MB) as served:
        yield served


def image_path(value) -> str:
    return value if isinstance(value, str) else value["value"]["path"] if isinstance(value.get("value"), dict) else value["value"]


def expected_slices(source, **selection):
    chosen = ct_to_slices(load_ct(source), **selection)
    return [[k + 1, index, round(z, 2)] for k, (index, z) in enumerate(zip(chosen.indices, chosen.z_mm))]


def test_ct_upload_view_and_multi_turn_chat(demo):
    client = Client(demo.url, verbose=False)
    info, view, slider, selection, chat, used = client.predict(
        [handle_file(str(EXAMPLE_CT))], *RGB, "exactly N slices", 3, api_name="/load_ct")
    assert "**example_ct.nii.gz**: 112 slices of 101 × 122 px" in info and "3.00 × 3.00 × 3.00 mm" in info
    assert "HU -1207 to 3382" in info
    assert "**3 of 112 slices** go to the model (432 image tokens" in selection
    assert (slider["maximum"], slider["value"]) == (111, 56)
    with Image.open(image_path(view)) as shown:
        assert max(shown.size) == 512 and shown.mode == "RGB"
    assert chat == []
    session = demo.store.get(client.session_hash)
    assert [p.name for p in session.folder.glob("ct-*/*")] == ["example_ct.nii.gz"]  # moved into the session folder

    chat, used, cleared = client.predict("Is there a lesion in this CT? Answer yes or no.", [], *RGB, "exactly N slices", 3, 4,
                                         api_name="/ask_ct")
    expected = expected_slices(EXAMPLE_CT, num_slices=3)
    assert used["data"] == expected and [row[1] for row in expected] == [0, 56, 111]
    assert cleared == "" and [m["role"] for m in chat] == ["user", "assistant"]
    first = demo.text(chat[1])
    assert "based on 3 slices: z index 0, 56, 111 (z 94.3 to 427.3 mm)" in first

    chat, used, _ = client.predict("Which slice shows it?", chat, *RGB, "exactly N slices", 3, 4, api_name="/ask_ct")
    assert len(chat) == 4 and used["data"] == expected
    second = demo.text(chat[3])
    assert "based on 3 slices: z index 0, 56, 111 (z 94.3 to 427.3 mm), sent with the first question" in second
    prompt_tokens = [int(t.split(" prompt tokens")[0].split("· ")[-1].replace(",", "")) for t in (first, second)]
    assert prompt_tokens[1] > prompt_tokens[0] > 3 * 144  # history + images kept, images not sent twice

    # a new window: new images, so a new conversation
    view, selection, chat, used = client.predict(56, "lung", "", "one slice every MM mm", 30.0, api_name="/ct_settings")
    assert chat == [] and "windows lung)" in selection and "**12 of 112 slices**" in selection
    view = client.predict(10, "custom W/L", "400/40", api_name="/show_slice")
    hu = load_ct(EXAMPLE_CT).hu[10]
    expected_grey = np.asarray(Image.fromarray(np.clip((hu.astype(float) + 160) / 400 * 255, 0, 255).astype(np.uint8)))
    with Image.open(image_path(view)) as shown:
        pixels = np.asarray(shown.convert("RGB"))
    assert (pixels[..., 0] == pixels[..., 1]).all()  # one window: grey
    assert abs(pixels.mean() - expected_grey.mean()) < 6


def _dicom_with_identifiers(fixtures, out_dir):
    import pydicom

    out_dir.mkdir()
    files = []
    for path in sorted((fixtures / "ct" / "example_ct_dicom").iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.PatientName = "Doe^Jane"
        dataset.PatientID = "PID-4711"
        dataset.PatientBirthDate = "19610203"
        dataset.save_as(out_dir / path.name)
        files.append(out_dir / path.name)
    return files


def test_dicom_zip_and_files_never_show_patient_identifiers(demo, fixtures, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    files = _dicom_with_identifiers(fixtures, tmp_path / "series")
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in files:
            zipped.write(path, f"series/{path.name}")
    client = Client(demo.url, verbose=False)
    info, *_ = client.predict([handle_file(str(archive))], *RGB, "exactly N slices", 2, api_name="/load_ct")
    assert "**series.zip**: 20 slices of 512 × 512 px" in info and "modality CT" in info
    chat, used, _ = client.predict("Is there a lesion?", [], *RGB, "exactly N slices", 2, 2, api_name="/ask_ct")
    assert used["data"] == expected_slices(files, num_slices=2)
    info, *_ = client.predict([handle_file(str(p)) for p in files[:3]], *RGB, "at most N slices", 16, api_name="/load_ct")
    assert "**3 DICOM files**: 3 slices of 512 × 512 px" in info
    shown = info + repr(chat) + caplog.text + "".join(capfd.readouterr())
    for identifier in ("Doe", "Jane", "PID-4711", "19610203"):
        assert identifier not in shown


def _error(call) -> str:
    with pytest.raises(AppError) as raised:
        call()
    message = str(raised.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


def test_bad_uploads_give_messages_and_the_app_keeps_serving(demo, fixtures, tmp_path):
    client = Client(demo.url, verbose=False)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(EXAMPLE_CT.read_bytes()[:40_000])
    message = _error(lambda: client.predict([handle_file(str(broken))], *RGB, "at most N slices", 16, api_name="/load_ct"))
    assert message.startswith("broken.nii.gz: ") and "truncated or corrupt" in message
    assert str(demo.store.root) not in message

    slip = tmp_path / "slip.zip"
    dicom = next((fixtures / "ct" / "example_ct_dicom").iterdir()).read_bytes()
    with zipfile.ZipFile(slip, "w") as zipped:
        zipped.writestr("series/IM0001.dcm", dicom)
        zipped.writestr("../../etc/evil.dcm", dicom)
    message = _error(lambda: client.predict([handle_file(str(slip))], *RGB, "at most N slices", 16, api_name="/load_ct"))
    assert message.startswith("slip.zip: zip entry '../../etc/evil.dcm' has an absolute or '..' path")
    assert not (demo.store.root.parent / "etc" / "evil.dcm").exists()

    halves = [tmp_path / "part1.dcm", tmp_path / "part2.dcm"]
    for half in halves:
        half.write_bytes(b"\0" * (UPLOAD_MB * (1 << 20) // 2 + 1000))
    message = _error(lambda: client.predict([handle_file(str(p)) for p in halves], *RGB, "at most N slices", 16, api_name="/load_ct"))
    assert f"above the {UPLOAD_MB:.1f} MB limit of this demo" in message
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # one file over the limit: refused before upload
        client.predict([handle_file(str(_big(tmp_path)))], *RGB, "at most N slices", 16, api_name="/load_ct")

    message = _error(lambda: client.predict("Is there a lesion?", [], *RGB, "at most N slices", 16, 2, api_name="/ask_ct"))
    assert "load a CT first" in message
    # the same client, next request: served
    info, *_ = client.predict(*RGB, "exactly N slices", 2, api_name="/load_example_ct")
    assert "112 slices" in info
    chat, used, _ = client.predict("Is there a lesion?", [], *RGB, "exactly N slices", 2, 2, api_name="/ask_ct")
    assert [row[1] for row in used["data"]] == [0, 111] and len(chat) == 2


def _big(tmp_path):
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(b"\0" * (UPLOAD_MB * (1 << 20) + 1))
    return path


def test_pathology_grid_and_named_tiles(demo, monkeypatch):
    client = Client(demo.url, verbose=False)
    grid, info, chat = client.predict(168, 4, api_name="/load_example_pathology")
    assert "**ihc_colon.png**: 512 × 512 px, read at 1/2 to fit 4 sub-images" in info
    assert "global view + 2 × 2 sub-images of 168 px = 5 images (720 image tokens)" in info
    with Image.open(image_path(grid)) as picture:
        plain = np.asarray(picture.convert("RGB")).astype(int)
    assert plain.shape == (336, 336, 3)
    # only generation is replaced: the protocol, processor and app wiring run as they are
    monkeypatch.setattr(demo.llava, "answer_prompts", lambda prompts, images, *generation: ["Brown staining in row 1 column 0."])
    chat, grid, _ = client.predict("Where is the staining?", [], 8, api_name="/ask_pathology")
    assert "names r1c0 (highlighted)" in demo.text(chat[1]) and "global view + 2 × 2 sub-images" in demo.text(chat[1])
    with Image.open(image_path(grid)) as picture:
        marked = np.asarray(picture.convert("RGB")).astype(int)
    assert (marked[310, 25] != plain[310, 25]).any()  # inside r1c0 (x 0-167, y 168-335)
    assert (marked[25, 310] == plain[25, 310]).all()  # inside r0c1


def test_page_is_served_while_the_model_loads(tiny):
    """The page comes up before the model is loaded and says so; once it is, the status line says
    which model answers and the handlers use it."""
    import socket
    import threading
    import time
    import urllib.request

    from longllava.apps.serving import ModelLoader, launch
    from longllava.apps.sessions import SessionStore
    from longllava.apps.settings import DemoSettings
    from longllava.core.pipeline import LongLlava

    gate = threading.Event()
    model = ModelLoader(lambda: gate.wait(60) and LongLlava(*tiny), "gated")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store, settings = SessionStore("medical-loading-test"), DemoSettings(port=port, max_upload_mb=UPLOAD_MB)
    app = build_medical_app(model, settings, sessions=store)
    try:
        url = launch(app, settings, block=False)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and response.read().decode().startswith("<!doctype html>")
        client = Client(url, verbose=False)
        status, _ = client.predict(api_name="/model_status")
        assert status == "⏳ loading the model (gated) ..." and not model.ready
        gate.set()
        deadline = time.monotonic() + 30
        while status != "model: gated" and time.monotonic() < deadline:
            time.sleep(0.2)
            status, _ = client.predict(api_name="/model_status")
        assert status == "model: gated"
        info, *_, selection, _, _ = client.predict(*RGB, "exactly N slices", 2, api_name="/load_example_ct")
        assert "**2 of 112 slices** go to the model (288 image tokens" in selection
    finally:
        app.close()
        store.close_all()
