"""``longllava bench clip``: how long sampling a video takes, against decoding every frame.

A synthetic video (moving gradient, MPEG-4 part 2, a keyframe every ``gop`` frames) is written to a
temporary folder; then timed: decoding every frame (the floor of a decode-everything reader), and
:func:`~longllava.domains.medical.video.load_video` at 1 fps with a dense cap (every gap under
``SEEK_GAP_S``: decoded through) and a sparse one (gaps over it: seeks).
"""

from __future__ import annotations

import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from longllava.domains.medical.video import SEEK_GAP_S, load_video


def write_test_video(path: Path, duration_s: float, rate: int, size: tuple[int, int], gop: int) -> int:
    """A moving-gradient MPEG-4 video; returns its frame count."""
    import av

    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    count = int(duration_s * rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, rate)
        stream.codec_context.gop_size = gop
        for k in range(count):
            plane = ((ramp + 3 * k) % 256).astype(np.uint8)
            pixels = np.repeat(np.repeat(plane, height, axis=0)[..., None], 3, axis=2)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return count


def _decode_all(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def run_clip_bench(duration_s: float = 600.0, rate: int = 25, size: tuple[int, int] = (320, 240), gop: int = 250,
                   dense_frames: int = 256, sparse_frames: int = 16, workdir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        path = Path(folder) / "bench.mp4"
        start = time.perf_counter()
        frames = write_test_video(path, duration_s, rate, size, gop)
        report = {"duration_s": duration_s, "source_fps": rate, "size": list(size), "frames": frames,
                  "gop": gop, "seek_gap_s": SEEK_GAP_S, "encode_s": round(time.perf_counter() - start, 2),
                  "file_mb": round(path.stat().st_size / 2**20, 1)}
        start = time.perf_counter()
        _decode_all(path)
        report["decode_all_s"] = round(time.perf_counter() - start, 2)
        for name, cap in (("dense", dense_frames), ("sparse", sparse_frames)):
            start = time.perf_counter()
            clip = load_video(path, fps=1.0, max_frames=cap)
            seconds = time.perf_counter() - start
            gap = duration_s / max(1, len(clip.frames) - 1)
            report[f"{name}_frames"] = len(clip.frames)
            report[f"{name}_gap_s"] = round(gap, 2)
            report[f"{name}_s"] = round(seconds, 2)
            report[f"{name}_vs_decode_all"] = round(seconds / max(report["decode_all_s"], 1e-9), 2)
    return report
