"""The time-series section of the remote-sensing demo: several dates of one area side by side, a
date slider, questions over the dates as time stacks.

Layout and wiring only: rasters are put on one grid by ``open_time_series`` (the first upload's
CRS and bounds; windowed, reprojected reads), prompts built by ``time_series_visuals`` (one
``<vid>`` stack of the global views, then one per tile position, or the global views only), tiles
an answer names read back by ``answers.tiles_named``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from longllava.apps.answers import tiles_named
from longllava.apps.chat import Conversation, chat_messages
from longllava.apps.overlay import draw_grid, window_boxes
from longllava.apps.panels import chat_panel
from longllava.apps.serving import ModelLoader, shown_errors
from longllava.apps.sessions import Session, SessionStore
from longllava.apps.settings import DemoSettings
from longllava.apps.uploads import accept_upload
from longllava.domains.remote_sensing.timeseries import TimeSeries, open_time_series
from longllava.domains.remote_sensing.visuals import time_series_visuals
from longllava.errors import InputError

MODES = {"global views + tile stacks": "tiles", "global views only": "global"}
USED_HEADERS = ["date", "images", "tiles"]


def _dates(text: str | None) -> list[str] | None:
    text = (text or "").strip()
    return [part.strip() for part in text.split(",")] if text else None


def used_rows(trace: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """[date, images sent of that date, tile cells of that date] in date order."""
    rows: dict[str, list[Any]] = {}
    for entry in trace:
        row = rows.setdefault(entry["date"], [entry["date"], 0, 0])
        row[1] += 1
        row[2] += "row" in entry
    return list(rows.values())


def series_info(series: TimeSeries, cells: int, mode: str, tokens_per_image: int) -> str:
    dates = len(series.dates)
    images = dates * (1 + (cells if mode == "tiles" else 0))
    bounds = ", ".join(f"{v:.1f}" for v in series.bounds)
    return (f"**{dates} dates** ({', '.join(series.dates)}) on one grid of {series.width} × {series.height} px in "
            f"{series.crs.to_string()} (bounds {bounds}), the first upload's grid.\n\n"
            f"{'Global views + ' + str(cells) + ' tile stacks' if mode == 'tiles' else 'Global views only'}: "
            f"{images} images ({images * tokens_per_image:,} image tokens).")


def time_series_section(model: ModelLoader, settings: DemoSettings, store: SessionStore) -> None:
    """Build the section inside the caller's ``gr.Blocks`` (and its events)."""

    def _series(session: Session) -> TimeSeries:
        series = session.data.get("series")
        if series is None:
            raise InputError("load the dates first: upload two or more rasters of one area")
        return series

    def _view(session: Session, k: int, highlight=()):
        series, (grid, boxes) = _series(session), session.data["series_grid"]
        k = min(max(int(k), 0), len(series.dates) - 1)
        view = session.data["series_views"][k]
        image = view if grid is None else draw_grid(view, boxes, highlight)
        return gr.Image(value=image, label=f"{series.dates[k]}: {series.paths[k].name}")

    def open_series(session: Session, paths, dates, mode, tile, max_tiles, progress):
        """Put the rasters on one grid and show them; the session takes them (and a new
        conversation) only if that works."""
        if max_tiles is None:
            raise InputError("give the maximum number of tiles")
        progress(0.2, desc="putting the dates on one grid")
        series = open_time_series(paths, dates=_dates(dates))
        try:
            views = series.global_views()
            grid = series.grids(tile=int(tile), max_tiles=int(max_tiles))[0] if MODES[mode] == "tiles" else None
        except BaseException:
            series.close()
            raise
        boxes = {} if grid is None else window_boxes(
            {(t.row, t.col): (int(t.window.col_off), int(t.window.row_off), int(t.window.width), int(t.window.height))
             for t in grid.tiles}, (series.width, series.height), views[0].size)
        session.replace("series", series)
        session.data.update(series_views=views, series_grid=(grid, boxes), series_source=paths,
                            series_options=(MODES[mode], int(tile), int(max_tiles)))
        session.replace("series_chat", None)
        gallery = [(view, date) for view, date in zip(views, series.dates)]
        cells = 0 if grid is None else len(grid.tiles)
        return (series_info(series, cells, MODES[mode], model.get(progress).processor.image_seq_length), gallery, _view(session, 0),
                gr.Slider(minimum=0, maximum=len(series.dates) - 1, value=0, step=1, interactive=True,
                          label=f"date ({series.dates[0]} to {series.dates[-1]})"), [], [])

    def load_series(files, dates, mode, tile, max_tiles, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the dates"):
            session = store.get(request.session_hash)
            progress(0.05, desc="checking the upload")
            with session.upload("series") as folder:
                paths = accept_upload(files or [], folder, settings.max_upload_bytes)
                return open_series(session, paths, dates, mode, tile, max_tiles, progress)

    def options_changed(dates, mode, tile, max_tiles, request: gr.Request, progress=gr.Progress()):
        """Other dates, tiles or mode: other images for the model, so a new conversation."""
        with shown_errors(store, "apply the settings"):
            session = store.get(request.session_hash)
            _series(session)
            return open_series(session, session.data["series_source"], dates, mode, tile, max_tiles, progress)

    def show_date(k, request: gr.Request):
        with shown_errors(store, "show the date"):
            return _view(store.get(request.session_hash), k)

    def ask_series(question, history, k, max_new_tokens, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "answer"):
            session = store.get(request.session_hash)
            series = _series(session)
            if not (question or "").strip():
                raise InputError("type a question first")
            chat = session.data.get("series_chat")
            if chat is None:
                mode, tile, max_tiles = session.data["series_options"]
                progress(0.1, desc="reading the tiles of every date")
                chat = Conversation(time_series_visuals(series, mode, tile=tile, max_tiles=max_tiles))
                session.data["series_chat"] = chat
            first = chat.turns == 0
            progress(0.3, desc="encoding the dates and generating" if first else "generating")
            answer = chat.ask(model.get(progress), question, int(max_new_tokens))
            grid, _ = session.data["series_grid"]
            named = tiles_named(answer.text, grid.rows, grid.cols) if grid is not None else []
            footnote = (f"based on {len(series.dates)} dates" + ("" if first else ", sent with the first question")
                        + ("; names " + ", ".join(f"r{r}c{c}" for r, c in named) + " (highlighted)" if named else "")
                        + f" · {answer.num_prompt_tokens:,} prompt tokens · {answer.seconds:.1f} s")
            messages = chat_messages(history, question, answer.text, footnote)
            return messages, used_rows(chat.trace), _view(session, k, named), ""

    def clear_series_chat(request: gr.Request):
        store.get(request.session_hash).replace("series_chat", None)
        return [], []

    gr.Markdown("## Several dates of one area")
    with gr.Row():
        with gr.Column(scale=2):
            files = gr.File(label="two or more rasters of one area (GeoTIFF / COG); dates from their tags or names",
                            file_count="multiple", type="filepath", elem_id="series-upload")
            with gr.Row():
                dates = gr.Textbox(label="dates (optional, one per file in upload order)",
                                   placeholder="2021-06-30, 2022-06-30", elem_id="series-dates")
                mode = gr.Radio(list(MODES), value=next(iter(MODES)), label="sent to the model", elem_id="series-mode")
            with gr.Row():
                tile = gr.Dropdown([168, 336, 512], value=336, label="tile size (px)")
                max_tiles = gr.Number(value=4, precision=0, minimum=1, label="max tiles", elem_id="series-max-tiles")
            load_status = gr.Markdown(elem_id="series-load-status", elem_classes="status")
            info = gr.Markdown(elem_id="series-info")
            chat = chat_panel("series", "What changed between the first and the last date?")
            used = gr.Dataframe(headers=USED_HEADERS, label="images the answer is based on, per date",
                                interactive=False, elem_id="series-used")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="the dates side by side (global views, date order)", columns=4,
                                 elem_id="series-gallery")
            date_view = gr.Image(label="date", type="pil", format="png", interactive=False, elem_id="series-view")
            date_slider = gr.Slider(0, 1, value=0, step=1, label="date", interactive=False, elem_id="series-slider")

    load = dict(concurrency_id="load", show_progress_on=[load_status])
    loaded = [info, gallery, date_view, date_slider, chat.chatbot, used]
    files.upload(load_series, [files, dates, mode, tile, max_tiles], loaded, api_name="load_series", **load)
    files.upload(lambda: None, None, files, api_visibility="private", show_progress="hidden")
    options = [dates, mode, tile, max_tiles]
    dates.submit(options_changed, options, loaded, api_name="series_settings", **load)
    for control, event in ((mode, "input"), (tile, "input"), (max_tiles, "submit")):
        getattr(control, event)(options_changed, options, loaded, api_visibility="private", **load)
    date_slider.input(show_date, [date_slider], date_view, api_name="show_date", show_progress_on=[load_status])
    asked = dict(fn=ask_series, inputs=[chat.question, chat.chatbot, date_slider, chat.tokens],
                 outputs=[chat.chatbot, used, date_view, chat.question], concurrency_id="model",
                 show_progress_on=[chat.status])
    chat.ask.click(**asked, api_name="ask_series")
    chat.question.submit(**asked, api_visibility="private")
    chat.clear.click(clear_series_chat, None, [chat.chatbot, used], api_visibility="private")
