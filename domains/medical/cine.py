"""Cine DICOM: multi-frame images with a time dimension (ultrasound, echo, XA / RF, cine MR) as clips.

What a DICOM file is comes from its attributes
(:func:`~longllava.domains.medical.dicom.dicom_content`):

- a **clip** when it holds several frames and says how they are spaced in time: Frame Time Vector
  (ms between frames), Frame Time (ms per frame) or Cine Rate (frames per second), in the order
  that Frame Increment Pointer names; a series of single-frame files is a clip when each has a
  Trigger Time (cine MR: ms after the R wave);
- a **volume** when its frames are placed in space (per-frame positions of an enhanced CT / MR, or
  single-frame slices with Image Position Patient): those go through
  :func:`~longllava.domains.medical.ct.load_ct`;
- anything else (several frames with neither times nor positions) is refused with an error that
  says which attributes are missing.

Frames are decoded one at a time, only those kept (:func:`~longllava.domains.medical.video.sample_frame_indices`).
Colour ultrasound stored as YBR is converted to RGB with pydicom's ``convert_color_space``;
palette colour through its lookup table; grey images above 8 bits through their VOI window, then
scaled to 8 bits over the kept frames (MONOCHROME1 inverted). Patient identifiers are never read
into the clip: its metadata is an allow-list of acquisition fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from longllava.domains.medical.dicom import (TIMING_ATTRIBUTES, DicomSource, _check_decoder, _plain, _read_header,
                                             _snake, dicom_content, file_sources, folder_sources, frame_count,
                                             zip_sources)
from longllava.domains.medical.video import (DEFAULT_FPS, DEFAULT_MAX_FRAMES, Clip, ClipFrame, _check_sampling,
                                             sample_frame_indices)
from longllava.errors import InputError

# Non-identifying fields copied into Clip.metadata (an allow-list: nothing else leaves the file).
_CLIP_METADATA_FIELDS = ("Modality", "Manufacturer", "ManufacturerModelName", "SeriesDescription",
                         "BodyPartExamined", "NumberOfFrames", "FrameTime", "CineRate", "HeartRate",
                         "PhotometricInterpretation", "Rows", "Columns")


def _frame_times(header: Dataset, name: str) -> np.ndarray:
    """Seconds from the first frame, from the timing attribute Frame Increment Pointer names (else the first present)."""
    frames = frame_count(header)
    pointers = header.get("FrameIncrementPointer")
    pointers = [] if pointers is None else ([pointers] if not isinstance(pointers, (list, tuple)) and
                                            type(pointers).__name__ != "MultiValue" else list(pointers))
    named = [keyword for keyword in TIMING_ATTRIBUTES if Tag(keyword) in [Tag(p) for p in pointers]]
    for keyword in named + [k for k in TIMING_ATTRIBUTES if k not in named]:
        value = header.get(keyword)
        if value in (None, ""):
            continue
        if keyword == "FrameTimeVector":
            steps = np.asarray([float(v) for v in value], dtype=np.float64)
            if steps.size != frames or np.any(steps[1:] <= 0):
                raise InputError(f"{name}: FrameTimeVector has {steps.size} values for {frames} frames (or steps "
                                 "that are not > 0 ms); the frame times are unusable")
            # the first value is the time before frame 1 (0 by the standard's example): times from frame 1
            return (np.cumsum(steps) - steps[0]) / 1000.0
        rate = 1000.0 / float(value) if keyword == "FrameTime" else float(value)
        if not rate > 0:
            raise InputError(f"{name}: {keyword} {value!r} must be > 0")
        return np.arange(frames) / rate
    raise InputError(f"{name}: {frames} frames but no FrameTime, FrameTimeVector or CineRate; not a cine clip")


def _to_uint8(frames: list[np.ndarray], header: Dataset) -> list[np.ndarray]:
    """Decoded frames -> 8-bit RGB or grey arrays."""
    from pydicom.pixels import apply_color_lut, apply_voi_lut

    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":  # 16-bit lookup table entries span 0..65535: keep the top byte
        frames = [apply_color_lut(frame, header) for frame in frames]
        frames = [(frame >> 8).astype(np.uint8) if frame.dtype == np.uint16 else frame for frame in frames]
    elif photometric.startswith("MONOCHROME") and int(header.get("BitsStored", 8)) > 8:
        frames = [apply_voi_lut(frame, header) for frame in frames]
    if all(frame.dtype == np.uint8 for frame in frames):
        out = frames
    else:  # one scale for the whole clip, so brightness changes between frames stay visible
        low = min(float(frame.min()) for frame in frames)
        high = max(float(frame.max()) for frame in frames)
        scale = 255.0 / (high - low) if high > low else 0.0
        out = [((frame.astype(np.float32) - low) * scale).astype(np.uint8) for frame in frames]
    if photometric == "MONOCHROME1":
        out = [255 - frame for frame in out]
    return out


def _decode(source: DicomSource, header: Dataset, indices: list[int]) -> list[np.ndarray]:
    from pydicom.pixels import convert_color_space, iter_pixels

    photometric = str(header.get("PhotometricInterpretation", ""))
    # YBR is decoded as stored and converted here; everything else as pydicom's decoders give it
    ybr = photometric in ("YBR_FULL", "YBR_FULL_422")
    try:
        with source.open() as stream:
            frames = list(iter_pixels(stream, indices=indices, raw=ybr))
    except InputError:
        raise
    # Decoder plugins raise assorted errors (RuntimeError, ValueError, ...) on damaged pixel data.
    except Exception as error:
        raise InputError(f"{source.name}: the pixel data cannot be decoded ({type(error).__name__}: {error})") from error
    if ybr:
        frames = [convert_color_space(frame, "YBR_FULL", "RGB") for frame in frames]
    return frames


def _metadata(header: Dataset, num_files: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {"format": "dicom-cine", "num_files": num_files}
    for keyword in _CLIP_METADATA_FIELDS:
        if keyword in header and header[keyword].value not in (None, ""):
            metadata[_snake(keyword)] = _plain(header[keyword].value)
    return metadata


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")


def _clip_from_file(source: DicomSource, header: Dataset, fps: float, max_frames: int | None) -> Clip:
    times = _frame_times(header, source.name)
    keep = sample_frame_indices(times, fps, max_frames)
    pixels = _to_uint8(_decode(source, header, keep), header)
    frames = [ClipFrame(_image(p), float(times[i]), i) for i, p in zip(keep, pixels)]
    return Clip(frames, source.name, len(times), float(times[-1]), _metadata(header, 1))


def _clip_from_series(files: list, label: str, fps: float, max_frames: int | None) -> Clip:
    """Single-frame files of one cine series, ordered by Trigger Time (ms)."""
    series = {str(f.header.get("SeriesInstanceUID", "")) for f in files}
    if len(series) > 1:
        raise InputError(f"{label}: {len(series)} DICOM series are mixed here; give the files of one cine series")
    untimed = [f.source.name for f in files if frame_count(f.header) != 1 or f.header.get("TriggerTime") in (None, "")]
    if untimed:
        raise InputError(f"{untimed[0]}: a cine series needs single-frame files that each have a TriggerTime; "
                         "give one multi-frame cine file instead, or the files of one cine series")
    positions = {tuple(round(float(v), 2) for v in f.header.ImagePositionPatient)
                 for f in files if "ImagePositionPatient" in f.header}
    if len(positions) > 1:
        raise InputError(f"{label}: the files lie at {len(positions)} slice positions; a cine series shows one plane "
                         "in time - give the files of one position (or load a volume with load_ct, CLI: --ct)")
    files = sorted(files, key=lambda f: (float(f.header.TriggerTime), int(f.header.get("InstanceNumber", 0) or 0)))
    times = np.array([float(f.header.TriggerTime) for f in files]) / 1000.0
    times -= times[0]
    keep = sample_frame_indices(times, fps, max_frames)
    decoded = [_decode(files[i].source, files[i].header, [0])[0] for i in keep]
    pixels = _to_uint8(decoded, files[0].header)
    frames = [ClipFrame(_image(p), float(times[i]), i) for i, p in zip(keep, pixels)]
    return Clip(frames, label, len(files), float(times[-1]), _metadata(files[0].header, len(files)))


def load_cine_dicom(path: str | PathLike[str] | Sequence[str | PathLike[str]], fps: float = DEFAULT_FPS,
                    max_frames: int | None = DEFAULT_MAX_FRAMES) -> Clip:
    """A cine clip from one multi-frame DICOM file, or from a cine series (folder, ``.zip`` or file list)."""
    _check_sampling(fps, max_frames)
    if not isinstance(path, (str, PathLike)):
        paths = [Path(p) for p in path]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"{missing[0]}: no such DICOM file")
        return _load_sources(file_sources(paths), f"{len(paths)} DICOM files", fps, max_frames)
    path = Path(path)
    if path.is_dir():
        return _load_sources(folder_sources(path), str(path), fps, max_frames)
    if path.suffix.lower() == ".zip":
        with zip_sources(path) as sources:
            return _load_sources(sources, str(path), fps, max_frames)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    return _load_sources(file_sources([path]), str(path), fps, max_frames)


def _load_sources(sources: list[DicomSource], label: str, fps: float, max_frames: int | None) -> Clip:
    files = [_read_header(source) for source in sources]
    _check_decoder(files, label)
    if any(frame_count(f.header) > 1 for f in files):
        if len(files) > 1:
            raise InputError(f"{label}: {len(files)} files, some multi-frame; give one multi-frame cine file at a time")
        file = files[0]
        try:
            kind = dicom_content(file.header)
        except InputError as error:
            raise InputError(f"{file.source.name}: {error}") from None
        if kind == "volume":
            raise InputError(f"{file.source.name}: a CT / MR volume (its frames are placed in space, not in time); "
                             "load it with load_ct (CLI: --ct), not as a clip")
        return _clip_from_file(file.source, file.header, fps, max_frames)
    return _clip_from_series(files, label, fps, max_frames)
