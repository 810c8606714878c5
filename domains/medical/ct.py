"""CT volumes from NIfTI files, DICOM folders / file lists / zips, as one HU array in one orientation.

Canonical orientation (both readers reorient to it, so the same patient data gives the same array):

- ``hu`` is indexed ``(z, y, x)``: axial slices, each shown in the radiological display
  convention (as on a PACS viewer);
- z (slice index) increases from inferior to superior, so ``slice_z_mm`` ascends;
- y (image row) increases from anterior to posterior (anterior at the top of the image);
- x (image column) increases from patient right to left (patient right on the image's left).

``orientation`` names, nibabel/ITK style, the patient direction toward which the (x, y, z) =
(column, row, slice) indices increase: always ``"LPS"`` after loading. The reader's original
codes are kept in ``metadata["source_orientation"]``. Reorientation is axis flips and transposes
(views, no copy, no resampling); an oblique acquisition is assigned to its closest axes and
flagged in ``metadata["oblique"]``.

Patient identifiers (name, ID, birth date, ...) are never read into the volume, its metadata,
warnings or error messages: metadata is built from an allow-list of acquisition fields.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import ornt2axcodes

from longllava.domains.medical.orientation import check_affine, is_oblique, to_canonical
from longllava.domains.medical.volume import CTSpacingWarning, CTVolume
from longllava.errors import InputError

__all__ = ["CTSpacingWarning", "CTVolume", "apply_rescale", "load_ct", "read_nifti"]

_INT16 = np.iinfo(np.int16)
_READ_CHUNK = 16 << 20  # bytes decompressed per read


def load_ct(
    path: str | PathLike[str] | Sequence[str | PathLike[str]],
    *,
    series: str | None = None,
    allow_non_ct: bool = False,
) -> CTVolume:
    """Load a CT volume from a ``.nii``/``.nii.gz`` file, a DICOM folder, a list of DICOM files, a
    ``.zip`` of a DICOM series or a single (multi-frame) DICOM file.

    ``series`` picks one SeriesInstanceUID (or SeriesNumber) when DICOM input holds several;
    ``allow_non_ct`` accepts other modalities (MR, ...), whose values are then not HU.
    """
    from longllava.domains.medical import dicom

    if isinstance(path, (list, tuple)):
        files = [Path(p) for p in path]
        missing = [str(p) for p in files if not p.is_file()]
        if not files:
            raise InputError("load_ct got an empty list of DICOM files: pass at least one file")
        if missing:
            raise InputError(f"DICOM file(s) not found: {', '.join(missing[:5])}")
        return dicom.read_dicom_series(dicom.file_sources(files), str(files[0].parent), series, allow_non_ct)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (expected a NIfTI file, a DICOM folder or a .zip of DICOM)")
    if path.is_dir():
        return dicom.read_dicom_series(dicom.folder_sources(path), str(path), series, allow_non_ct)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if name.endswith(".zip"):
        with dicom.zip_sources(path) as sources:
            return dicom.read_dicom_series(sources, str(path), series, allow_non_ct)
    return dicom.read_dicom_series(dicom.file_sources([path]), str(path), series, allow_non_ct)


def read_nifti(path: str | PathLike[str]) -> CTVolume:
    """A NIfTI CT: header scaling (scl_slope / scl_inter) applied, reoriented to the canonical orientation."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    try:
        image = nib.load(path)
    except (ImageFileError, OSError, EOFError, zlib.error, ValueError) as error:
        raise InputError(f"{path}: not a readable NIfTI file ({error}); check the file is complete and .nii/.nii.gz") from error
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(
            f"{path}: a CT volume must be 3D, this NIfTI has shape {image.shape}"
            + (" (4D: a time series or several volumes); extract one 3D volume first" if len(image.shape) >= 4 else "")
        )
    zooms = _stored_zooms(image, path)
    if any(not z > 0 for z in zooms):
        raise InputError(f"{path}: voxel spacing (pixdim) must be > 0 mm, got {tuple(float(z) for z in zooms)}; fix the header")
    affine = np.asarray(image.affine, dtype=np.float64)
    check_affine(affine, path)

    try:
        raw = _read_voxels(image, path).reshape(shape, order="F")
    except (EOFError, OSError, zlib.error, ValueError) as error:
        raise InputError(
            f"{path}: the voxel data cannot be read ({error}); the file is truncated or corrupt (a partial download?)"
        ) from error
    header_slope, header_inter = _nifti_scaling(image)
    hu = apply_rescale(raw, header_slope or 1.0, header_inter or 0.0)

    canonical, canonical_affine, ornt, _ = to_canonical(hu, affine)
    metadata = {
        "format": "nifti",
        "source_orientation": "".join(ornt2axcodes(ornt)),
        "oblique": is_oblique(affine),
        "stored_dtype": str(raw.dtype),
        # Scaling the header asked for (None when absent / identity): lets CT-RATE tell HU from raw values.
        "nifti_scl_slope": header_slope,
        "nifti_scl_inter": header_inter,
    }
    spacing = tuple(float(s) for s in np.linalg.norm(canonical_affine[:3, :3], axis=0))
    z_mm = canonical_affine[2, 3] + canonical_affine[2, 0] * np.arange(canonical.shape[0])
    return CTVolume(canonical, spacing, z_mm, canonical_affine, metadata=metadata, source=str(path))


def _read_voxels(image: Any, path: Path) -> np.ndarray:
    """The stored (unscaled) voxels, decompressed in chunks straight into one array.

    nibabel's own ``get_unscaled`` holds the decompressed bytes and the array at once (2x the
    volume for .nii.gz); this keeps the peak at the volume plus one chunk.
    """
    from nibabel.openers import ImageOpener

    dtype = image.header.get_data_dtype()
    out = np.empty(image.dataobj.shape, dtype=dtype, order="F")
    buffer = memoryview(out.reshape(-1, order="F").view(np.uint8))
    with ImageOpener(path) as stream:
        stream.seek(int(image.dataobj.offset))
        filled = 0
        while filled < len(buffer):
            count = stream.readinto(buffer[filled : filled + _READ_CHUNK])
            if not count:
                raise EOFError(f"the voxel data ends after {filled:,} of {len(buffer):,} bytes")
            filled += count
    return out if dtype.isnative else out.astype(dtype.newbyteorder("="))


def _stored_zooms(image: Any, path: Path) -> tuple[float, float, float]:
    """pixdim[1:4] as stored: nibabel's loader silently replaces 0 by 1 and negatives by their
    absolute value, which would turn a broken header into a wrong spacing."""
    from nibabel.openers import ImageOpener

    with ImageOpener(path) as stream:
        header = type(image.header).from_fileobj(stream, check=False)
    return tuple(float(z) for z in header["pixdim"][1:4])  # type: ignore[return-value]


def _nifti_scaling(image: Any) -> tuple[float | None, float | None]:
    """scl_slope / scl_inter from the header (nibabel moves them onto the data proxy); None if identity."""
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    if slope == 1 and inter == 0:
        return None, None
    return slope, inter


def apply_rescale(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """``raw * slope + inter`` as int16 when the result is integral and fits, else float32."""
    integral = np.issubdtype(raw.dtype, np.integer) and float(slope).is_integer() and float(inter).is_integer()
    if integral and raw.dtype == np.int16 and slope == 1 and inter == 0:
        return raw
    if integral and raw.size:
        ends = np.array([raw.min(), raw.max()], dtype=np.int64) * int(slope) + int(inter)
        if ends.min() >= _INT16.min and ends.max() <= _INT16.max:
            if slope == 1 and inter == 0:
                return raw.astype(np.int16)
            return (raw.astype(np.int32) * int(slope) + int(inter)).astype(np.int16)
    hu = raw.astype(np.float32, copy=False)  # raw is our own fresh array: scale it in place
    if slope != 1:
        hu *= np.float32(slope)
    if inter != 0:
        hu += np.float32(inter)
    return hu
