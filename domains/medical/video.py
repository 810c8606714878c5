"""Clips: frames in time, from video files (PyAV) and cine DICOM (:mod:`~longllava.domains.medical.cine`).

A clip is sampled by presentation time, as the paper samples long video: one frame per ``1 / fps``
seconds (the frame on screen at that moment), evenly spread over the whole clip when that would be
more than ``max_frames``. Each kept frame carries its time in seconds from the clip's first frame
and its index in the source, so an answer can be traced back to a moment of the clip.

Videos are demuxed once for the presentation times of all frames (no decoding), the frames to keep
are chosen from those times, and only then decoded; only kept frames become images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from longllava.errors import InputError

DEFAULT_FPS = 1.0  # the paper's video sampling rate
DEFAULT_MAX_FRAMES = 256  # Video-MME's largest setting in the paper
SEEK_GAP_S = 10.0  # seek rather than decode through gaps longer than this between kept frames
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv"}


@dataclass(frozen=True)
class ClipFrame:
    image: Image.Image
    time_s: float  # presentation time in seconds from the clip's first frame
    index: int  # position of the frame among all frames of the source, in time order


@dataclass
class Clip:
    """Frames of a video or cine loop in time order, and what they were sampled from."""

    frames: list[ClipFrame]
    source: str
    num_source_frames: int
    duration_s: float  # time of the source's last frame
    metadata: dict[str, Any] = field(default_factory=dict)  # non-identifying fields only

    @property
    def times_s(self) -> list[float]:
        return [frame.time_s for frame in self.frames]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "num_frames": len(self.frames), "num_source_frames": self.num_source_frames,
                "duration_s": round(self.duration_s, 3), "times_s": [round(t, 3) for t in self.times_s],
                "indices": [frame.index for frame in self.frames], "metadata": self.metadata}


def _check_sampling(fps: float, max_frames: int | None) -> None:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a number > 0 (frames kept per second), got {fps!r}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")


def sample_frame_indices(times_s: Sequence[float], fps: float = DEFAULT_FPS,
                         max_frames: int | None = DEFAULT_MAX_FRAMES) -> list[int]:
    """Indices (into ascending ``times_s``) of the frames on screen at ``t0, t0 + 1/fps, ...``.

    When that is more than ``max_frames`` times, ``max_frames`` times evenly spaced from the first
    to the last frame are used instead. A frame is kept once even when several sample times fall on
    it (a clip slower than ``fps``)."""
    _check_sampling(fps, max_frames)
    times = np.asarray(times_s, dtype=np.float64)
    if times.size == 0:
        raise InputError("the clip has no frames")
    if np.any(np.diff(times) < 0):
        raise ValueError("frame times must be in ascending order")
    span = float(times[-1] - times[0])
    count = int(math.floor(span * fps + 1e-6)) + 1
    if max_frames is not None and count > max_frames:
        targets = np.linspace(times[0], times[-1], max_frames)
    else:
        targets = times[0] + np.arange(count) / fps
    # the frame on screen at time t: the last frame whose time is <= t (1 us tolerance for rounding)
    picked = np.searchsorted(times, targets + 1e-6, side="right") - 1
    return sorted(set(int(i) for i in picked))


def is_video_path(path: str | PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _video_error(path: Path, error: Exception) -> InputError:
    return InputError(
        f"{path}: the video cannot be read ({type(error).__name__}: {error}); the file is corrupt, truncated or "
        "not a video - check it plays, or re-encode it (ffmpeg -i in -c:v libx264 out.mp4)"
    )


def _decode_at(container, stream, wanted: list[int]) -> dict[int, Image.Image]:
    """Images of the frames with presentation times ``wanted`` (ascending), decoding forward and
    seeking to the keyframe before a wanted frame when it lies more than ``SEEK_GAP_S`` ahead."""
    time_base = float(stream.time_base)
    images: dict[int, Image.Image] = {}
    frames, current = None, None  # the decoding iterator, and the last frame it gave
    for target in wanted:
        if current is None or current.pts < target:
            if frames is None:
                frames = iter(container.decode(stream))
            elif (target - current.pts) * time_base > SEEK_GAP_S:
                container.seek(target, stream=stream, backward=True)
                frames = iter(container.decode(stream))
            current = next((f for f in frames if f.pts is not None and f.pts >= target), None)
            if current is None:
                break  # the stream ended early (truncated): keep what was decoded
        if current.pts == target:
            images[target] = current.to_image()
    return images


def load_video(path: str | PathLike[str], fps: float = DEFAULT_FPS,
               max_frames: int | None = DEFAULT_MAX_FRAMES) -> Clip:
    """Frames of a video file (any container / codec FFmpeg reads) sampled by presentation time."""
    import av

    path = Path(path)
    _check_sampling(fps, max_frames)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: the file has no video stream (audio only?); give a video file")
            stream = container.streams.video[0]
            pts = sorted(packet.pts for packet in container.demux(stream) if packet.pts is not None and packet.size)
        if not pts:
            raise InputError(f"{path}: the video stream holds no frames with presentation time stamps; "
                             "remux it (ffmpeg -i in -c copy out.mp4) or re-encode it")
        time_base = float(stream.time_base)
        times = [(p - pts[0]) * time_base for p in pts]
        keep = sample_frame_indices(times, fps, max_frames)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            images = _decode_at(container, stream, [pts[i] for i in keep])
        frames = [ClipFrame(images[pts[i]], times[i], i) for i in keep if pts[i] in images]
    except InputError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise _video_error(path, error) from error
    if not frames:
        raise InputError(f"{path}: no frame of the video could be decoded; the file is corrupt or truncated")
    metadata = {"format": "video", "codec": stream.codec_context.name, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "average_fps": float(stream.average_rate or 0) or None,
                "sampled_fps": fps, "max_frames": max_frames}
    return Clip(frames, str(path), len(pts), times[-1], metadata)
