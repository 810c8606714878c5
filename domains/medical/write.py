"""HU volumes written as the files scanners and converters produce: a gzipped NIfTI or a DICOM
series (one CT Image Storage file per slice). ``load_ct`` reads either back to the same HU array.

Used where the project makes CT data of its own: the synthetic task set of the default model and
``longllava bench ct``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np

from longllava.errors import InputError

# DICOM stores unsigned values with RescaleIntercept -1024, as most scanners do; HU below air
# (-1024) cannot be stored and is clipped there.
DICOM_INTERCEPT = -1024


def _check_volume(hu_zyx: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    volume = np.asarray(hu_zyx)
    if volume.ndim != 3 or 0 in volume.shape:
        raise InputError(f"a CT volume to write must be a non-empty 3D (z, y, x) array, got shape {volume.shape}")
    if len(spacing_mm) != 3 or any(not s > 0 for s in spacing_mm):
        raise InputError(f"spacing_mm must be three positive (z, y, x) spacings in mm, got {tuple(spacing_mm)}")
    return volume


def write_ct_nifti(hu_zyx: np.ndarray, path: str | PathLike[str], spacing_mm: Sequence[float] = (5.0, 1.5, 1.5)) -> Path:
    """Write a (z, y, x) int16 HU volume as a NIfTI whose voxel axes run like DICOM's patient axes
    (x to the patient's left, y to posterior, z to superior), the sign flips in the affine; the
    same voxels as :func:`write_ct_dicom` writes. Returns ``path``."""
    import nibabel as nib

    volume = _check_volume(hu_zyx, spacing_mm)
    z, y, x = (float(s) for s in spacing_mm)
    affine = np.diag([-x, -y, z, 1.0])  # NIfTI world is RAS: patient-left = -x, posterior = -y
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.astype(np.int16).transpose(2, 1, 0)), affine), str(path))
    return Path(path)


def write_ct_dicom(
    hu_zyx: np.ndarray,
    folder: str | PathLike[str],
    spacing_mm: Sequence[float] = (5.0, 1.5, 1.5),
    *,
    jpeg2000: bool = False,
    description: str = "longllava synthetic CT",
    uid_seed: str | None = None,
) -> list[Path]:
    """Write a (z, y, x) HU volume as a DICOM series in ``folder``: one file per slice, uint16
    stored values with ``RescaleIntercept`` -1024, slice k at z = k * spacing, axial orientation,
    InstanceNumber running superior -> inferior as scanners number them. Uncompressed (Explicit VR
    Little Endian) or, with ``jpeg2000``, JPEG 2000 lossless like many archives. ``uid_seed`` makes
    the study / series / instance UIDs a function of it (the same bytes on every run); without it
    they are random. Returns the files in slice order."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    volume = _check_volume(hu_zyx, spacing_mm)
    dz, dy, dx = (float(s) for s in spacing_mm)
    nz, ny, nx = volume.shape
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def uid(*parts) -> str:
        return generate_uid(entropy_srcs=[uid_seed, *map(str, parts)]) if uid_seed is not None else generate_uid()

    study, series, frame_of_reference = uid("study"), uid("series"), uid("frame")
    stored_volume = np.clip(volume.astype(np.int32) - DICOM_INTERCEPT, 0, np.iinfo(np.uint16).max).astype(np.uint16)
    paths = []
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid("instance", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesDescription = "CT", description
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.SeriesNumber, ds.InstanceNumber = 1, nz - k
        ds.ImagePositionPatient = [-nx * dx / 2, -ny * dy / 2, k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [dy, dx]  # row spacing, column spacing
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, DICOM_INTERCEPT, "HU"
        ds.PixelData = stored_volume[k].tobytes()
        if jpeg2000:
            ds.compress(JPEG2000Lossless, generate_instance_uid=False)  # keep the UID chosen above
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
