"""The clip tab of the medical demo: a video or a cine DICOM loop, a frame slider, questions.

Layout and wiring only: clips are read by ``load_clip`` (PyAV for videos, pydicom for cine DICOM),
sampled by presentation time, sent as one ``<vid>`` stack (``clip_stack``); the table lists the
frames an answer was based on with their times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from longllava.apps.chat import Conversation, chat_messages
from longllava.apps.panels import chat_panel
from longllava.apps.serving import ModelLoader, shown_errors
from longllava.apps.sessions import Session, SessionStore
from longllava.apps.settings import DemoSettings
from longllava.apps.uploads import accept_upload
from longllava.domains.medical.clips import load_clip
from longllava.domains.medical.video import Clip
from longllava.domains.medical.visuals import clip_stack
from longllava.errors import InputError

FRAME_HEADERS = ["frame", "source frame", "time (s)"]
DEFAULT_DEMO_FRAMES = 32  # keeps a first answer quick on a CPU; the model takes up to 256


def frame_rows(trace: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """[frame number (1-based, the order the model saw), source frame index, time in s] per frame sent."""
    return [[t["frame"] + 1, t["index"], t["time_s"]] for t in trace if t["kind"] == "frame"]


def clip_info(clip: Clip, name: str, tokens_per_image: int) -> str:
    frames = len(clip.frames)
    kind = "video" if clip.metadata.get("format") == "video" else "cine DICOM"
    details = {k: v for k, v in clip.metadata.items() if k not in ("format", "sampled_fps", "max_frames")
               and v not in (None, "", [])}
    lines = [f"**{name}** ({kind}): {clip.num_source_frames} frames over {clip.duration_s:.2f} s; "
             f"**{frames} frames** go to the model ({frames * tokens_per_image:,} image tokens), "
             f"at {clip.frames[0].time_s:.2f} to {clip.frames[-1].time_s:.2f} s."]
    if details:  # allow-listed acquisition fields only: never patient identifiers
        lines.append("Details: " + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in details.items()))
    return "\n\n".join(lines)


def _frame_label(clip: Clip, k: int) -> str:
    frame = clip.frames[k]
    return f"frame {k + 1} of {len(clip.frames)}: t = {frame.time_s:.2f} s (source frame {frame.index})"


def _clip(session: Session) -> Clip:
    clip = session.data.get("clip")
    if clip is None:
        raise InputError("load a clip first: upload a video (MP4, MOV, ...), a cine DICOM file, or the files / .zip of a cine series")
    return clip


def clip_tab(model: ModelLoader, settings: DemoSettings, store: SessionStore) -> None:
    """Build the tab inside the caller's ``gr.Blocks`` (and its events)."""

    def open_clip(session: Session, source, name: str, fps, max_frames, progress):
        """Read and show the clip; the session takes it (and a new conversation) only if that works."""
        if fps is None or max_frames is None:
            raise InputError("give the frames per second and the maximum number of frames")
        progress(0.3, desc="reading the clip")
        clip = load_clip(source, float(fps), int(max_frames))
        session.replace("clip", clip)
        session.data["clip_source"] = (source, name)
        session.replace("clip_chat", None)
        return (clip_info(clip, name, model.get(progress).processor.image_seq_length),
                gr.Image(value=clip.frames[0].image, label=_frame_label(clip, 0)),
                gr.Slider(minimum=0, maximum=len(clip.frames) - 1, value=0, step=1, interactive=True),
                [], [])

    def load_clip_upload(files, fps, max_frames, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "load the clip"):
            session = store.get(request.session_hash)
            progress(0.05, desc="checking the upload")
            with session.upload("clip") as folder:
                paths = accept_upload(files or [], folder, settings.max_upload_bytes)
                name = paths[0].name if len(paths) == 1 else f"{len(paths)} DICOM files"
                return open_clip(session, paths[0] if len(paths) == 1 else paths, name, fps, max_frames, progress)

    def sampling_changed(fps, max_frames, request: gr.Request, progress=gr.Progress()):
        """New frames per second or frame limit: other frames for the model, so a new conversation."""
        with shown_errors(store, "sample the clip"):
            session = store.get(request.session_hash)
            _clip(session)
            source, name = session.data["clip_source"]
            return open_clip(session, source, name, fps, max_frames, progress)

    def show_frame(k, request: gr.Request):
        with shown_errors(store, "show the frame"):
            clip = _clip(store.get(request.session_hash))
            k = min(max(int(k), 0), len(clip.frames) - 1)
            return gr.Image(value=clip.frames[k].image, label=_frame_label(clip, k))

    def ask_clip(question, history, max_new_tokens, request: gr.Request, progress=gr.Progress()):
        with shown_errors(store, "answer"):
            session = store.get(request.session_hash)
            clip = _clip(session)
            if not (question or "").strip():
                raise InputError("type a question first")
            chat = session.data.get("clip_chat")
            if chat is None:
                chat = Conversation([clip_stack(clip)])
                session.data["clip_chat"] = chat
            first = chat.turns == 0
            progress(0.3, desc="encoding the frames and generating" if first else "generating")
            answer = chat.ask(model.get(progress), question, int(max_new_tokens))
            rows = frame_rows(chat.trace)
            footnote = (f"based on {len(rows)} frames at {rows[0][2]:g} to {rows[-1][2]:g} s"
                        + ("" if first else ", sent with the first question")
                        + f" · {answer.num_prompt_tokens:,} prompt tokens · {answer.seconds:.1f} s")
            messages = chat_messages(history, question, answer.text, footnote)
            return messages, rows, ""

    def clear_clip_chat(request: gr.Request):
        store.get(request.session_hash).replace("clip_chat", None)
        return [], []

    with gr.Tab("Clip", id="clip"):
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="clip: a video (MP4, MOV, MKV, WebM, AVI), a cine DICOM file (ultrasound, echo, "
                                "XA, cine MR), or the files / .zip of a cine series", file_count="multiple",
                                type="filepath", elem_id="clip-upload")
                with gr.Row():
                    fps = gr.Number(value=1.0, minimum=0.01, label="frames per second sent", elem_id="clip-fps")
                    max_frames = gr.Number(value=DEFAULT_DEMO_FRAMES, precision=0, minimum=1, maximum=256,
                                           label="max frames (evenly spread beyond)", elem_id="clip-max-frames")
                load_status = gr.Markdown(elem_id="clip-load-status", elem_classes="status")
                info = gr.Markdown(elem_id="clip-info")
            with gr.Column(scale=3):
                frame_view = gr.Image(label="frame", type="pil", format="png", interactive=False, elem_id="clip-frame")
                frame_slider = gr.Slider(0, 1, value=0, step=1, label="frame sent to the model (in time order)",
                                         interactive=False, elem_id="clip-slider")
        with gr.Row():
            with gr.Column(scale=3):
                chat = chat_panel("clip", "When does the valve open? Answer with the time in seconds.")
            with gr.Column(scale=2):
                used = gr.Dataframe(headers=FRAME_HEADERS, label="frames the answer is based on", interactive=False,
                                    elem_id="clip-used")

    load = dict(concurrency_id="load", show_progress_on=[load_status])
    loaded = [info, frame_view, frame_slider, chat.chatbot, used]
    files.upload(load_clip_upload, [files, fps, max_frames], loaded, api_name="load_clip", **load)
    files.upload(lambda: None, None, files, api_visibility="private", show_progress="hidden")
    fps.submit(sampling_changed, [fps, max_frames], loaded, api_name="sample_clip", **load)
    max_frames.submit(sampling_changed, [fps, max_frames], loaded, api_visibility="private", **load)
    frame_slider.input(show_frame, [frame_slider], frame_view, api_name="show_frame", show_progress_on=[load_status])
    asked = dict(fn=ask_clip, inputs=[chat.question, chat.chatbot, chat.tokens],
                 outputs=[chat.chatbot, used, chat.question], concurrency_id="model", show_progress_on=[chat.status])
    chat.ask.click(**asked, api_name="ask_clip")
    chat.question.submit(**asked, api_visibility="private")
    chat.clear.click(clear_clip_chat, None, [chat.chatbot, used], api_visibility="private")
