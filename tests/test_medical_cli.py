"""``longllava ct-slices`` on both real CT fixtures, CLI errors, and the ``bench ct`` machinery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longllava.cli import main
from longllava.bench.ct import run_ct_bench, write_dicom_series, write_nifti
from longllava.domains.medical.ct import load_ct

FIXTURES = Path(__file__).parent / "fixtures" / "ct"


def test_ct_slices_on_the_real_nifti(tmp_path, capsys):
    out = tmp_path / "nifti"
    assert main(["ct-slices", str(FIXTURES / "example_ct.nii.gz"), "--out", str(out), "--every", "10", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_slices"] == 12 and summary["indices"] == list(range(0, 112, 10))
    assert summary["shape"] == [112, 101, 122] and summary["spacing_mm"] == [3.0, 3.0, 3.0]
    assert summary["orientation"] == "LPS"
    assert (summary["hu_min"], summary["hu_max"]) == (-1207.0, 3382.0)
    assert summary["slice_z_mm"] == sorted(summary["slice_z_mm"]) and summary["slice_z_mm"][1] - summary["slice_z_mm"][0] == 30.0
    assert summary["windows"] == ["lung", "mediastinum", "bone"]
    assert summary["files"][0] == "slice_0000.png" and len(list(out.glob("slice_*.png"))) == 12
    with Image.open(out / "slice_0050.png") as image:
        assert image.mode == "RGB" and image.size == (336, 278)
    assert json.loads((out / "slices.json").read_text())["indices"] == summary["indices"]


def test_ct_slices_on_the_real_dicom_series_with_one_gray_window(tmp_path, capsys):
    out = tmp_path / "dicom"
    code = main(["ct-slices", str(FIXTURES / "example_ct_dicom"), "--out", str(out), "--window", "lung", "--num-slices", "5", "--size", "128", "--workers", "2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_slices"] == 5 and summary["shape"] == [20, 512, 512]
    assert summary["indices"] == [0, 5, 10, 14, 19]
    assert summary["slice_z_mm"] == [-804.5, -794.5, -784.5, -776.5, -766.5]
    assert (summary["hu_min"], summary["hu_max"]) == (-1024.0, 1839.0)
    assert summary["metadata"]["modality"] == "CT" and "patient_name" not in summary["metadata"]
    pixels = np.asarray(Image.open(out / "slice_0000.png"))
    assert pixels.shape == (128, 128, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_ct_slices_human_summary_and_errors(tmp_path, capsys):
    assert main(["ct-slices", str(FIXTURES / "example_ct.nii.gz"), "--out", str(tmp_path / "o"), "--max-slices", "3"]) == 0
    assert capsys.readouterr().out.startswith("3 of 112 slices ->")
    assert main(["ct-slices", str(tmp_path / "absent.nii.gz"), "--out", str(tmp_path / "x")]) == 2
    assert "error: " in capsys.readouterr().err
    assert main(["ct-slices", str(FIXTURES / "example_ct.nii.gz"), "--out", str(tmp_path / "y"), "--window", "lung,bone"]) == 2
    assert "give one window (gray) or three" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ct-slices", str(FIXTURES / "example_ct.nii.gz"), "--out", str(tmp_path), "--every", "2", "--num-slices", "3"])


def test_bench_generators_write_the_same_phantom_in_both_formats(tmp_path):
    shape = (5, 24, 20)
    write_nifti(tmp_path / "p.nii.gz", shape)
    write_dicom_series(tmp_path / "dcm", shape)
    nifti, dicom = load_ct(tmp_path / "p.nii.gz"), load_ct(tmp_path / "dcm")
    np.testing.assert_array_equal(nifti.hu, dicom.hu)
    assert nifti.spacing_mm == dicom.spacing_mm == (1.5, 0.75, 0.75)
    np.testing.assert_allclose(nifti.slice_z_mm, dicom.slice_z_mm)
    assert dicom.hu[2, 0, 0] == -1000 and dicom.hu[2, 12, 10] != -1000  # air in the corner, body in the middle


def test_bench_ct_reports_times_and_memory(tmp_path):
    report = run_ct_bench((4, 32, 32), ["nifti", "dicom"], tmp_path, repeat=2, workers=3)
    assert report["shape"] == [4, 32, 32] and report["repeat"] == 2
    assert (report["decode_threads"], report["render_threads"]) == (1, 3)
    for figures in report["formats"].values():
        assert 0 < figures["decode_s"] <= figures["decode_s_slowest"] and 0 < figures["slices_s"] <= figures["slices_s_slowest"]
        assert figures["time_ratio"] == pytest.approx(figures["slices_s"] / figures["decode_s"])
        assert 0 < figures["decode_cpu_s"] and figures["cpu_ratio"] == pytest.approx(figures["slices_cpu_s"] / figures["decode_cpu_s"])
        assert figures["slices_peak_rss_mb"] >= figures["interpreter_rss_mb"] > 0
