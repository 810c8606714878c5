"""The image protocol and chat template: the only code that writes markers.

Formats (those of the released LongLLaVA models; the markers are plain text there):

* single image: ``<img><image></img>``
* ordered stack (video frames, CT slices): ``<vid>`` + frames ``<img><image></img>`` joined by
  ``<t>`` + ``</vid>`` (the intended form; the reference's ``rstrip('<t>')`` also ate the ``>`` of
  the last ``</img>``)
* high-resolution image: global view, ``\\n``, then rows of sub-images in raster order, rows joined
  by ``\\n``. As in the reference's ``bestFit`` mode, the global view's ``<img>`` encloses the grid:
  ``<img><image>\\n<img><image></img><img><image></img>\\n...</img>``
* chat: ``<|startoftext|><|User|>\\n{message}\\n<|startoftext|><|Assistant|>\\n{answer}``; a
  supervised answer ends with ``<|endoftext|>``, earlier turns with ``\\n``.

``<image>`` is the placeholder that the processor expands to one image's tokens; every rendered
message comes with its images in placeholder order and a trace saying which image is which
(slice index and z, tile row/col and bounds, record id...), so answers can be traced back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

from longllava.core.records import GPT, HUMAN, IMAGE_PLACEHOLDER, Record
from longllava.traces import ImageTrace, trace_dict

IMG_OPEN, IMG_CLOSE = "<img>", "</img>"
VID_OPEN, VID_CLOSE, FRAME_SEP = "<vid>", "</vid>", "<t>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
USER_ROLE, ASSISTANT_ROLE = "<|User|>", "<|Assistant|>"
IMAGE_BLOCK = IMG_OPEN + IMAGE_PLACEHOLDER + IMG_CLOSE


@dataclass
class ImageInput:
    """One image (PIL image or path)."""

    image: Any
    trace: ImageTrace | dict[str, Any] = field(default_factory=dict)


@dataclass
class StackInput:
    """An ordered stack: video frames or CT slices, in order."""

    frames: Sequence[Any]
    traces: Sequence[ImageTrace | dict[str, Any]] = ()


@dataclass
class HighResInput:
    """A large image as a global view plus a rows x cols grid of sub-images in raster order."""

    global_view: Any
    tiles: Sequence[Any]
    rows: int
    cols: int
    traces: Sequence[ImageTrace | dict[str, Any]] = ()  # one per tile

    def __post_init__(self):
        if self.rows * self.cols != len(self.tiles):
            raise ValueError(f"a {self.rows}x{self.cols} grid needs {self.rows * self.cols} tiles, got {len(self.tiles)}")


Visual = Union[ImageInput, StackInput, HighResInput]


@dataclass
class UserMessage:
    text: str  # with one <image> placeholder per image
    images: list[Any]  # in placeholder order
    trace: list[dict[str, Any]]  # one per image


def render_stack(num_frames: int) -> str:
    return VID_OPEN + FRAME_SEP.join([IMAGE_BLOCK] * num_frames) + VID_CLOSE


def render_highres(rows: int, cols: int) -> str:
    grid = "\n".join(IMAGE_BLOCK * cols for _ in range(rows))
    return IMG_OPEN + IMAGE_PLACEHOLDER + "\n" + grid + IMG_CLOSE


def render_visual(visual: Visual) -> tuple[str, list[Any], list[dict[str, Any]]]:
    """Marked-up text, images in placeholder order, and one trace entry per image."""
    if isinstance(visual, ImageInput):
        return IMAGE_BLOCK, [visual.image], [{"kind": "image", **trace_dict(visual.trace)}]
    if isinstance(visual, StackInput):
        traces = list(visual.traces) or [{} for _ in visual.frames]
        if len(traces) != len(visual.frames):
            raise ValueError(f"{len(visual.frames)} frames but {len(traces)} trace entries")
        if not visual.frames:
            raise ValueError("an image stack needs at least one frame")
        trace = [{"kind": "frame", "frame": i, **trace_dict(t)} for i, t in enumerate(traces)]
        return render_stack(len(visual.frames)), list(visual.frames), trace
    if isinstance(visual, HighResInput):
        traces = list(visual.traces) or [{} for _ in visual.tiles]
        trace = [{"kind": "global"}] + [
            {"kind": "tile", "row": i // visual.cols, "col": i % visual.cols, **trace_dict(t)} for i, t in enumerate(traces)
        ]
        return render_highres(visual.rows, visual.cols), [visual.global_view, *visual.tiles], trace
    raise TypeError(f"not a visual input: {type(visual).__name__}")


def user_message(visuals: Sequence[Visual], question: str) -> UserMessage:
    """The visual blocks in order, each on its own line, then the question."""
    parts, images, trace = [], [], []
    for visual in visuals:
        text, visual_images, visual_trace = render_visual(visual)
        parts.append(text)
        images.extend(visual_images)
        trace.extend(visual_trace)
    return UserMessage("\n".join([*parts, question]), images, trace)


def wrap_placeholders(text: str) -> str:
    """Record text (LLaVA style, bare ``<image>`` placeholders) -> protocol text (``<img><image></img>``)."""
    return text.replace(IMAGE_PLACEHOLDER, IMAGE_BLOCK)


def render_record_text(text: str, record: Record) -> str:
    """Record text (bare ``<image>`` placeholders, LLaVA style) -> protocol text.

    ``record.meta["layout"]`` says what the images are: ``"images"`` (default; one placeholder per
    image, each wrapped in ``<img></img>``), ``"stack"`` (one placeholder standing for the ordered
    frames) or ``"highres"`` (one placeholder for global view + ``meta["grid"] = [rows, cols]``)."""
    layout = record.meta.get("layout", "images")
    if layout == "images":
        return wrap_placeholders(text)
    if text.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(f"record {record.id} ({record.source}): a {layout} record needs exactly one <image> placeholder")
    if layout == "stack":
        block = render_stack(len(record.images))
    elif layout == "highres":
        rows, cols = record.meta["grid"]
        if rows * cols + 1 != len(record.images):
            raise ValueError(f"record {record.id}: a {rows}x{cols} grid needs {rows * cols + 1} images (global view first)")
        block = render_highres(rows, cols)
    else:
        raise ValueError(f"record {record.id}: unknown layout {layout!r}")
    return text.replace(IMAGE_PLACEHOLDER, block)


def _expected_placeholders(record: Record) -> int:
    return len(record.images) if record.meta.get("layout", "images") == "images" else 1


def record_message(record: Record) -> UserMessage:
    """A dataset record's first human turn as a message over its images."""
    text = next(turn["value"] for turn in record.conversations if turn["from"] == HUMAN)
    if text.count(IMAGE_PLACEHOLDER) != _expected_placeholders(record):
        raise ValueError(
            f"record {record.id} ({record.source}): {text.count(IMAGE_PLACEHOLDER)} <image> placeholders "
            f"but {len(record.images)} images"
        )
    trace = [{"kind": "image", "record": record.id, "index": i} for i in range(len(record.images))]
    return UserMessage(render_record_text(text, record), list(record.images), trace)


def user_turn(message: str) -> str:
    return f"{BOS}{USER_ROLE}\n{message}\n"


def assistant_prefix() -> str:
    return f"{BOS}{ASSISTANT_ROLE}\n"


def chat_prompt(message: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """Generation prompt: earlier (user, assistant) turns, then ``message``, then the assistant role."""
    text = "".join(user_turn(u) + assistant_prefix() + a + "\n" for u, a in history)
    return text + user_turn(message) + assistant_prefix()


def training_segments(turns: Sequence[tuple[str, str]]) -> list[tuple[str, bool]]:
    """(text, supervised) segments of a conversation for training: only answers are supervised,
    and the final answer ends with ``<|endoftext|>`` (earlier answers with ``\\n``, as in the
    reference's Jamba template)."""
    segments: list[tuple[str, bool]] = []
    for i, (user, answer) in enumerate(turns):
        segments.append((user_turn(user) + assistant_prefix(), False))
        last = i == len(turns) - 1
        segments.append((answer + (EOS if last else ""), True))
        if not last:
            segments.append(("\n", False))
    return segments


def record_turns(record: Record) -> list[tuple[str, str]]:
    """A record's conversation as (user, assistant) pairs in protocol text. Placeholders may sit in
    any human turn; their total must match the record's images."""
    if record.num_placeholders() != _expected_placeholders(record):
        raise ValueError(
            f"record {record.id} ({record.source}): {record.num_placeholders()} <image> placeholders "
            f"but {len(record.images)} images"
        )
    turns, pending = [], None
    for turn in record.conversations:
        if turn["from"] == HUMAN:
            pending = render_record_text(turn["value"], record) if IMAGE_PLACEHOLDER in turn["value"] else turn["value"]
        elif turn["from"] == GPT and pending is not None:
            turns.append((pending, turn["value"]))
            pending = None
    return turns
