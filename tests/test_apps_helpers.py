"""The demos' non-UI helpers: uploads, sessions, grid drawing, answers, multi-turn chat, CLI."""

import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from longllava.apps.answers import describe_slices, slice_rows, tiles_named
from longllava.apps.overlay import HIGHLIGHT_COLOUR, draw_grid, mosaic, window_boxes
from longllava.apps.sessions import SessionStore
from longllava.apps.uploads import MB, accept_upload, check_upload_size
from longllava.core import protocol
from longllava.errors import InputError


def test_tiles_named_reads_every_form_in_order_and_inside_the_grid():
    text = "Ships in row 1 column 2 and r0c1; also tile (2, 0), row 1, col 2 again, and row 7 column 0."
    assert tiles_named(text, rows=3, cols=3) == [(1, 2), (0, 1), (2, 0)]
    assert tiles_named("row 0 column 0", rows=1, cols=1) == [(0, 0)]
    assert tiles_named("no tile here, 3 ships", rows=4, cols=4) == []
    assert tiles_named("R2C3", rows=3, cols=4) == [(2, 3)]


def test_slices_are_reported_from_the_trace():
    images = [Image.new("RGB", (8, 8)) for _ in range(3)]
    stack = protocol.StackInput(images, [{"slice_index": 4, "z_mm": -10.0}, {"slice_index": 9, "z_mm": 5.04}, {"slice_index": 20, "z_mm": 38.0}])
    trace = protocol.user_message([stack], "q").trace
    assert slice_rows(trace) == [[1, 4, -10.0], [2, 9, 5.04], [3, 20, 38.0]]
    assert describe_slices(trace) == "3 slices: z index 4, 9, 20 (z -10 to 38 mm)"
    long = [{"kind": "frame", "frame": k, "slice_index": 2 * k, "z_mm": float(k)} for k in range(30)]
    assert describe_slices(long, limit=4) == "30 slices: z index 0, 2, …, 56, 58 (z 0 to 29 mm)"


def test_accept_upload_moves_files_into_the_session_folder(tmp_path):
    cache = tmp_path / "gradio-cache"
    (cache / "a").mkdir(parents=True)
    (cache / "b").mkdir()
    first, second = cache / "a" / "IM0001", cache / "b" / "IM0001"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    moved = accept_upload([first, second], tmp_path / "session" / "ct", max_bytes=MB)
    assert [p.read_bytes() for p in moved] == [b"one", b"two"]
    assert [p.name for p in moved] == ["IM0001", "00001_IM0001"]
    assert all(p.parent == tmp_path / "session" / "ct" for p in moved)
    assert not first.exists() and not second.exists()  # nothing left in the shared cache
    # a new upload replaces the previous one
    third = cache / "scan.nii.gz"
    third.write_bytes(b"three")
    assert [p.name for p in accept_upload([third], tmp_path / "session" / "ct", max_bytes=MB)] == ["scan.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "session" / "ct").iterdir()) == ["scan.nii.gz"]


def test_upload_limits_cover_the_total_and_what_a_zip_expands_to(tmp_path):
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    a.write_bytes(b"x" * 600_000)
    b.write_bytes(b"x" * 600_000)
    with pytest.raises(InputError, match=r"the upload is 1\.1 MB, above the 1\.0 MB limit.*--max-upload-mb"):
        accept_upload([a, b], tmp_path / "session", max_bytes=MB)
    assert a.exists() and not (tmp_path / "session").exists()  # rejected before anything moved
    bomb = tmp_path / "series.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IM0001", b"\0" * (3 * MB))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match=r"series\.zip: the zip expands to 3\.0 MB, above the 1\.0 MB limit"):
        check_upload_size([bomb], max_bytes=MB)
    check_upload_size([bomb], max_bytes=4 * MB)
    with pytest.raises(InputError, match="no file was uploaded"):
        accept_upload([], tmp_path / "session", max_bytes=MB)


class _Closeable:
    closed = False

    def close(self):
        self.closed = True


def test_session_store_removes_folders_and_closes_data():
    store = SessionStore("test", max_sessions=2)
    try:
        one = store.get("hash-one")
        assert store.get("hash-one") is one and one.folder.is_dir() and one.folder.parent == store.root
        (one.folder / "upload.nii.gz").write_bytes(b"data")
        first, second = _Closeable(), _Closeable()
        one.replace("scene", first)
        one.replace("scene", second)  # replacing closes what was there
        assert first.closed and not second.closed
        store.close("hash-one")
        assert second.closed and not one.folder.exists() and len(store) == 0
        a, b = store.get("a"), store.get("b")
        store.get("a")  # "b" is now the least recently used
        c = store.get("c")
        assert not b.folder.exists() and a.folder.exists() and c.folder.exists() and len(store) == 2
        with c.upload("ct") as first_upload:
            (first_upload / "scan.zip").parent.mkdir()
            (first_upload / "scan.zip").write_bytes(b"1")
        with pytest.raises(InputError), c.upload("ct") as failed_upload:
            failed_upload.mkdir()
            raise InputError("a bad file")
        assert first_upload.is_dir() and not failed_upload.exists()  # a failed upload leaves the earlier one
        with c.upload("ct") as second_upload:
            second_upload.mkdir()
        assert second_upload.is_dir() and not first_upload.exists()  # a successful one replaces it
        message = f"{c.folder}/ct/scan.zip: zip entry '../x' rejected; also {c.folder}/grid.geojson and /etc/hosts"
        assert store.strip_paths(message) == "scan.zip: zip entry '../x' rejected; also grid.geojson and /etc/hosts"
    finally:
        store.close_all()
    assert not store.root.exists()


def test_mosaic_puts_tiles_back_and_draw_grid_highlights_named_cells():
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]
    tiles = [Image.new("RGB", (100, 100), c) for c in colours]
    picture, boxes = mosaic(tiles, rows=2, cols=3, max_side=150)
    assert picture.size == (150, 100)
    assert boxes[(1, 2)] == (100.0, 50.0, 150.0, 100.0)
    pixels = np.asarray(picture)
    for (row, col), colour in zip([(r, c) for r in range(2) for c in range(3)], colours):
        x0, y0, x1, y1 = boxes[(row, col)]
        assert tuple(pixels[int((y0 + y1) / 2), int((x0 + x1) / 2)]) == colour
    plain = np.asarray(draw_grid(picture, boxes)).astype(int)
    marked = np.asarray(draw_grid(picture, boxes, highlight=[(1, 0)])).astype(int)
    assert (marked[92, 8] != plain[92, 8]).any()  # inside r1c0, away from its label and outline: tinted
    assert np.abs(marked[92, 8] - np.asarray(HIGHLIGHT_COLOUR)).sum() < np.abs(plain[92, 8] - np.asarray(HIGHLIGHT_COLOUR)).sum()
    assert (marked[42, 58] == plain[42, 58]).all()  # inside r0c1: untouched
    assert (plain[42, 58] == colours[1]).all() and (plain[25, 75] != colours[1]).any()  # labels at the centres
    assert window_boxes({(0, 1): (600, 0, 200, 336)}, (800, 600), (400, 300)) == {(0, 1): (300.0, 0.0, 400.0, 168.0)}


def test_conversation_sends_images_with_the_first_turn_only(tiny):
    from longllava.apps.chat import Conversation
    from longllava.core.pipeline import LongLlava

    llava = LongLlava(*tiny)
    frames = [Image.new("RGB", (64, 64), (k * 60, 0, 0)) for k in range(3)]
    chat = Conversation([protocol.StackInput(frames, [{"slice_index": k, "z_mm": 2.5 * k} for k in range(3)])])
    first = chat.ask(llava, "Is there a lesion?", max_new_tokens=2)
    assert first.num_images == 3 and [t["slice_index"] for t in chat.trace] == [0, 1, 2]
    assert chat.history[0] == (protocol.user_message(chat.visuals, "Is there a lesion?").text, first.text)
    assert chat.history[0][0].count("<image>") == 3 and len(chat.history_images) == 3
    second = chat.ask(llava, "Where?", max_new_tokens=2)
    assert chat.history[1] == ("Where?", second.text) and chat.turns == 2
    assert second.num_images == 3  # the first turn's images, not new ones
    assert second.num_prompt_tokens > first.num_prompt_tokens


def test_model_loader_reports_loading_then_gives_the_model_or_the_reason():
    import threading

    from longllava.apps.serving import ModelLoader

    gate = threading.Event()
    loader = ModelLoader(lambda: gate.wait(10) and "the model", "slow")
    assert not loader.ready and loader.status() == "⏳ loading the model (slow) ..."
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(loader.get(lambda fraction, desc: seen.append(desc))))
    waiter.start()
    time.sleep(0.3)
    assert seen == ["loading the model ..."]  # the handler waits, showing why
    gate.set()
    waiter.join(timeout=5)
    assert seen == ["loading the model ...", "the model"] and loader.status() == "model: slow"
    assert loader.get() == "the model"

    def missing():
        raise InputError("/nowhere is not a checkpoint directory")

    broken = ModelLoader(missing, "/nowhere")
    with pytest.raises(InputError, match=r"the model \(/nowhere\) could not be loaded: /nowhere is not a checkpoint"):
        broken.get()
    assert broken.status() == "**The model (/nowhere) could not be loaded**: /nowhere is not a checkpoint directory"


def test_demo_cli_defaults_and_validation(capsys):
    from longllava.apps.cli import settings_from_args
    from longllava.cli import build_parser, main

    args = build_parser().parse_args(["demo", "medical"])
    settings = settings_from_args(args)
    assert (args.app, args.model) == ("medical", "default")
    assert (settings.host, settings.port, settings.max_upload_mb, settings.concurrency, settings.share) == (
        "127.0.0.1", None, 2048, 1, False)
    assert settings.max_upload_bytes == 2048 * MB
    args = build_parser().parse_args(["demo", "remote-sensing", "--model", "tiny-random", "--port", "7999",
                                      "--max-upload-mb", "1.5", "--concurrency", "3", "--share", "--host", "0.0.0.0"])
    settings = settings_from_args(args)
    assert (args.app, args.model, settings.port, settings.max_upload_bytes, settings.concurrency, settings.share,
            settings.host) == ("remote-sensing", "tiny-random", 7999, int(1.5 * MB), 3, True, "0.0.0.0")
    assert main(["demo", "medical", "--model", "tiny-random", "--concurrency", "0"]) == 2
    assert "--concurrency must be at least 1, got 0" in capsys.readouterr().err
    assert main(["demo", "remote-sensing", "--model", "tiny-random", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be > 0" in capsys.readouterr().err


def test_demo_command_serves_until_closed():
    import socket
    import threading
    import urllib.request

    import gradio as gr
    from gradio_client import Client

    from longllava.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = {}
    argv = ["demo", "remote-sensing", "--model", "tiny-random", "--port", str(port), "--max-upload-mb", "3"]
    thread = threading.Thread(target=lambda: result.update(code=main(argv)), daemon=True)
    thread.start()
    url, deadline, page = f"http://127.0.0.1:{port}/", time.monotonic() + 60, ""
    while time.monotonic() < deadline and not page:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                page = response.read().decode()
        except OSError:
            time.sleep(0.3)
    try:
        assert page.startswith("<!doctype html>")
        config = Client(url, verbose=False).config
        assert (config["title"], config["max_file_size"]) == ("LongLLaVA: large scenes", 3 * MB)
    finally:
        gr.close_all()
    thread.join(timeout=20)
    assert result == {"code": 0}
