"""``longllava bench ct``: time and peak memory of CT -> RGB slices against the decode-only floor.

A synthetic chest-like phantom (int16 HU: air, body, lungs, spine ring, mild noise) is written as
a gzipped NIfTI (RAS, as converters write it) and as DICOM series (uint16 stored values,
RescaleIntercept -1024, instance numbers running superior -> inferior), uncompressed (``dicom``:
decoding is nearly free, so this is the hardest case for the ratio) and JPEG 2000 lossless
(``dicom-j2k``, like the real fixture and many archives). Each measurement
runs in a fresh interpreter so its peak RSS (VmHWM) is that measurement's own:

- decode floor: nibabel / pydicom decoding the voxels into one array, nothing else (DICOM:
  ``pydicom.pixels.iter_pixels`` per file, the decoder routine ``load_ct`` uses; ``pixel_array``
  is slower on uncompressed data, up to 2x, and would flatter the ratio);
- slices: ``load_ct`` + ``ct_to_slices(every=1, workers=N)`` rendering every slice (3 windows,
  336 px); ``load_ct`` decodes in one thread, the slices render in N threads (default
  ``default_render_workers()``, the usable cores up to 4; ``workers=1``: serial).

With ``repeat`` > 1 the two run alternately ``repeat`` times and the fastest of each counts (the
usual estimate of a cost on a shared machine), the slowest is shown as the spread; peak RSS is the
largest seen. The decode floor runs in one thread. Wall time is the target; CPU time (all threads
of the process) is reported next to it, so a ratio met by using more cores shows as a CPU ratio
above the wall ratio.

Targets: slices <= 2x the decode floor in seconds, peak RSS <= 2x the int16 volume size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SPACING_MM = (1.5, 0.75, 0.75)  # z, y, x


def phantom_slice(shape_yx: tuple[int, int], z_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """One axial int16 HU slice of a chest-like phantom at relative height ``z_fraction`` (0..1)."""
    ny, nx = shape_yx
    y, x = np.ogrid[-1 : 1 : ny * 1j, -1 : 1 : nx * 1j]
    hu = np.full(shape_yx, -1000, dtype=np.int16)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
    hu[body] = 40
    lung_size = 0.25 + 0.1 * np.sin(np.pi * z_fraction)
    for cx in (-0.4, 0.4):
        hu[((x - cx) / lung_size) ** 2 + ((y + 0.05) / (lung_size * 1.6)) ** 2 <= 1] = -850
    ring = np.hypot(x, y - 0.45)
    hu[(ring > 0.07) & (ring < 0.12)] = 700
    noise = rng.integers(-15, 16, size=shape_yx, dtype=np.int16)
    return hu + noise * body


def write_nifti(path: Path, shape: tuple[int, int, int]) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    nz, ny, nx = shape
    data = np.empty((nx, ny, nz), dtype=np.int16, order="F")  # RAS: x toward right, y toward anterior
    for k in range(nz):
        data[:, :, k] = phantom_slice((ny, nx), k / max(nz - 1, 1), rng)[::-1, ::-1].T
    affine = np.diag([SPACING_MM[2], SPACING_MM[1], SPACING_MM[0], 1.0])
    nib.save(nib.Nifti1Image(data, affine), path)


def write_dicom_series(folder: Path, shape: tuple[int, int, int], *, jpeg2000: bool = False) -> None:
    from longllava.domains.medical.write import write_ct_dicom

    rng = np.random.default_rng(0)
    nz, ny, nx = shape
    volume = np.stack([phantom_slice((ny, nx), k / max(nz - 1, 1), rng) for k in range(nz)])
    write_ct_dicom(volume, folder, SPACING_MM, jpeg2000=jpeg2000, description="bench phantom")


_WRITERS = {
    "nifti": write_nifti,
    "dicom": write_dicom_series,
    "dicom-j2k": lambda path, shape: write_dicom_series(path, shape, jpeg2000=True),
}


def _peak_rss() -> int:
    """This process's peak resident memory (bytes). VmHWM, not ru_maxrss: a child inherits the
    parent's ru_maxrss across fork + exec, while VmHWM starts afresh with the new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status: the CT bench measures memory on Linux only")


def measure(mode: str, fmt: str, path: Path, workers: int = 1) -> dict[str, Any]:
    """One measurement in this process (run it in a fresh interpreter for a meaningful peak RSS);
    ``workers``: the threads that render the slices (the decode floor always runs in one)."""
    from longllava.domains.medical.ct import load_ct
    from longllava.domains.medical.slices import ct_to_slices

    baseline = _peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    if mode == "decode" and fmt == "nifti":
        import nibabel as nib

        voxels = np.asarray(nib.load(path).dataobj)
        checksum = int(voxels[0, 0, 0])
    elif mode == "decode":
        from pydicom.pixels import iter_pixels

        files = sorted(path.iterdir())
        first = next(iter_pixels(files[0]))
        voxels = np.empty((len(files), *first.shape), dtype=first.dtype)
        for k, f in enumerate(files):
            for frame in iter_pixels(f):
                voxels[k] = frame
        checksum = int(voxels[0, 0, 0])
    else:
        volume = load_ct(path)
        checksum = 0
        for item in ct_to_slices(volume, every=1, workers=workers):
            checksum += item.image.size[0]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_bytes": _peak_rss(),
        "baseline_rss_bytes": baseline,
        "checksum": checksum,
        "threads": 1 if mode == "decode" else workers,
    }


def _measure_in_subprocess(mode: str, fmt: str, path: Path, workers: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "longllava.bench.ct", mode, fmt, str(path), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_ct_bench(
    shape: tuple[int, int, int], formats: list[str], workdir: Path | None = None, repeat: int = 1, workers: int | None = None
) -> dict[str, Any]:
    from longllava.domains.medical.slices import default_render_workers
    from longllava.errors import InputError

    unknown = set(formats) - set(_WRITERS)
    if unknown:
        raise InputError(f"unknown bench format(s) {', '.join(sorted(unknown))}: use {', '.join(_WRITERS)}")
    if repeat < 1:
        raise InputError(f"repeat must be >= 1, got {repeat}")
    workers = default_render_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    with tempfile.TemporaryDirectory(prefix="longllava-bench-ct-") as temporary:
        folder = Path(workdir or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        int16_bytes = int(np.prod(shape)) * 2
        report: dict[str, Any] = {
            "shape": list(shape),
            "int16_mb": int16_bytes / 2**20,
            "repeat": repeat,
            "decode_threads": 1,
            "render_threads": workers,
            "formats": {},
        }
        for fmt in formats:
            start = time.perf_counter()
            path = folder / ("phantom.nii.gz" if fmt == "nifti" else f"phantom_{fmt}")
            _WRITERS[fmt](path, shape)
            write_seconds = time.perf_counter() - start
            runs: dict[str, list[dict[str, Any]]] = {"decode": [], "slices": []}
            for _ in range(repeat):
                for mode, results in runs.items():
                    results.append(_measure_in_subprocess(mode, fmt, path, workers))
            decode, slices = (_fastest_with_highest_peak(runs[mode]) for mode in ("decode", "slices"))
            report["formats"][fmt] = {
                "write_s": write_seconds,
                "decode_s": decode["seconds"],
                "slices_s": slices["seconds"],
                "decode_s_slowest": decode["seconds_slowest"],
                "slices_s_slowest": slices["seconds_slowest"],
                "time_ratio": slices["seconds"] / decode["seconds"],
                "decode_cpu_s": decode["cpu_seconds"],
                "slices_cpu_s": slices["cpu_seconds"],
                "cpu_ratio": slices["cpu_seconds"] / decode["cpu_seconds"],
                "decode_peak_rss_mb": decode["peak_rss_bytes"] / 2**20,
                "slices_peak_rss_mb": slices["peak_rss_bytes"] / 2**20,
                "interpreter_rss_mb": slices["baseline_rss_bytes"] / 2**20,
                "rss_ratio": slices["peak_rss_bytes"] / int16_bytes,
                "rss_ratio_above_interpreter": (slices["peak_rss_bytes"] - slices["baseline_rss_bytes"]) / int16_bytes,
            }
        return report


def _fastest_with_highest_peak(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": min(run["seconds"] for run in runs),
        "seconds_slowest": max(run["seconds"] for run in runs),
        "cpu_seconds": min(run["cpu_seconds"] for run in runs),
        "peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs),
        "baseline_rss_bytes": min(run["baseline_rss_bytes"] for run in runs),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"CT bench: volume {'x'.join(map(str, report['shape']))}, int16 size {report['int16_mb']:.0f} MB; every slice rendered "
        f"(3 windows, 336 px); fastest (slowest) of {report['repeat']} run(s) each; decode floor in "
        f"{report['decode_threads']} thread, load_ct in 1 + rendering in {report['render_threads']} thread(s)"
    ]
    for fmt, r in report["formats"].items():
        lines.append(
            f"  {fmt:9s} decode floor {r['decode_s']:.2f} ({r['decode_s_slowest']:.2f}) s | slices {r['slices_s']:.2f} "
            f"({r['slices_s_slowest']:.2f}) s | wall ratio {r['time_ratio']:.2f} (target <= 2;"
            f" CPU time {r['decode_cpu_s']:.2f} / {r['slices_cpu_s']:.2f} s = {r['cpu_ratio']:.2f})"
            f" | peak RSS {r['slices_peak_rss_mb']:.0f} MB = {r['rss_ratio']:.2f}x int16 "
            f"({r['rss_ratio_above_interpreter']:.2f}x above the {r['interpreter_rss_mb']:.0f} MB interpreter; target <= 2)"
            f" | decode-only peak {r['decode_peak_rss_mb']:.0f} MB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
