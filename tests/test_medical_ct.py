"""load_ct on the real NIfTI and JPEG 2000 DICOM fixtures, generated series, and every bad input."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from longllava.domains.medical.ct import CTSpacingWarning, load_ct
from longllava.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "ct"
NIFTI = FIXTURES / "example_ct.nii.gz"
DICOM_DIR = FIXTURES / "example_ct_dicom"


@pytest.fixture(scope="module")
def nifti_volume():
    return load_ct(NIFTI)


@pytest.fixture(scope="module")
def dicom_volume():
    return load_ct(DICOM_DIR)


@pytest.fixture(scope="module")
def dicom_files():
    """The real series' datasets, decoded independently of load_ct, sorted by z (ascending)."""
    datasets = [pydicom.dcmread(f) for f in sorted(DICOM_DIR.iterdir())]
    return sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    *,
    z_positions: list[float] | None = None,
    orientation=(1, 0, 0, 0, 1, 0),
    pixel_spacing=(0.8, 0.6),
    modality="CT",
    series_uid: str | None = None,
    intercept=-1024,
    syntax=ExplicitVRLittleEndian,
    patient=("Doe^Jane", "PID-12345"),
) -> list[Path]:
    """One uncompressed (or RLE / JPEG 2000) single-frame file per slice; slice k at z_positions[k]."""
    folder.mkdir(parents=True, exist_ok=True)
    z_positions = z_positions if z_positions is not None else [2.5 * k for k in range(len(hu))]
    series_uid = series_uid or generate_uid()
    paths = []
    for k, (plane, z) in enumerate(zip(hu, z_positions)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = patient
        ds.Modality, ds.SeriesDescription, ds.KVP = modality, "test series", 120
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 7
        ds.InstanceNumber = len(hu) - k
        ds.ImagePositionPatient = [-100.0, -80.0, z]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
        ds.PixelData = (plane.astype(np.int32) - intercept).astype(np.int16).tobytes()
        if syntax != ExplicitVRLittleEndian:
            ds.compress(syntax)
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def small_hu(shape=(4, 6, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=shape).astype(np.int16)


# --- real NIfTI -----------------------------------------------------------------------------------


def test_real_nifti_is_reoriented_to_lps_with_its_voxels_spacing_and_z(nifti_volume):
    image = nib.load(NIFTI)
    raw = np.asarray(image.dataobj)  # (x, y, z) in RAS: x toward patient right, y toward anterior
    volume = nifti_volume
    assert volume.shape == (112, 101, 122)
    assert volume.hu.dtype == np.int16
    assert volume.spacing_mm == (3.0, 3.0, 3.0)
    assert volume.orientation == "LPS" and volume.metadata["source_orientation"] == "RAS"
    assert volume.hu_range() == (-1207.0, 3382.0)
    # canonical hu[z, y, x] = raw[121 - x, 100 - y, z]: columns toward patient left, rows toward posterior
    assert volume.hu[50, 50, 60] == raw[121 - 60, 100 - 50, 50]
    np.testing.assert_array_equal(volume.hu, raw[::-1, ::-1, :].transpose(2, 1, 0))
    np.testing.assert_allclose(volume.slice_z_mm, 94.30175781 + 3.0 * np.arange(112), atol=1e-4)
    # every voxel keeps its patient position
    for index in [(0, 0, 0), (111, 100, 121), (7, 33, 90)]:
        k, j, i = index
        np.testing.assert_allclose(volume.affine_ras @ [k, j, i, 1], image.affine @ [121 - i, 100 - j, k, 1])


# --- real DICOM (JPEG 2000 lossless) --------------------------------------------------------------


def test_real_dicom_series_orders_slices_by_position_and_applies_the_intercept(dicom_volume, dicom_files):
    volume = dicom_volume
    assert volume.shape == (20, 512, 512)
    assert volume.hu.dtype == np.int16
    assert volume.spacing_mm == (2.0, 0.9765625, 0.9765625)
    assert volume.orientation == "LPS"
    np.testing.assert_allclose(volume.slice_z_mm, -804.5 + 2.0 * np.arange(20))
    assert [int(d.InstanceNumber) for d in dicom_files][:2] == [286, 285]  # z ascending = instance descending
    expected = np.stack([d.pixel_array.astype(np.int32) * int(d.RescaleSlope) + int(d.RescaleIntercept) for d in dicom_files])
    np.testing.assert_array_equal(volume.hu, expected)
    assert volume.hu_range() == (float(expected.min()), float(expected.max()))
    assert volume.hu.min() == -1024
    assert volume.metadata["modality"] == "CT"
    assert volume.metadata["kvp"] == 120.0
    assert volume.metadata["transfer_syntax"] == "JPEG 2000 Image Compression (Lossless Only)"
    assert volume.metadata["num_files"] == 20
    np.testing.assert_allclose(volume.affine_ras @ [0, 0, 0, 1], [249.51171875, 437.51171875, -804.5, 1])


def test_a_nifti_converted_from_the_dicom_series_loads_identically(dicom_volume, dicom_files, tmp_path):
    """Both readers give the same array for the same patient data (conversion written out by hand)."""
    first = dicom_files[-1]  # converters keep file order: instance 267 (top) first, z descending
    ordered = dicom_files[::-1]
    stored = np.stack([d.pixel_array for d in ordered]).transpose(2, 1, 0).astype(np.uint16)  # (col, row, file)
    row_dir, col_dir = np.array(first.ImageOrientationPatient[:3]), np.array(first.ImageOrientationPatient[3:])
    step = np.array(ordered[1].ImagePositionPatient, dtype=float) - np.array(first.ImagePositionPatient, dtype=float)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * float(first.PixelSpacing[1])
    lps[:3, 1] = col_dir * float(first.PixelSpacing[0])
    lps[:3, 2] = step
    lps[:3, 3] = np.array(first.ImagePositionPatient, dtype=float)
    nib.save(nib.Nifti1Image(stored, np.diag([-1, -1, 1, 1]) @ lps), tmp_path / "converted.nii")
    set_nifti_scaling(tmp_path / "converted.nii", 1.0, -1024.0)  # stored values + header intercept, as scanners' converters do
    volume = load_ct(tmp_path / "converted.nii")
    assert volume.metadata["nifti_scl_inter"] == -1024.0
    assert volume.metadata["source_orientation"] == "LPI"
    assert volume.hu.dtype == np.int16
    np.testing.assert_array_equal(volume.hu, dicom_volume.hu)
    np.testing.assert_allclose(volume.slice_z_mm, dicom_volume.slice_z_mm)
    np.testing.assert_allclose(volume.spacing_mm, dicom_volume.spacing_mm)
    np.testing.assert_allclose(volume.affine_ras, dicom_volume.affine_ras, atol=1e-6)


def test_patient_identifiers_never_leave_the_loader(tmp_path):
    hu = small_hu((3, 6, 5))
    write_ct_series(tmp_path / "s", hu, z_positions=[0.0, 2.5, 7.5])  # a gap: a warning is emitted
    with pytest.warns(CTSpacingWarning) as caught:
        volume = load_ct(tmp_path / "s")
    exposed = repr(volume) + json.dumps(volume.metadata) + " ".join(str(w.message) for w in caught)
    assert "Doe" not in exposed and "PID-12345" not in exposed
    assert volume.metadata["series_description"] == "test series"


# --- generated series: orientation, sorting, warnings ---------------------------------------------


def test_generated_series_reorients_flipped_rows_and_keeps_true_positions(tmp_path):
    hu = small_hu((3, 6, 5))
    # rows run toward anterior (-y in LPS), columns toward patient right (-x): both flipped vs canonical
    write_ct_series(tmp_path / "s", hu, z_positions=[10.0, 5.0, 0.0], orientation=(-1, 0, 0, 0, -1, 0))
    volume = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu[::-1, ::-1, ::-1])
    np.testing.assert_allclose(volume.slice_z_mm, [0.0, 5.0, 10.0])
    assert volume.spacing_mm == pytest.approx((5.0, 0.8, 0.6))
    assert volume.metadata["source_orientation"] == "RAS"


def test_missing_slices_warn_with_the_gap_positions(tmp_path):
    hu = small_hu((5, 4, 4))
    write_ct_series(tmp_path / "s", hu, z_positions=[0.0, 2.0, 4.0, 10.0, 12.0])
    with pytest.warns(CTSpacingWarning, match=r"4\.00->10\.00 mm \(6\.00 mm, ~2 missing slice"):
        volume = load_ct(tmp_path / "s")
    np.testing.assert_allclose(volume.slice_z_mm, [0.0, 2.0, 4.0, 10.0, 12.0])
    np.testing.assert_array_equal(volume.hu, hu)


def test_a_list_of_files_and_a_zip_load_like_the_folder(tmp_path):
    hu = small_hu((3, 4, 4))
    paths = write_ct_series(tmp_path / "s", hu)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, f"study/series/{p.name}")
        zf.writestr("study/.DS_Store", b"junk")
    for source in (paths[::-1], archive):
        volume = load_ct(source)
        np.testing.assert_array_equal(volume.hu, hu)


# --- multi-frame and compressed transfer syntaxes -------------------------------------------------


def test_real_enhanced_multiframe_ct_is_sorted_and_rescaled_per_frame():
    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array  # (2, 512, 512); frame 1 at z=-159, frame 2 at z=-149; columns toward patient right
    volume = load_ct(path)
    assert volume.shape == (2, 512, 512)
    np.testing.assert_allclose(volume.slice_z_mm, [-159.0, -149.0])
    assert volume.metadata["multi_frame"] is True
    np.testing.assert_array_equal(volume.hu, frames[:, :, ::-1].astype(np.int32) - 1024)


def as_enhanced_ct(source_name: str, out: Path, z_positions: list[float]) -> Path:
    """A pydicom-data file's encoded frames re-labelled as an enhanced CT with per-frame geometry."""
    ds = pydicom.dcmread(get_testdata_file(source_name, download=False))
    ds.Modality = "CT"
    ds.NumberOfFrames = len(z_positions)
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.5]
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = 1
    shared.PixelValueTransformationSequence[0].RescaleIntercept = -1024
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z in z_positions:
        group = Dataset()
        group.PlanePositionSequence = Sequence([Dataset()])
        group.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, z]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.save_as(out)
    return out


@pytest.mark.parametrize(
    "encoded, reference, frames",
    [
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", 10),  # JPEG-LS lossless
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", 10),  # JPEG 2000 lossless
        ("emri_small_RLE.dcm", "emri_small.dcm", 10),  # RLE lossless
        ("JPEG-LL.dcm", "JPEG-LL.dcm", 1),  # JPEG lossless, process 14 SV1
    ],
)
def test_compressed_multiframe_syntaxes_decode_to_the_reference_values(tmp_path, encoded, reference, frames):
    z_positions = [30.0 - 3.0 * f for f in range(frames)]  # frames stored top -> bottom
    volume = load_ct(as_enhanced_ct(encoded, tmp_path / "ct.dcm", z_positions))
    expected = pydicom.dcmread(get_testdata_file(reference, download=False)).pixel_array.reshape(frames, *volume.shape[1:])
    np.testing.assert_array_equal(volume.hu, expected[::-1].astype(np.int32) - 1024)
    np.testing.assert_allclose(volume.slice_z_mm, sorted(z_positions))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_series_encoded_with_pydicoms_encoders_round_trip(tmp_path, syntax):
    hu = small_hu((3, 64, 48))  # OpenJPEG needs tiles of at least 2^5 pixels for its default 6 resolutions
    write_ct_series(tmp_path / "s", hu, syntax=syntax)
    volume = load_ct(tmp_path / "s")
    assert volume.metadata["transfer_syntax"] == syntax.name
    np.testing.assert_array_equal(volume.hu, hu)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_other_native_syntaxes_decode_from_where_the_header_ends(tmp_path, syntax):
    hu = small_hu((3, 6, 5))
    for path in write_ct_series(tmp_path / "s", hu):
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.pixel_array.astype(np.dtype(np.int16).newbyteorder("<" if syntax.is_little_endian else ">")).tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian, force_encoding=True)
    volume = load_ct(tmp_path / "s")
    assert volume.metadata["transfer_syntax"] == syntax.name
    np.testing.assert_array_equal(volume.hu, hu)


def test_deflated_series_is_refused_with_what_to_do(tmp_path):
    for path in write_ct_series(tmp_path / "s", small_hu((2, 6, 5))):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="Deflated Explicit VR Little Endian, which is not supported; inflate it first"):
        load_ct(tmp_path / "s")


def test_fractional_rescale_gives_float32_hu(tmp_path):
    paths = write_ct_series(tmp_path / "s", small_hu((2, 4, 4)), intercept=-1024)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.RescaleSlope = 0.5
        ds.save_as(p)
    stored = pydicom.dcmread(paths[0]).pixel_array
    volume = load_ct(tmp_path / "s")
    assert volume.hu.dtype == np.float32
    np.testing.assert_allclose(volume.hu[0], stored * 0.5 - 1024)


# --- bad input ------------------------------------------------------------------------------------


def test_not_a_dicom_file_is_named(tmp_path):
    write_ct_series(tmp_path / "s", small_hu((2, 4, 4)))
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.txt: not a DICOM file"):
        load_ct(tmp_path / "s")


def test_corrupt_and_truncated_dicom_files_are_named(tmp_path):
    paths = write_ct_series(tmp_path / "s", small_hu((2, 32, 32)))
    paths[1].write_bytes(paths[1].read_bytes()[:-500])
    with pytest.raises(InputError, match=r"slice001\.dcm: the pixel data cannot be decoded"):
        load_ct(tmp_path / "s")
    garbage = tmp_path / "g"
    garbage.mkdir()
    (garbage / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 2)
    with pytest.raises(InputError, match=r"x\.dcm: (corrupt DICOM file|no SeriesInstanceUID)"):
        load_ct(garbage)


def test_a_file_without_pixel_data_is_named(tmp_path):
    paths = write_ct_series(tmp_path / "s", small_hu((3, 4, 4)))
    ds = pydicom.dcmread(paths[1])
    del ds.PixelData
    ds.save_as(paths[1])
    with pytest.raises(InputError, match=r"slice001\.dcm: no Pixel Data element after the header"):
        load_ct(tmp_path / "s")


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="the folder has no files"):
        load_ct(tmp_path / "empty")
    with pytest.raises(InputError, match="no such file or folder"):
        load_ct(tmp_path / "nowhere")


def test_mixed_series_are_listed_and_one_can_be_picked(tmp_path):
    first, second = small_hu((2, 4, 4), seed=1), small_hu((3, 4, 4), seed=2)
    write_ct_series(tmp_path / "mix" / "a", first, series_uid="1.2.3.4")
    write_ct_series(tmp_path / "mix" / "b", second, series_uid="1.2.3.5")
    with pytest.raises(InputError, match=r"2 DICOM series are mixed(.|\n)*1\.2\.3\.4(.|\n)*2 file\(s\)(.|\n)*1\.2\.3\.5"):
        load_ct(tmp_path / "mix")
    np.testing.assert_array_equal(load_ct(tmp_path / "mix", series="1.2.3.5").hu, second)
    with pytest.raises(InputError, match="not found"):
        load_ct(tmp_path / "mix", series="9.9")


def test_missing_decoder_plugin_names_the_package(monkeypatch):
    from pydicom.pixels import get_decoder

    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    with pytest.raises(InputError, match="install pylibjpeg-openjpeg"):
        load_ct(DICOM_DIR)


def test_non_ct_modality_needs_allow_non_ct(tmp_path):
    hu = small_hu((2, 4, 4))
    write_ct_series(tmp_path / "mr", hu, modality="MR")
    with pytest.raises(InputError, match="modality 'MR', not CT.*allow_non_ct"):
        load_ct(tmp_path / "mr")
    np.testing.assert_array_equal(load_ct(tmp_path / "mr", allow_non_ct=True).hu, hu)


def test_zero_or_negative_dicom_spacing_and_duplicate_positions(tmp_path):
    write_ct_series(tmp_path / "zero", small_hu((2, 4, 4)), pixel_spacing=(0.0, 0.7))
    with pytest.raises(InputError, match=r"PixelSpacing must be two values > 0 mm"):
        load_ct(tmp_path / "zero")
    write_ct_series(tmp_path / "dup", small_hu((2, 4, 4)), z_positions=[5.0, 5.0])
    with pytest.raises(InputError, match="share the position 5.000 mm"):
        load_ct(tmp_path / "dup")


def test_a_slice_with_another_orientation_or_spacing_is_named(tmp_path):
    paths = write_ct_series(tmp_path / "o", small_hu((3, 4, 4)))
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(paths[2])
    with pytest.raises(InputError, match=r"slice002\.dcm: ImageOrientationPatient differs"):
        load_ct(tmp_path / "o")
    paths = write_ct_series(tmp_path / "s", small_hu((3, 4, 4)))
    ds = pydicom.dcmread(paths[1])
    ds.PixelSpacing = [0.8, 0.7]
    ds.save_as(paths[1])
    with pytest.raises(InputError, match=r"slice001\.dcm: PixelSpacing \[0\.8, 0\.7\] differs from the series' \[0\.8, 0\.6\]"):
        load_ct(tmp_path / "s")


def test_full_16_bit_unsigned_range_with_intercept_stays_exact_int16(tmp_path):
    stored = np.array([[0, 1, 32767], [32768, 40000, 65535]], dtype=np.uint16)
    paths = write_ct_series(tmp_path / "s", np.zeros((1, 2, 3), dtype=np.int16))
    ds = pydicom.dcmread(paths[0])
    ds.PixelRepresentation, ds.RescaleIntercept = 0, -32768
    ds.PixelData = stored.tobytes()
    ds.save_as(paths[0])
    volume = load_ct(tmp_path / "s")
    assert volume.hu.dtype == np.int16
    np.testing.assert_array_equal(volume.hu[0], stored.astype(np.int32) - 32768)


def test_zip_entries_with_dotdot_paths_are_rejected(tmp_path):
    paths = write_ct_series(tmp_path / "s", small_hu((2, 4, 4)))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(paths[0], "ok/a.dcm")
        zf.write(paths[1], "../../escape.dcm")
    with pytest.raises(InputError, match=r"'\.\./\.\./escape\.dcm' has an absolute or '\.\.' path"):
        load_ct(archive)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="not a readable zip"):
        load_ct(tmp_path / "broken.zip")


def set_nifti_scaling(path: Path, slope: float, inter: float) -> None:
    """Write scl_slope / scl_inter (header bytes 112-119) into an uncompressed .nii; nibabel's
    writer would recompute them from the data."""
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([slope, inter], dtype="<f4").tobytes()
    path.write_bytes(bytes(raw))


def _nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    image = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    nib.save(image, path)
    return path


def test_4d_nifti_is_rejected_but_a_single_volume_4d_is_accepted(tmp_path):
    with pytest.raises(InputError, match=r"must be 3D.*\(4, 5, 6, 2\).*4D"):
        load_ct(_nifti(tmp_path / "t.nii.gz", np.zeros((4, 5, 6, 2), np.int16)))
    data = small_hu((4, 5, 6)).reshape(4, 5, 6, 1)
    volume = load_ct(_nifti(tmp_path / "one.nii.gz", data))
    assert volume.shape == (6, 5, 4)


def test_zero_or_negative_nifti_spacing_is_rejected(tmp_path):
    """nibabel's loader would silently turn these into 1 mm / 1.5 mm; the header bytes are checked."""
    raw = bytearray(_nifti(tmp_path / "ok.nii", np.zeros((4, 5, 6), np.int16)).read_bytes())
    for name, value in (("zero", 0.0), ("negative", -1.5)):
        raw[80:84] = np.array([value], dtype="<f4").tobytes()  # pixdim[1]: x spacing
        (tmp_path / f"{name}.nii").write_bytes(bytes(raw))
        with pytest.raises(InputError, match=rf"spacing \(pixdim\) must be > 0 mm, got \({value}, 1\.0, 1\.0\)"):
            load_ct(tmp_path / f"{name}.nii")


def test_truncated_gzip_nifti_is_reported(tmp_path):
    full = _nifti(tmp_path / "full.nii.gz", small_hu((20, 20, 20)))
    data = full.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_ct(tmp_path / "cut.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_ct(tmp_path / "bad.nii.gz")


def test_float_nifti_with_header_scaling_gives_float_hu(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "s.nii")
    set_nifti_scaling(tmp_path / "s.nii", 0.5, -1000.25)
    volume = load_ct(tmp_path / "s.nii")
    assert volume.hu.dtype == np.float32
    assert volume.metadata["nifti_scl_slope"] == 0.5
    # RAS source: x flipped, y flipped, then (z, y, x)
    np.testing.assert_allclose(volume.hu, (data * 0.5 - 1000.25)[::-1, ::-1, :].transpose(2, 1, 0))



@pytest.mark.parametrize("jpeg2000", [False, True])
def test_written_nifti_and_dicom_series_load_back_to_the_same_volume(tmp_path, jpeg2000):
    from longllava.domains.medical.write import write_ct_dicom, write_ct_nifti

    hu = np.random.default_rng(3).integers(-1024, 3000, size=(5, 40, 36)).astype(np.int16)  # J2K needs >= 32 px
    hu[0, 0, 0] = -1100  # below air: DICOM clips it to -1024, NIfTI keeps it
    nifti = load_ct(write_ct_nifti(hu, tmp_path / "v.nii.gz", (2.5, 0.8, 0.7)))
    files = write_ct_dicom(hu, tmp_path / "series", (2.5, 0.8, 0.7), jpeg2000=jpeg2000, uid_seed="s")
    series = load_ct(tmp_path / "series")
    np.testing.assert_array_equal(nifti.hu, hu)
    expected = hu.copy()
    expected[0, 0, 0] = -1024
    np.testing.assert_array_equal(series.hu, expected)
    assert nifti.spacing_mm == pytest.approx((2.5, 0.8, 0.7)) and series.spacing_mm == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_allclose(series.slice_z_mm - series.slice_z_mm[0], nifti.slice_z_mm - nifti.slice_z_mm[0])
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(5)]
    # Deterministic UIDs with a seed: writing again gives the same bytes.
    again = write_ct_dicom(hu, tmp_path / "again", (2.5, 0.8, 0.7), jpeg2000=jpeg2000, uid_seed="s")
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in again]
    other = write_ct_dicom(hu, tmp_path / "other", (2.5, 0.8, 0.7), jpeg2000=jpeg2000)
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != pydicom.dcmread(files[0]).SeriesInstanceUID


def test_writing_a_volume_that_is_not_3d_or_has_bad_spacing_is_refused(tmp_path):
    from longllava.domains.medical.write import write_ct_dicom, write_ct_nifti

    with pytest.raises(InputError, match="3D"):
        write_ct_nifti(np.zeros((4, 4), np.int16), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match="spacing"):
        write_ct_dicom(np.zeros((2, 4, 4), np.int16), tmp_path / "s", (1.0, 0.0, 1.0))
