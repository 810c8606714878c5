"""Medical objects as protocol visuals: CT slices -> an ordered stack, a pathology image -> a
global view + grid of sub-images, a clip (video or cine DICOM) -> an ordered stack of frames.
Every image carries its :class:`~longllava.traces.ImageTrace` (a CT slice: its index in the
canonical volume and its z in mm; a clip frame: its index in the source and its time in s)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from PIL import Image

from longllava.core.grid import plan_grid
from longllava.core.processor import partition_highres
from longllava.core.protocol import HighResInput, StackInput
from longllava.domains.medical.slices import CTSlice
from longllava.domains.medical.video import Clip
from longllava.traces import ImageTrace

Z_DECIMALS = 3  # z in mm to the micrometre: finer than any CT's slice spacing
TIME_DECIMALS = 3  # frame times to the millisecond: finer than any video's or cine loop's frame interval


def slice_trace(index: int, z_mm: float, record: str | None = None) -> ImageTrace:
    """The trace of CT slice ``index`` at ``z_mm`` (of dataset record ``record``, if any)."""
    return ImageTrace(record=record, slice_index=int(index), z_mm=round(float(z_mm), Z_DECIMALS))


def ct_stack(slices: Iterable[CTSlice], record: str | None = None) -> StackInput:
    """Rendered CT slices (z ascending) as one ordered stack of ``<vid>`` frames."""
    slices = list(slices)
    return StackInput([s.image for s in slices], [slice_trace(s.index, s.z_mm, record) for s in slices])


def pathology_input(image: Any, *, tile: int = 336, max_tiles: int | None = None) -> tuple[HighResInput, int]:
    """A large pathology image as global view + ``tile``-pixel sub-images, read at the smallest
    integer downsample whose grid has at most ``max_tiles`` cells (the grid planning of scene
    tiling); returns the input and that downsample."""
    plan = plan_grid(image.width, image.height, tile=tile, max_tiles=max_tiles)
    if plan.downsample > 1:
        image = image.resize((-(-image.width // plan.downsample), -(-image.height // plan.downsample)),
                             Image.Resampling.LANCZOS)
    part = partition_highres(image, tile)
    return HighResInput(part.global_view, part.tiles, part.rows, part.cols), plan.downsample


def clip_stack(clip: Clip) -> StackInput:
    """A clip's frames (time order) as one ordered stack of ``<vid>`` frames, each traced by its
    source file, its index among the source's frames and its time in seconds."""
    return StackInput([frame.image for frame in clip.frames],
                      [ImageTrace(path=clip.source, index=frame.index, time_s=round(frame.time_s, TIME_DECIMALS))
                       for frame in clip.frames])
