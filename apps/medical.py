"""The clinicians' demo: CT volumes (slice viewer, windows, slice selection, multi-turn chat),
large pathology images (sub-image grid) and clips (videos, cine DICOM: frame slider; :mod:`.clips`).

Layout and wiring only: files are read by ``load_ct`` / ``load_large_image``, slices rendered by
``render_slice`` / ``ct_to_slices``, sub-images cut by ``pathology_input``, prompts written by
the protocol and answers given by the model.
"""

from __future__ import annotations

import gradio as gr
from PIL import Image

from longllava.apps.answers import describe_slices, grid_footnote, slice_rows, tiles_named
from longllava.apps.chat import Conversation, chat_messages
from longllava.apps.clips import clip_tab
from longllava.apps.overlay import draw_grid, mosaic
from longllava.apps.serving import CACHE_CLEANUP, RESEARCH_NOTICE, ModelLoader, model_status, shown_errors
from longllava.apps.sessions import Session, SessionStore
from longllava.apps.settings import DemoSettings
from longllava.apps.uploads import accept_upload
from longllava.domains.medical.ct import CTVolume, load_ct
from longllava.domains.medical.large_image import load_large_image
from longllava.domains.medical.slices import ct_to_slices
from longllava.domains.medical.visuals import ct_stack, pathology_input
from longllava.domains.medical.windowing import DEFAULT_WINDOWS, WINDOW_PRESETS, render_slice
from longllava.errors import InputError
from longllava.examples import EXAMPLE_CT, EXAMPLE_PATHOLOGY


RGB_WINDOWS = "RGB: lung + mediastinum + bone"
CUSTOM_WINDOW = "custom W/L"
WINDOW_CHOICES = [RGB_WINDOWS, *WINDOW_PRESETS, CUSTOM_WINDOW]
# label -> ct_to_slices keyword
SELECTION_RULES = {
    "at most N slices": "max_slices",
    "exactly N slices": "num_slices",
    "every k-th slice": "every",
    "one slice every MM mm": "z_spacing_mm",
}
VIEW_SIZE = 512


def _windows(choice: str, custom: str):
    if choice == RGB_WINDOWS:
        return DEFAULT_WINDOWS
    if choice == CUSTOM_WINDOW:
        if not (custom or "").strip():
            raise InputError("type the custom window as WIDTH/LEVEL in HU, e.g. 400/40")
        return custom
    return choice


def _selection(rule: str, value: float | None) -> dict:
    if value is None:
        raise InputError(f"give a number for '{rule}'")
    return {SELECTION_RULES[rule]: value}


def _volume(session: Session) -> CTVolume:
    volume = session.data.get("ct")
    if volume is None:
        raise InputError("load a CT first: upload a NIfTI file, a DICOM .zip or DICOM files, or use the example")
    return volume


def _volume_info(volume: CTVolume, name: str) -> str:
    depth, height, width = volume.shape
    hu_min, hu_max = volume.hu_range()
    spacing = " × ".join(f"{s:.2f}" for s in volume.spacing_mm)
    lines = [
        f"**{name}**: {depth} slices of {height} × {width} px, spacing (z, y, x) {spacing} mm, "
        f"HU {hu_min:g} to {hu_max:g}, shown axial, radiological convention ({volume.orientation}).",
    ]
    acquisition = {k: v for k, v in volume.metadata.items() if v not in (None, "", [])}
    if acquisition:  # an allow-list of acquisition fields: no patient identifiers
        lines.append("Acquisition: " + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in acquisition.items()))
    return "\n\n".join(lines)


def _render(volume: CTVolume, z: int, windows) -> Image.Image:
    return render_slice(volume.hu[z], windows, volume.spacing_mm[1:], VIEW_SIZE)


def _slice_label(volume: CTVolume, z: int) -> str:
    return f"slice z index {z} of {volume.shape[0] - 1}, z = {float(volume.slice_z_mm[z]):.1f} mm"


def build_medical_app(model: ModelLoader, settings: DemoSettings, sessions: SessionStore | None = None) -> gr.Blocks:
    """The CT and pathology tabs over a :class:`~longllava.core.pipeline.LongLlava` that ``model``
    loads (the page is up before it is)."""
    store = sessions if sessions is not None else SessionStore("medical")

    def tokens_per_image() -> int:
        return model.get().processor.image_seq_length

    # ----- CT ---------------------------------------------------------------------------------

    def open_ct(session: Session, source, name: str, window, custom, rule, value, progress):
        """Load and show the CT; the session takes it (and a new conversation) only if that works."""
        progress(0.3, desc="loading the CT")
        volume = load_ct(source)
        progress(0.9, desc="rendering")
        z = volume.shape[0] // 2
        windows = _windows(window, custom)
        shown = (
            _volume_info(volume, name),
            gr.Image(value=_render(volume, z, windows), label=_slice_label(volume, z)),
            gr.Slider(minimum=0, maximum=volume.shape[0] - 1, value=z, step=1, interactive=True),
            selection_text(volume, windows, rule, value),
            [],
            [],
        )
        session.replace("ct", volume)
        session.replace("ct_chat", None)
        return shown

    def selection_text(volume: CTVolume, windows, rule, value) -> str:
        chosen = ct_to_slices(volume, windows=windows, **_selection(rule, value))
        return (
            f"**{len(chosen)} of {volume.shape[0]} slices** go to the model "
            f"({len(chosen) * tokens_per_image():,} image tokens, windows "
            f"{' / '.join(w.label for w in chosen.windows)}): z index {chosen.indices[0]} to {chosen.indices[-1]}."
        )

    def load_ct_upload(files, window, custom, rule, value, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the CT"):
            session = store.get(request.session_hash)
            progress(0.05, desc="checking the upload")
            with session.upload("ct") as folder:
                paths = accept_upload(files or [], folder, settings.max_upload_bytes)
                source = paths[0] if len(paths) == 1 else paths
                name = paths[0].name if len(paths) == 1 else f"{len(paths)} DICOM files"
                return open_ct(session, source, name, window, custom, rule, value, progress)

    def load_ct_example(window, custom, rule, value, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the example CT"):
            session = store.get(request.session_hash)
            return open_ct(session, EXAMPLE_CT, EXAMPLE_CT.name, window, custom, rule, value, progress)

    def show_slice(z, window, custom, request: gr.Request):
        with shown_errors(store, "show the slice"):
            volume = _volume(store.get(request.session_hash))
            z = int(z)
            return gr.Image(value=_render(volume, z, _windows(window, custom)), label=_slice_label(volume, z))

    def ct_settings_changed(z, window, custom, rule, value, request: gr.Request):
        """New windows or slice selection: new images for the model, so a new conversation."""
        with shown_errors(store, "apply the settings"):
            session = store.get(request.session_hash)
            volume = _volume(session)
            windows = _windows(window, custom)
            session.replace("ct_chat", None)
            z = int(z)
            image = gr.Image(value=_render(volume, z, windows), label=_slice_label(volume, z))
            return image, selection_text(volume, windows, rule, value), [], []

    def ask_ct(question, history, window, custom, rule, value, max_new_tokens, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "answer"):
            session = store.get(request.session_hash)
            volume = _volume(session)
            if not (question or "").strip():
                raise InputError("type a question first")
            chat = session.data.get("ct_chat")
            if chat is None:
                progress(0.1, desc="rendering the selected slices")
                chosen = ct_to_slices(volume, windows=_windows(window, custom), **_selection(rule, value))
                chat = Conversation([ct_stack(chosen)])
                session.data["ct_chat"] = chat
            first = chat.turns == 0
            progress(0.3, desc="encoding the slices and generating" if first else "generating")
            answer = chat.ask(model.get(progress), question, int(max_new_tokens))
            footnote = f"based on {describe_slices(chat.trace)}" + ("" if first else ", sent with the first question")
            footnote += f" · {answer.num_prompt_tokens:,} prompt tokens · {answer.seconds:.1f} s"
            messages = chat_messages(history, question, answer.text, footnote)
            return messages, slice_rows(chat.trace), ""

    def clear_ct_chat(request: gr.Request):
        store.get(request.session_hash).replace("ct_chat", None)
        return [], []

    # ----- pathology --------------------------------------------------------------------------

    def pathology_grid(session: Session, image: Image.Image | None, name: str | None, tile, max_tiles, progress):
        """Cut ``image`` into the grid; the session takes it (and a new conversation) only if that works."""
        if image is None:
            raise InputError("load an image first: upload a PNG, JPEG or TIFF, or use the example")
        if max_tiles is None:
            raise InputError("give the maximum number of sub-images")
        progress(0.6, desc="cutting sub-images")
        tile, width, height = int(tile), image.width, image.height
        part, downsample = pathology_input(image, tile=tile, max_tiles=int(max_tiles))
        picture, boxes = mosaic(part.tiles, part.rows, part.cols)
        session.replace("pathology", (image, name))
        session.replace("pathology_grid", (part, picture, boxes))
        session.replace("pathology_chat", None)
        images = part.rows * part.cols + 1
        info = (
            f"**{name}**: {width} × {height} px"
            + (f", read at 1/{downsample} to fit {int(max_tiles)} sub-images" if downsample > 1 else "")
            + f" → global view + {part.rows} × {part.cols} sub-images of {tile} px = {images} images "
            f"({images * tokens_per_image():,} image tokens). White is padding."
        )
        return draw_grid(picture, boxes), info, []

    def load_pathology_upload(file, tile, max_tiles, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the image"):
            session = store.get(request.session_hash)
            progress(0.05, desc="checking the upload")
            with session.upload("pathology") as folder:
                path = accept_upload([file] if file else [], folder, settings.max_upload_bytes)[0]
                progress(0.2, desc="reading the image")
                return pathology_grid(session, load_large_image(path), path.name, tile, max_tiles, progress)

    def load_pathology_example(tile, max_tiles, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the example image"):
            session = store.get(request.session_hash)
            return pathology_grid(session, load_large_image(EXAMPLE_PATHOLOGY), EXAMPLE_PATHOLOGY.name, tile, max_tiles, progress)

    def pathology_settings_changed(tile, max_tiles, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "cut the sub-images"):
            session = store.get(request.session_hash)
            image, name = session.data.get("pathology", (None, None))
            return pathology_grid(session, image, name, tile, max_tiles, progress)

    def ask_pathology(question, history, max_new_tokens, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "answer"):
            session = store.get(request.session_hash)
            grid = session.data.get("pathology_grid")
            if grid is None:
                raise InputError("load an image first: upload a PNG, JPEG or TIFF, or use the example")
            if not (question or "").strip():
                raise InputError("type a question first")
            part, picture, boxes = grid
            chat = session.data.get("pathology_chat")
            if chat is None:
                chat = Conversation([part])
                session.data["pathology_chat"] = chat
            first = chat.turns == 0
            progress(0.3, desc="encoding the sub-images and generating" if first else "generating")
            answer = chat.ask(model.get(progress), question, int(max_new_tokens))
            named = tiles_named(answer.text, part.rows, part.cols)
            footnote = grid_footnote(answer, part.rows, part.cols, "sub-images", first, named)
            messages = chat_messages(history, question, answer.text, footnote)
            return messages, draw_grid(picture, boxes, highlight=named), ""

    def clear_pathology_chat(request: gr.Request):
        session = store.get(request.session_hash)
        session.replace("pathology_chat", None)
        grid = session.data.get("pathology_grid")
        return [], (draw_grid(grid[1], grid[2]) if grid else None)

    def end_session(request: gr.Request):
        store.close(request.session_hash)

    # ----- layout -----------------------------------------------------------------------------

    with gr.Blocks(title="LongLLaVA: CT and pathology", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown("# LongLLaVA: CT and pathology questions")
        gr.Markdown(RESEARCH_NOTICE, elem_id="research-notice")
        model_status(model, app)
        with gr.Tab("CT", id="ct"):
            with gr.Row():
                with gr.Column(scale=2):
                    ct_files = gr.File(label="CT: a NIfTI file (.nii / .nii.gz), a DICOM .zip, or several DICOM files",
                                       file_count="multiple", type="filepath", elem_id="ct-upload")
                    ct_example = gr.Button("Use the example CT (real, 112 slices)", size="sm", visible=EXAMPLE_CT.is_file())
                    ct_load_status = gr.Markdown(elem_id="ct-load-status", elem_classes="status")
                    ct_info = gr.Markdown(elem_id="ct-info")
                    window = gr.Dropdown(WINDOW_CHOICES, value=RGB_WINDOWS, label="window (viewer and model)")
                    custom = gr.Textbox(label="custom window WIDTH/LEVEL in HU (for 'custom W/L')", placeholder="400/40")
                    with gr.Row():
                        rule = gr.Dropdown(list(SELECTION_RULES), value="at most N slices", label="slices sent to the model")
                        rule_value = gr.Number(value=16, label="N, k or MM", minimum=0, elem_id="ct-rule-value")
                    selection = gr.Markdown(elem_id="ct-selection")
                with gr.Column(scale=3):
                    # png: lossless, so the viewer shows the windowed values as they are
                    slice_view = gr.Image(label="slice", type="pil", format="png", interactive=False, height=VIEW_SIZE,
                                          elem_id="ct-slice")
                    z_slider = gr.Slider(0, 1, value=0, step=1, label="slice (z index, inferior to superior)", interactive=False)
            with gr.Row():
                with gr.Column(scale=3):
                    ct_chatbot = gr.Chatbot(label="questions and answers", height=320, elem_id="ct-chat")
                    with gr.Row():
                        ct_question = gr.Textbox(label="question", placeholder="Is there a lesion in this CT? Answer yes or no.",
                                                 scale=4, elem_id="ct-question")
                        ct_ask = gr.Button("Ask", variant="primary", scale=1, elem_id="ct-ask")
                    ct_ask_status = gr.Markdown(elem_id="ct-ask-status", elem_classes="status")
                    with gr.Row():
                        ct_clear = gr.Button("New conversation", size="sm")
                        ct_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id="ct-tokens")
                with gr.Column(scale=2):
                    ct_used = gr.Dataframe(headers=["frame", "z index", "z (mm)"], label="slices the answer is based on",
                                           interactive=False, elem_id="ct-used")
        with gr.Tab("Pathology", id="pathology"):
            with gr.Row():
                with gr.Column(scale=2):
                    path_file = gr.File(label="large image: PNG, JPEG or TIFF (tiled / pyramidal)", file_count="single",
                                        type="filepath", elem_id="pathology-upload")
                    path_example = gr.Button("Use the example image (IHC, colon)", size="sm", visible=EXAMPLE_PATHOLOGY.is_file())
                    path_load_status = gr.Markdown(elem_id="pathology-load-status", elem_classes="status")
                    with gr.Row():
                        tile = gr.Radio([336, 168], value=336, label="sub-image size (px)")
                        max_tiles = gr.Number(value=16, precision=0, minimum=1, label="max sub-images")
                    path_info = gr.Markdown(elem_id="pathology-info")
                    path_chatbot = gr.Chatbot(label="questions and answers", height=320, elem_id="pathology-chat")
                    with gr.Row():
                        path_question = gr.Textbox(label="question", scale=4, elem_id="pathology-question")
                        path_ask = gr.Button("Ask", variant="primary", scale=1, elem_id="pathology-ask")
                    path_ask_status = gr.Markdown(elem_id="pathology-ask-status", elem_classes="status")
                    with gr.Row():
                        path_clear = gr.Button("New conversation", size="sm")
                        path_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id="pathology-tokens")
                with gr.Column(scale=3):
                    path_grid = gr.Image(label="sub-image grid (what the model sees)", type="pil", format="png", interactive=False,
                                         elem_id="pathology-grid")

        clip_tab(model, settings, store)

        # ----- wiring -------------------------------------------------------------------------
        ct_state = [window, custom, rule, rule_value]
        ct_loaded = [ct_info, slice_view, z_slider, selection, ct_chatbot, ct_used]
        # progress and failure marks go on small status lines, so a failed load or question leaves
        # what is shown (the loaded CT, the chat) in place; the message itself is a pop-up
        load = dict(concurrency_id="load", show_progress_on=[ct_load_status])
        # the upload box is emptied on each upload (the load has its files already): they move to
        # the session folder or are refused, and a multi-file box would add the next upload to them
        ct_files.upload(load_ct_upload, [ct_files, *ct_state], ct_loaded, api_name="load_ct", **load)
        ct_files.upload(lambda: None, None, ct_files, api_visibility="private", show_progress="hidden")
        ct_example.click(load_ct_example, ct_state, ct_loaded, api_name="load_example_ct", **load)
        z_slider.input(show_slice, [z_slider, window, custom], slice_view, api_name="show_slice", show_progress_on=[ct_load_status])
        changed = dict(fn=ct_settings_changed, inputs=[z_slider, *ct_state], outputs=[slice_view, selection, ct_chatbot, ct_used],
                       show_progress_on=[ct_load_status])
        window.input(**changed, api_name="ct_settings")
        custom.submit(**changed, api_visibility="private")
        rule.input(**changed, api_visibility="private")
        rule_value.submit(**changed, api_visibility="private")
        ask = dict(fn=ask_ct, inputs=[ct_question, ct_chatbot, *ct_state, ct_tokens], outputs=[ct_chatbot, ct_used, ct_question],
                   concurrency_id="model", show_progress_on=[ct_ask_status])
        ct_ask.click(**ask, api_name="ask_ct")
        ct_question.submit(**ask, api_visibility="private")
        ct_clear.click(clear_ct_chat, None, [ct_chatbot, ct_used], api_visibility="private")

        path_loaded = [path_grid, path_info, path_chatbot]
        load = dict(concurrency_id="load", show_progress_on=[path_load_status])
        path_file.upload(load_pathology_upload, [path_file, tile, max_tiles], path_loaded, api_name="load_pathology", **load)
        path_file.upload(lambda: None, None, path_file, api_visibility="private", show_progress="hidden")
        path_example.click(load_pathology_example, [tile, max_tiles], path_loaded, api_name="load_example_pathology", **load)
        tile.input(pathology_settings_changed, [tile, max_tiles], path_loaded, api_visibility="private", **load)
        max_tiles.submit(pathology_settings_changed, [tile, max_tiles], path_loaded, api_visibility="private", **load)
        path_ask_event = dict(fn=ask_pathology, inputs=[path_question, path_chatbot, path_tokens],
                              outputs=[path_chatbot, path_grid, path_question], concurrency_id="model",
                              show_progress_on=[path_ask_status])
        path_ask.click(**path_ask_event, api_name="ask_pathology")
        path_question.submit(**path_ask_event, api_visibility="private")
        path_clear.click(clear_pathology_chat, None, [path_chatbot, path_grid], api_visibility="private")

        app.unload(end_session)
    return app
