"""One entry point for clips: a video file by its suffix, anything else as cine DICOM."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

from longllava.domains.medical.cine import load_cine_dicom
from longllava.domains.medical.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, Clip, is_video_path, load_video


def load_clip(path: str | PathLike[str] | Sequence[str | PathLike[str]], fps: float = DEFAULT_FPS,
              max_frames: int | None = DEFAULT_MAX_FRAMES) -> Clip:
    """A video file (by its suffix: :func:`~longllava.domains.medical.video.load_video`); a DICOM file,
    folder, ``.zip`` or file list as cine DICOM (:func:`~longllava.domains.medical.cine.load_cine_dicom`)."""
    if isinstance(path, (str, PathLike)) and is_video_path(path):
        return load_video(path, fps, max_frames)
    return load_cine_dicom(path, fps, max_frames)
