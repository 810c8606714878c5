"""DICOM series -> :class:`~longllava.domains.medical.ct.CTVolume` (pydicom + pylibjpeg decoder plugins).

Each file's header is parsed once, up to its pixel data (to group by SeriesInstanceUID, check
modality, order the slices and pick the output dtype); pydicom's decoder then reads the pixel data
from the offset where that parse stopped, one slice (or frame) at a time, straight into the
preallocated volume, so peak memory stays near one volume and no header is parsed twice. Slices
are ordered by ImagePositionPatient projected on the slice normal (InstanceNumber when positions
are missing); RescaleSlope / RescaleIntercept are applied per slice (per frame for enhanced
multi-frame CT). :func:`dicom_content` tells a volume from a cine clip (frames in time, read by
:mod:`~longllava.domains.medical.cine`); ``load_ct`` refuses a clip with a message that says so.
"""

from __future__ import annotations

import gc
import io
import os
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from nibabel.orientations import ornt2axcodes

from longllava.domains.medical.orientation import check_affine, is_oblique, to_canonical
from longllava.domains.medical.volume import CTSpacingWarning, CTVolume
from longllava.errors import InputError

# What to install when pydicom has no working decoder for a transfer syntax.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE lossless
}
# Non-identifying acquisition fields copied into CTVolume.metadata (an allow-list: nothing else leaves).
_METADATA_FIELDS = (
    "Modality",
    "SeriesDescription",
    "StudyDescription",
    "BodyPartExamined",
    "SeriesNumber",
    "ImageType",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "XRayTubeCurrent",
    "ConvolutionKernel",
    "SliceThickness",
    "ContrastBolusAgent",
    "PatientPosition",
)
_INT16 = np.iinfo(np.int16)
# How a multi-frame file says its frames are spaced in time (a cine clip, not a volume).
TIMING_ATTRIBUTES = ("FrameTimeVector", "FrameTime", "CineRate")
_PIXEL_KEYWORDS = {Tag(keyword): keyword for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")}


@dataclass(frozen=True)
class DicomSource:
    """One DICOM file: ``name`` for messages, ``open`` returns a new binary stream (caller closes it)."""

    name: str
    open: Callable[[], BinaryIO]


def file_sources(files: list[Path]) -> list[DicomSource]:
    return [DicomSource(str(f), lambda f=f: open(f, "rb")) for f in files]


def folder_sources(folder: Path) -> list[DicomSource]:
    """Every file under ``folder`` (recursively), except hidden files and DICOMDIR indexes."""
    files = sorted(
        Path(root) / name
        for root, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".") and name.upper() != "DICOMDIR"
    )
    if not files:
        raise InputError(f"{folder}: the folder has no files; point to a folder that holds the DICOM series")
    return file_sources(files)


@contextmanager
def zip_sources(path: Path) -> Iterator[list[DicomSource]]:
    """The members of a zip of DICOM files; entries that would escape the archive are rejected."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{path}: not a readable zip file ({error})") from error
    with archive:
        members = []
        for info in archive.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise InputError(
                    f"{path}: zip entry {info.filename!r} has an absolute or '..' path; such archives are "
                    "rejected (re-create the zip with relative member names)"
                )
            if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith(".") or parts[-1].upper() == "DICOMDIR":
                continue
            members.append(info.filename)
        if not members:
            raise InputError(f"{path}: the zip holds no files; expected a DICOM series")
        yield [
            DicomSource(f"{path}:{name}", lambda name=name: io.BytesIO(archive.read(name))) for name in sorted(members)
        ]


@dataclass(frozen=True)
class _DicomFile:
    """A file parsed up to its pixel data: its header and the byte offset of the pixel data element."""

    source: DicomSource
    header: Dataset
    pixel_data_at: int


@dataclass
class _Frame:
    """One 2D image of the series: a single-frame file, or frame ``index`` of a multi-frame file."""

    file: _DicomFile
    index: int | None
    position: np.ndarray | None  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray  # ImageOrientationPatient (6,)
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns)
    slope: float
    intercept: float
    order: float  # InstanceNumber / frame number: the fallback order

    @property
    def source(self) -> DicomSource:
        return self.file.source


def frame_count(header: Dataset) -> int:
    return int(header.get("NumberOfFrames", 1) or 1)


def is_cine(header: Dataset) -> bool:
    """Several frames, and how they are spaced in time: a clip (ultrasound, echo, XA, cine MR)."""
    return frame_count(header) > 1 and any(header.get(keyword) not in (None, "") for keyword in TIMING_ATTRIBUTES)


def dicom_content(header: Dataset) -> str:
    """``"clip"`` or ``"volume"`` from a DICOM header; an :class:`InputError` when it is neither."""
    frames = frame_count(header)
    if is_cine(header):
        return "clip"
    if "PerFrameFunctionalGroupsSequence" in header or (frames == 1 and "ImagePositionPatient" in header):
        return "volume"
    if frames == 1 and header.get("TriggerTime") not in (None, ""):
        return "clip"
    modality = header.get("Modality", "?")
    raise InputError(
        f"{frames} frame(s) of modality {modality} with neither frame times (FrameTime, FrameTimeVector, "
        "CineRate; TriggerTime per file of a cine series) nor per-frame positions of a volume "
        "(PerFrameFunctionalGroupsSequence / ImagePositionPatient); it can be read neither as a clip nor as a volume"
    )


def read_dicom_series(sources: list[DicomSource], label: str, series: str | None, allow_non_ct: bool) -> CTVolume:
    with _collector_paused():
        return _read_series(sources, label, series, allow_non_ct)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a series loads: its headers stay alive until
    the volume is built (~90 objects per file), and the collections that their creation triggers
    re-scan them again and again (~8% of loading an uncompressed series). Collection resumes after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_series(sources: list[DicomSource], label: str, series: str | None, allow_non_ct: bool) -> CTVolume:
    chosen = _choose_series([_read_header(source) for source in sources], label, series)
    first = chosen[0].header
    modality = str(first.get("Modality", ""))
    if is_cine(first):
        raise InputError(
            f"{label}: a cine clip ({frame_count(first)} {modality or 'DICOM'} frames spaced in time by "
            "FrameTime / FrameTimeVector / CineRate), not a volume; load it with load_clip (CLI: ask --video)"
        )
    if modality != "CT" and not allow_non_ct:
        raise InputError(
            f"{label}: the series has modality {modality or 'unknown'!r}, not CT; its values are not Hounsfield "
            "units. Pass allow_non_ct=True (CLI: --allow-non-ct) to load it anyway"
        )
    frames = [frame for file in chosen for frame in _frames(file)]
    rows, columns = int(first.Rows), int(first.Columns)
    for file in chosen:
        header = file.header
        size = (int(_get(header, "Rows")), int(_get(header, "Columns")))
        if size != (rows, columns):
            raise InputError(f"{file.source.name}: image size {size[0]}x{size[1]} differs from the series' {rows}x{columns}")
        samples = int(_get(header, "SamplesPerPixel", 1))
        if samples != 1:
            raise InputError(f"{file.source.name}: a colour image (SamplesPerPixel {samples}); CT slices are grayscale")
    _check_decoder(chosen, label)

    frames, positions, affine_ras = _geometry(frames, first, label)
    volume = np.empty((len(frames), rows, columns), dtype=_hu_dtype(frames, first))
    _decode_into(volume, frames)

    canonical, canonical_affine, ornt, transform = to_canonical(volume, affine_ras)
    if transform[0, 0] == 0 and frames[0].position is not None:
        # The slices stack along canonical z: keep their true positions (irregular spacing stays visible).
        z_mm = np.array([f.position[2] for f in frames], dtype=np.float64)
        z_mm = z_mm[::-1] if transform[0, 1] == -1 else z_mm
    else:
        z_mm = canonical_affine[2, 3] + canonical_affine[2, 0] * np.arange(canonical.shape[0])
    metadata = _metadata(first, len(chosen), frames)
    metadata.update(
        format="dicom",
        # Codes in (column, row, slice) order, like NIfTI's (x, y, z); slices counted in sorted order.
        source_orientation="".join(reversed(ornt2axcodes(ornt))),
        oblique=is_oblique(affine_ras),
        slice_positions_mm=[round(float(p), 4) for p in positions],
    )
    spacing = tuple(float(s) for s in np.linalg.norm(canonical_affine[:3, :3], axis=0))
    return CTVolume(canonical, spacing, z_mm, canonical_affine, metadata=metadata, source=label)


def _geometry(frames: list[_Frame], first: Dataset, label: str) -> tuple[list[_Frame], np.ndarray, np.ndarray]:
    """Frames sorted along the slice normal, their positions on it, and the (slice, row, column) ->
    RAS affine; checked before any pixel is decoded."""
    orientation, spacing_yx = frames[0].orientation, frames[0].spacing
    # One comparison over all frames: np.allclose per frame costs more than the rest of the geometry.
    odd_orientation = ~np.isclose([f.orientation for f in frames], orientation, atol=1e-3).all(axis=1)
    if odd_orientation.any():
        frame = frames[int(np.argmax(odd_orientation))]
        raise InputError(f"{frame.source.name}: ImageOrientationPatient differs from the rest of the series; load each stack separately")
    odd_spacing = ~np.isclose([f.spacing for f in frames], spacing_yx, rtol=1e-3).all(axis=1)
    if odd_spacing.any():
        frame = frames[int(np.argmax(odd_spacing))]
        raise InputError(f"{frame.source.name}: PixelSpacing {list(frame.spacing)} differs from the series' {list(spacing_yx)}")
    row_dir, column_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, column_dir)
    nominal_step = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    frames, positions, step = _order_frames(frames, normal, label, nominal_step)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = normal * step
    affine_lps[:3, 1] = column_dir * spacing_yx[0]
    affine_lps[:3, 2] = row_dir * spacing_yx[1]
    affine_lps[:3, 3] = frames[0].position if frames[0].position is not None else 0.0
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    check_affine(affine_ras, label)
    return frames, positions, affine_ras


def _read_header(source: DicomSource) -> _DicomFile:
    try:
        with source.open() as stream:
            # pydicom stops with the stream at the start of the pixel data element: remember where.
            header = pydicom.dcmread(stream, stop_before_pixels=True)
            return _DicomFile(source, header, stream.tell())
    except InvalidDicomError as error:
        raise InputError(
            f"{source.name}: not a DICOM file (no DICM preamble / file meta); remove it, or pass the DICOM files explicitly"
        ) from error
    # pydicom reports malformed bytes with many exception types (EOFError, struct.error, ValueError, ...).
    except Exception as error:
        raise InputError(f"{source.name}: corrupt DICOM file ({type(error).__name__}: {error})") from error


def _choose_series(files: list[_DicomFile], label: str, series: str | None) -> list[_DicomFile]:
    groups: dict[str, list[_DicomFile]] = {}
    for file in files:
        uid = _get(file.header, "SeriesInstanceUID")
        if uid is None:
            raise InputError(f"{file.source.name}: no SeriesInstanceUID; not an image of a DICOM series")
        groups.setdefault(str(uid), []).append(file)
    if series is not None:
        picked = [uid for uid, group in groups.items() if series in (uid, str(group[0].header.get("SeriesNumber", "")))]
        if len(picked) != 1:
            raise InputError(f"{label}: series {series!r} {'is ambiguous' if picked else 'not found'}; available:\n{_describe(groups)}")
        return groups[picked[0]]
    if len(groups) > 1:
        raise InputError(
            f"{label}: {len(groups)} DICOM series are mixed here; pick one with series=UID or SeriesNumber "
            f"(CLI: --series):\n{_describe(groups)}"
        )
    return next(iter(groups.values()))


def _describe(groups: dict[str, list[_DicomFile]]) -> str:
    lines = []
    for uid, group in groups.items():
        header = group[0].header
        lines.append(
            f"  {uid}  SeriesNumber {header.get('SeriesNumber', '?')}  {header.get('Modality', '?')}  "
            f"{str(header.get('SeriesDescription', '')).strip()!r}  {len(group)} file(s)"
        )
    return "\n".join(lines)


def _frames(file: _DicomFile) -> list[_Frame]:
    source, header = file.source, file.header
    frames = int(_get(header, "NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in header:
        if frames > 1:
            raise InputError(f"{source.name}: a multi-frame image without per-frame positions (not an enhanced CT/MR); cannot build a volume")
        return [
            _Frame(
                file,
                None,
                _vector(_get(header, "ImagePositionPatient")),
                _required(source, header, "ImageOrientationPatient"),
                _pixel_spacing(source, header),
                float(_get(header, "RescaleSlope", 1) or 1),
                float(_get(header, "RescaleIntercept", 0) or 0),
                float(_get(header, "InstanceNumber", 0) or 0),
            )
        ]
    shared = header.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in header else Dataset()
    out = []
    for index, group in enumerate(header.PerFrameFunctionalGroupsSequence):
        def find(sequence: str, keyword: str, default: Any = None) -> Any:
            for holder in (group, shared):
                if sequence in holder and keyword in holder[sequence].value[0]:
                    return holder[sequence].value[0][keyword].value
            return header.get(keyword, default)

        orientation = find("PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = find("PixelMeasuresSequence", "PixelSpacing")
        if orientation is None or spacing is None:
            raise InputError(f"{source.name} frame {index + 1}: no ImageOrientationPatient / PixelSpacing in its functional groups")
        out.append(
            _Frame(
                file,
                index,
                _vector(find("PlanePositionSequence", "ImagePositionPatient")),
                np.array([float(v) for v in orientation]),
                _positive_spacing(source, [float(v) for v in spacing]),
                float(find("PixelValueTransformationSequence", "RescaleSlope", 1) or 1),
                float(find("PixelValueTransformationSequence", "RescaleIntercept", 0) or 0),
                float(index),
            )
        )
    return out


@lru_cache(maxsize=None)
def _tag(keyword: str) -> BaseTag:
    return Tag(keyword)


def _get(header: Dataset, keyword: str, default: Any = None) -> Any:
    """``header.get(keyword)`` looked up by tag (pydicom's keyword path costs ~1.5x more, on every file)."""
    tag = _tag(keyword)
    return header[tag].value if tag in header else default


def _vector(value: Any) -> np.ndarray | None:
    return None if value is None else np.array([float(v) for v in value])


def _required(source: DicomSource, header: Dataset, keyword: str) -> np.ndarray:
    value = _get(header, keyword)
    if value is None:
        raise InputError(f"{source.name}: no {keyword}; cannot place the slice in the patient")
    return np.array([float(v) for v in value])


def _pixel_spacing(source: DicomSource, header: Dataset) -> tuple[float, float]:
    return _positive_spacing(source, [float(v) for v in _required(source, header, "PixelSpacing")])


def _positive_spacing(source: DicomSource, spacing: list[float]) -> tuple[float, float]:
    if len(spacing) != 2 or not all(s > 0 for s in spacing):
        raise InputError(f"{source.name}: PixelSpacing must be two values > 0 mm, got {spacing}")
    return spacing[0], spacing[1]


def _order_frames(
    frames: list[_Frame], normal: np.ndarray, label: str, fallback_step: float
) -> tuple[list[_Frame], np.ndarray, float]:
    """Sort along the slice normal; return frames, their positions along the normal and the step (mm)."""
    if any(f.position is None for f in frames):
        frames = sorted(frames, key=lambda f: f.order)
        warnings.warn(
            f"{label}: slices without ImagePositionPatient; ordered by InstanceNumber with the nominal "
            f"spacing {fallback_step:g} mm (SpacingBetweenSlices / SliceThickness)",
            CTSpacingWarning,
            stacklevel=3,
        )
        return frames, np.arange(len(frames)) * fallback_step, fallback_step
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    positions = np.array([float(f.position @ normal) for f in frames])
    if len(frames) == 1:
        return frames, positions, 1.0
    steps = np.diff(positions)
    duplicates = np.flatnonzero(steps < 1e-3)
    if duplicates.size:
        a, b = frames[duplicates[0]], frames[duplicates[0] + 1]
        raise InputError(
            f"{label}: two slices share the position {positions[duplicates[0]]:.3f} mm along the slice normal "
            f"({a.source.name}, {b.source.name}); the folder mixes acquisitions - keep one of each"
        )
    step = float(np.median(steps))
    irregular = np.flatnonzero(np.abs(steps - step) > max(0.01 * step, 0.01))
    if irregular.size:
        gaps = ", ".join(
            f"{positions[i]:.2f}->{positions[i + 1]:.2f} mm ({steps[i]:.2f} mm"
            + (f", ~{round(steps[i] / step) - 1} missing slice(s))" if steps[i] > 1.5 * step else ")")
            for i in irregular[:10]
        )
        warnings.warn(
            f"{label}: irregular slice spacing (usual step {step:.2f} mm) at {gaps}"
            + (f" and {irregular.size - 10} more" if irregular.size > 10 else ""),
            CTSpacingWarning,
            stacklevel=3,
        )
    return frames, positions, step


def _check_decoder(chosen: list[_DicomFile], label: str) -> None:
    from pydicom.pixels import get_decoder

    for syntax in {f.header.file_meta.TransferSyntaxUID for f in chosen if "TransferSyntaxUID" in f.header.file_meta}:
        if syntax.is_deflated:
            raise InputError(
                f"{label}: the series uses {syntax.name}, which is not supported; inflate it first "
                "(e.g. dcmconv +te from DCMTK, or pydicom: dcmread and save_as with Explicit VR Little Endian)"
            )
        if not syntax.is_compressed:
            continue
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as error:
            raise InputError(f"{label}: no decoder exists in pydicom for transfer syntax {syntax.name}") from error
        if not decoder.is_available:
            package = _DECODER_PACKAGES.get(str(syntax), "a pydicom decoder plugin")
            raise InputError(
                f"{label}: the series is compressed with {syntax.name} and no decoder plugin for it is installed; "
                f"install {package} (pip install pylibjpeg {package})"
            )


def _hu_dtype(frames: list[_Frame], header: Dataset) -> type:
    """int16 when every slice's rescale is integral and the stored value range maps inside int16."""
    bits = int(header.get("BitsStored", header.get("BitsAllocated", 16)))
    signed = int(header.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    for frame in frames:
        if not (frame.slope.is_integer() and frame.intercept.is_integer()):
            return np.float32
        ends = (low * frame.slope + frame.intercept, high * frame.slope + frame.intercept)
        if min(ends) < _INT16.min or max(ends) > _INT16.max:
            return np.float32
    return np.int16


def _decode_into(volume: np.ndarray, frames: list[_Frame]) -> None:
    slot = {(id(f.file), f.index): k for k, f in enumerate(frames)}
    done: set[int] = set()
    for frame in frames:
        file = frame.file
        if id(file) in done:
            continue
        done.add(id(file))
        keys = [None] if frame.index is None else range(sum(1 for f in frames if f.file is file))
        try:
            for key, pixels in zip(keys, _decoded_frames(file)):
                k = slot[(id(file), key)]
                _store(volume, k, pixels, frames[k], file.source)
        except InputError:
            raise
        # Decoder plugins raise assorted errors (RuntimeError, ValueError, ...) on damaged pixel data.
        except Exception as error:
            raise InputError(f"{file.source.name}: the pixel data cannot be decoded ({type(error).__name__}: {error})") from error


def _decoded_frames(file: _DicomFile) -> Iterator[np.ndarray]:
    """The file's frames in stored order, decoded by pydicom from where the header pass stopped."""
    from pydicom.pixels import as_pixel_options, get_decoder

    syntax = UID(file.header.file_meta.TransferSyntaxUID)
    with file.source.open() as stream:
        stream.seek(file.pixel_data_at)
        keyword, vr = _read_pixel_element_header(stream, syntax, file.source)
        options = as_pixel_options(file.header, transfer_syntax_uid=syntax, pixel_keyword=keyword, pixel_vr=vr)
        for pixels, _ in get_decoder(syntax).iter_array(stream, **options):
            yield pixels


def _read_pixel_element_header(stream: BinaryIO, syntax: UID, source: DicomSource) -> tuple[str, str | None]:
    """The pixel data element's keyword and VR; leaves ``stream`` at the element's value, where
    pydicom's decoders start reading (the element header is 8 bytes, 12 with an explicit VR)."""
    head = stream.read(8)
    tag = Tag(*struct.unpack("<HH" if syntax.is_little_endian else ">HH", head[:4])) if len(head) == 8 else None
    if tag not in _PIXEL_KEYWORDS:
        raise InputError(f"{source.name}: no Pixel Data element after the header; the file holds no image")
    if syntax.is_implicit_VR:
        return _PIXEL_KEYWORDS[tag], None
    stream.read(4)  # OB / OW / OF / OD: 2 reserved bytes in ``head``, then a 4-byte length
    return _PIXEL_KEYWORDS[tag], head[4:6].decode("ascii")


def _store(volume: np.ndarray, k: int, pixels: np.ndarray, frame: _Frame, source: DicomSource) -> None:
    if pixels.shape != volume.shape[1:]:
        raise InputError(f"{source.name}: decoded pixels have shape {pixels.shape}, expected {volume.shape[1:]}")
    if volume.dtype == np.int16:
        if frame.slope == 1:
            # _hu_dtype checked that every stored value + intercept fits int16, so adding in int16
            # (wrapping) gives the exact result, without an int32 pass.
            np.add(pixels, np.int16(frame.intercept), out=volume[k], casting="unsafe", dtype=np.int16)
        else:
            volume[k] = pixels.astype(np.int32) * int(frame.slope) + int(frame.intercept)
    else:
        volume[k] = pixels.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept)


def _metadata(header: Dataset, num_files: int, frames: list[_Frame]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for keyword in _METADATA_FIELDS:
        if keyword in header and header[keyword].value not in (None, ""):
            metadata[_snake(keyword)] = _plain(header[keyword].value)
    metadata["transfer_syntax"] = UID(header.file_meta.TransferSyntaxUID).name if "TransferSyntaxUID" in header.file_meta else None
    metadata["sop_class"] = UID(str(header.get("SOPClassUID", ""))).name or None
    metadata["num_files"] = num_files
    metadata["multi_frame"] = frames[0].index is not None
    metadata["rescale_slope_intercept"] = [list(pair) for pair in sorted({(f.slope, f.intercept) for f in frames})]
    return metadata


def _snake(keyword: str) -> str:
    return {"KVP": "kvp"}.get(keyword) or "".join("_" + c.lower() if c.isupper() else c for c in keyword).lstrip("_")


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return str(value)
