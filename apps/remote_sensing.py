"""The analysts' demo: a large geo-referenced scene as a global view plus a grid of tiles, and
several dates of one area side by side with a date slider (:mod:`.time_series`).

Layout and wiring only: scenes are opened by ``open_scene``, cut by ``tile_scene`` (which also
gives each tile's lon/lat bounds and the GeoJSON), prompts written by the protocol and answers
given by the model; tiles an answer names are read back by ``answers.tiles_named``.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from longllava.apps.answers import grid_footnote, tiles_named
from longllava.apps.chat import Conversation, chat_messages
from longllava.apps.overlay import draw_grid, window_boxes
from longllava.apps.serving import CACHE_CLEANUP, ModelLoader, model_status, shown_errors
from longllava.apps.sessions import Session, SessionStore
from longllava.apps.settings import DemoSettings
from longllava.apps.time_series import time_series_section
from longllava.apps.uploads import accept_upload
from longllava.domains.remote_sensing.scene import open_scene
from longllava.domains.remote_sensing.tiling import TileGrid, tile_scene, tile_to_geo
from longllava.domains.remote_sensing.visuals import scene_input
from longllava.errors import InputError
from longllava.examples import EXAMPLE_SCENE

NOTICE = (
    "**Research tool.** Answers come from an experimental model and may be wrong. Uploads are "
    "processed in a temporary folder of your session, removed when you close the page."
)
TILE_HEADERS = ["tile", "pixel window (x, y, w, h)", "west", "south", "east", "north"]


def _bands(text: str) -> tuple[int, ...] | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        raise InputError(f"bands: give 1-based band numbers as R,G,B (e.g. 4,3,2) or one band; got {text!r}") from None


def _tile_rows(grid: TileGrid, cells) -> list[list]:
    """One table row per cell: label, full-resolution pixel window and lon/lat bounds."""
    rows = []
    for row, col in cells:
        geo = tile_to_geo(grid, row, col)
        lonlat = [round(v, 5) for v in geo["lonlat_bounds"]] if geo["lonlat_bounds"] else [None] * 4
        rows.append([f"r{row}c{col}", ", ".join(str(v) for v in geo["window"]), *lonlat])
    return rows


def _grid_info(grid: TileGrid, name: str, tokens_per_image: int) -> str:
    scene = grid.scene
    images = grid.rows * grid.cols + 1
    where = (
        f"CRS {grid.crs.to_string()}, lon/lat bounds " + ", ".join(f"{v:.4f}" for v in grid.lonlat_bounds)
        if grid.crs is not None
        else "no CRS: tiles carry pixel windows only"
    )
    scale = f", read at 1/{grid.downsample} to fit the tile limit" if grid.downsample > 1 else ""
    gsd = f", {grid.gsd:.1f} m per tile pixel" if grid.gsd else ""
    return (
        f"**{name}**: {scene.width} × {scene.height} px, bands {list(scene.bands)} ({scene.dtype}); {where}.\n\n"
        f"Global view + {grid.rows} × {grid.cols} tiles of {grid.tile} px{scale}{gsd} = {images} images "
        f"({images * tokens_per_image:,} image tokens)."
    )


def build_remote_sensing_app(model: ModelLoader, settings: DemoSettings, sessions: SessionStore | None = None) -> gr.Blocks:
    """The scene demo over a :class:`~longllava.core.pipeline.LongLlava` that ``model`` loads (the
    page is up before it is)."""
    store = sessions if sessions is not None else SessionStore("remote-sensing")

    def open_grid(session: Session, path: Path | None, name: str | None, tile, max_tiles, bands, progress):
        """Open and tile the scene at ``path``; the session takes it (and a new conversation) only if that works."""
        if path is None:
            raise InputError("load a scene first: upload a GeoTIFF, or use the example Landsat scene")
        if max_tiles is None:
            raise InputError("give the maximum number of tiles")
        progress(0.2, desc="opening the scene")
        scene = open_scene(path, bands=_bands(bands))
        try:
            progress(0.5, desc="tiling")
            grid = tile_scene(scene, tile=int(tile), max_tiles=int(max_tiles))
        except BaseException:
            scene.close()
            raise
        thumbnail = grid.thumbnail
        cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
        boxes = window_boxes(
            {cell: tuple(int(v) for v in tile_to_geo(grid, *cell)["window"]) for cell in cells},
            (grid.scene.width, grid.scene.height),
            thumbnail.size,
        )
        progress(0.8, desc="writing the GeoJSON")
        geojson = session.folder / f"{Path(name).stem}_grid.geojson"
        geojson.write_text(json.dumps(grid.to_geojson()))
        session.replace("scene", scene)
        session.data.update(scene_path=path, scene_name=name, grid=(grid, thumbnail, boxes))
        session.replace("scene_chat", None)
        info = _grid_info(grid, name, model.get(progress).processor.image_seq_length)
        return draw_grid(thumbnail, boxes), info, _tile_rows(grid, cells), str(geojson), [], []

    def load_upload(file, tile, max_tiles, bands, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the scene"):
            session = store.get(request.session_hash)
            progress(0.05, desc="checking the upload")
            with session.upload("scene") as folder:
                path = accept_upload([file] if file else [], folder, settings.max_upload_bytes)[0]
                return open_grid(session, path, path.name, tile, max_tiles, bands, progress)

    def load_example(tile, max_tiles, bands, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the example scene"):
            session = store.get(request.session_hash)
            return open_grid(session, EXAMPLE_SCENE, EXAMPLE_SCENE.name, tile, max_tiles, bands, progress)

    def settings_changed(tile, max_tiles, bands, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "tile the scene"):
            session = store.get(request.session_hash)
            path, name = session.data.get("scene_path"), session.data.get("scene_name")
            return open_grid(session, path, name, tile, max_tiles, bands, progress)

    def ask(question, history, max_new_tokens, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "answer"):
            session = store.get(request.session_hash)
            if "grid" not in session.data:
                raise InputError("load a scene first: upload a GeoTIFF, or use the example Landsat scene")
            if not (question or "").strip():
                raise InputError("type a question first")
            grid, thumbnail, boxes = session.data["grid"]
            chat = session.data.get("scene_chat")
            if chat is None:
                tiles = []
                for number, cell in enumerate(grid.tiles):
                    progress(0.1 + 0.2 * number / len(grid.tiles), desc="reading tiles")
                    tiles.append(cell.image())
                chat = Conversation([scene_input(grid, tiles)])
                session.data["scene_chat"] = chat
            first = chat.turns == 0
            progress(0.3, desc="encoding the tiles and generating" if first else "generating")
            answer = chat.ask(model.get(progress), question, int(max_new_tokens))
            named = tiles_named(answer.text, grid.rows, grid.cols)
            footnote = grid_footnote(answer, grid.rows, grid.cols, f"tiles of {grid.tile} px", first, named,
                                     "highlighted, bounds below")
            messages = chat_messages(history, question, answer.text, footnote)
            return messages, draw_grid(thumbnail, boxes, highlight=named), _tile_rows(grid, named), ""

    def clear_chat(request: gr.Request):
        session = store.get(request.session_hash)
        session.replace("scene_chat", None)
        grid = session.data.get("grid")
        return [], (draw_grid(grid[1], grid[2]) if grid else None), []

    def end_session(request: gr.Request):
        store.close(request.session_hash)

    with gr.Blocks(title="LongLLaVA: large scenes", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown("# LongLLaVA: questions about large remote-sensing scenes")
        gr.Markdown(NOTICE, elem_id="research-notice")
        model_status(model, app)
        with gr.Row():
            with gr.Column(scale=2):
                scene_file = gr.File(label="scene: GeoTIFF / COG (or any GDAL raster)", file_count="single",
                                     type="filepath", elem_id="scene-upload")
                example = gr.Button("Use the example Landsat scene", size="sm", visible=EXAMPLE_SCENE.is_file())
                load_status = gr.Markdown(elem_id="scene-load-status", elem_classes="status")
                with gr.Row():
                    tile = gr.Dropdown([168, 336, 512], value=336, label="tile size (px)")
                    max_tiles = gr.Number(value=16, precision=0, minimum=1, label="max tiles", elem_id="scene-max-tiles")
                    bands = gr.Textbox(label="bands as R,G,B", placeholder="auto, or e.g. 4,3,2")
                info = gr.Markdown(elem_id="scene-info")
                chatbot = gr.Chatbot(label="questions and answers", height=300, elem_id="scene-chat")
                with gr.Row():
                    question = gr.Textbox(label="question",
                                          placeholder="Which tile contains the ship? Answer with the row and column.",
                                          scale=4, elem_id="scene-question")
                    ask_button = gr.Button("Ask", variant="primary", scale=1, elem_id="scene-ask")
                ask_status = gr.Markdown(elem_id="scene-ask-status", elem_classes="status")
                with gr.Row():
                    clear = gr.Button("New conversation", size="sm")
                    tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id="scene-tokens")
            with gr.Column(scale=3):
                grid_view = gr.Image(label="tile grid (row/column labels as the answers use them)", type="pil",
                                     format="png", interactive=False, elem_id="scene-grid")
                named_table = gr.Dataframe(headers=TILE_HEADERS, label="tiles named in the last answer",
                                           interactive=False, elem_id="scene-named")
                geojson = gr.File(label="the grid as GeoJSON", interactive=False, elem_id="scene-geojson")
                with gr.Accordion("all tiles with their bounds", open=False):
                    tile_table = gr.Dataframe(headers=TILE_HEADERS, interactive=False, elem_id="scene-tiles")

        controls = [tile, max_tiles, bands]
        loaded = [grid_view, info, tile_table, geojson, chatbot, named_table]
        # the upload box is emptied on each upload (the load has the file already): it moves to the
        # session folder or is refused
        # progress and failure marks go on small status lines, so a failed load or question leaves
        # what is shown (the loaded scene, the chat) in place; the message itself is a pop-up
        load = dict(concurrency_id="load", show_progress_on=[load_status])
        scene_file.upload(load_upload, [scene_file, *controls], loaded, api_name="load_scene", **load)
        scene_file.upload(lambda: None, None, scene_file, api_visibility="private", show_progress="hidden")
        example.click(load_example, controls, loaded, api_name="load_example_scene", **load)
        tile.input(settings_changed, controls, loaded, api_name="retile", **load)
        max_tiles.submit(settings_changed, controls, loaded, api_visibility="private", **load)
        bands.submit(settings_changed, controls, loaded, api_visibility="private", **load)
        asked = dict(fn=ask, inputs=[question, chatbot, tokens], outputs=[chatbot, grid_view, named_table, question],
                     concurrency_id="model", show_progress_on=[ask_status])
        ask_button.click(**asked, api_name="ask")
        question.submit(**asked, api_visibility="private")
        clear.click(clear_chat, None, [chatbot, grid_view, named_table], api_visibility="private")
        time_series_section(model, settings, store)
        app.unload(end_session)
    return app
