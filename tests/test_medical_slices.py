"""Windowing presets and values, resizing with the physical aspect, slice selection and lazy slices."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longllava.domains.medical import slices as slices_module
from longllava.domains.medical.ct import CTVolume, load_ct
from longllava.domains.medical.slices import CTSliceSequence, ct_to_slices, select_slice_indices
from longllava.domains.medical.windowing import (
    WINDOW_PRESETS,
    Window,
    apply_window,
    display_size,
    hu_to_rgb,
    parse_window,
    parse_windows,
    render_slice,
    resample_hu,
)
from longllava.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "ct"


def test_the_five_presets_are_exact():
    assert {name: (w.width, w.level) for name, w in WINDOW_PRESETS.items()} == {
        "lung": (1500, -600),
        "mediastinum": (350, 50),
        "abdomen": (400, 40),
        "bone": (1800, 400),
        "brain": (80, 40),
    }


@pytest.mark.parametrize(
    "window, hu, expected",
    [
        ("lung", [-2000, -1350, -1000, -600, 150, 3000], [0, 0, 60, 128, 255, 255]),
        ("mediastinum", [-125, 50, 225, -1000], [0, 128, 255, 0]),
        ("brain", [0, 40, 80, 30], [0, 128, 255, 96]),
        ("400/40", [-160, 240, 40], [0, 255, 128]),
    ],
)
def test_window_values(window, hu, expected):
    assert apply_window(np.array(hu, dtype=np.int16), parse_window(window)).tolist() == expected


def test_parse_window_forms_and_errors():
    assert parse_window("W1500/L-600") == Window(1500.0, -600.0)
    assert parse_window(" 80 / 40 ") == Window(80.0, 40.0)
    assert parse_windows("lung, mediastinum,bone") == (WINDOW_PRESETS["lung"], WINDOW_PRESETS["mediastinum"], WINDOW_PRESETS["bone"])
    with pytest.raises(InputError, match="unknown window 'liver'"):
        parse_window("liver")
    with pytest.raises(InputError, match="width must be > 0"):
        parse_window("0/40")
    with pytest.raises(InputError, match="give one window \\(gray\\) or three"):
        parse_windows("lung,bone")


def test_int16_lookup_table_matches_the_arithmetic_on_every_hu():
    hu = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16).reshape(256, 256)
    windows = ("lung", "mediastinum", "bone")
    np.testing.assert_array_equal(hu_to_rgb(hu, windows), hu_to_rgb(hu.astype(np.float32), windows))


def test_rgb_channels_follow_the_window_order_and_one_window_is_gray():
    hu = np.array([[-600, 50], [400, -1000]], dtype=np.int16)
    rgb = hu_to_rgb(hu, ("lung", "mediastinum", "bone"))
    assert rgb[0, 0].tolist() == [128, 0, 0]  # -600 HU: lung mid-gray, below the mediastinum and bone windows
    assert rgb[0, 1].tolist() == [238, 128, 78]  # 50 HU: R = 255*1400/1500, G mid, B = 255*550/1800
    assert rgb[1, 0].tolist() == [255, 255, 128]  # 400 HU: bone window centre
    gray = hu_to_rgb(hu, "mediastinum")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert gray[0, 1, 0] == 128


def test_real_dicom_slice_window_values_on_known_voxels():
    volume = load_ct(FIXTURES / "example_ct_dicom")
    k = 10
    image = np.asarray(render_slice(volume.hu[k], ("lung", "mediastinum", "bone"), volume.spacing_mm[1:], size=512))
    assert image.shape == (512, 512, 3)  # square field of view at native size: no resampling
    for j, i in [(256, 256), (100, 300), (400, 120), (0, 0)]:
        value = float(volume.hu[k, j, i])
        expected = [min(255, max(0, round(255 * (value - (w.level - w.width / 2)) / w.width))) for w in parse_windows("lung,mediastinum,bone")]
        assert np.abs(image[j, i].astype(int) - expected).max() <= 1, (j, i, value)
    assert volume.hu[k, 0, 0] == -1024 and image[0, 0].tolist() == [55, 0, 0]  # padding: dark in lung, black elsewhere


def test_display_size_keeps_the_physical_aspect():
    assert display_size((101, 122), (3.0, 3.0), 336) == (336, 278)  # the real NIfTI's axial plane
    assert display_size((100, 200), (2.0, 0.5), 336) == (168, 336)
    assert display_size((512, 512), (0.7, 0.7), 336) == (336, 336)


def test_resized_slice_keeps_left_right_and_uniform_regions_exact():
    hu = np.full((200, 100), 40, dtype=np.int16)
    hu[:20, :20] = 1000  # bright block at the image's top-left
    image = np.asarray(render_slice(hu, "abdomen", (1.0, 2.0), size=100))
    assert image.shape == (100, 100, 3)  # 200 x 1.0 mm tall, 100 x 2.0 mm wide: square
    assert image[2, 2].tolist() == [255, 255, 255]
    assert image[60, 60].tolist() == [128, 128, 128]  # 40 HU in W400/L40
    assert image[2, 97].tolist() == [128, 128, 128]


def test_slice_selection_rules():
    z = np.arange(300) * 1.25
    assert select_slice_indices(z) == np.rint(np.linspace(0, 299, 256)).astype(int).tolist()
    assert select_slice_indices(z[:100]) == list(range(100))
    assert select_slice_indices(z, every=50) == [0, 50, 100, 150, 200, 250]
    assert select_slice_indices(z, num_slices=4) == [0, 100, 199, 299]
    assert select_slice_indices(z[:10], z_spacing_mm=5.0) == [0, 4, 8]
    assert select_slice_indices(z[:10], z_spacing_mm=0.1) == list(range(10))
    irregular = [0.0, 1.0, 2.0, 9.0, 10.0]
    assert select_slice_indices(irregular, z_spacing_mm=5.0) == [0, 2, 4]  # 5 mm is nearest to z=2 (not 9)
    with pytest.raises(InputError, match="choose one slice selection rule"):
        select_slice_indices(z, every=2, num_slices=3)
    with pytest.raises(InputError, match="every must be > 0"):
        select_slice_indices(z, every=0)


def _volume(num_slices: int) -> CTVolume:
    hu = np.zeros((num_slices, 8, 8), dtype=np.int16)
    hu[:, 0, 0] = np.arange(num_slices) * 100 - 1000
    return CTVolume(hu, (2.0, 1.0, 1.0), -50.0 + 2.0 * np.arange(num_slices), np.eye(4))


def test_ct_to_slices_is_lazy_and_traces_index_and_z(monkeypatch):
    rendered = []
    real_render = slices_module.render_slice
    monkeypatch.setattr(slices_module, "render_slice", lambda hu, *a: rendered.append(int(hu[0, 0])) or real_render(hu, *a))
    sequence = ct_to_slices(_volume(12), windows="lung", every=3, size=16, workers=1)
    assert isinstance(sequence, CTSliceSequence) and len(sequence) == 4 and rendered == []
    assert sequence.indices == [0, 3, 6, 9] and sequence.z_mm == [-50.0, -44.0, -38.0, -32.0]
    third = sequence[2]
    assert rendered == [-400] and (third.index, third.z_mm) == (6, -38.0)
    assert third.image.mode == "RGB" and third.image.size == (16, 16)
    iterator = iter(sequence)
    first = next(iterator)
    assert rendered == [-400, -1000] and first.index == 0
    assert [s.index for s in sequence[1:3]] == [3, 6]


def _pixels(items) -> list[tuple[int, float, bytes]]:
    return [(item.index, item.z_mm, item.image.mode, item.image.size, item.image.tobytes()) for item in items]


@pytest.mark.parametrize("fixture, windows", [("example_ct.nii.gz", "lung,mediastinum,bone"), ("example_ct_dicom", "abdomen")])
def test_threaded_rendering_is_pixel_exact_and_in_order(fixture, windows):
    volume = load_ct(FIXTURES / fixture)
    serial = _pixels(ct_to_slices(volume, windows=windows, every=1, size=200, workers=1))
    assert [index for index, *_ in serial] == list(range(volume.shape[0]))
    for workers in (2, 3):
        sequence = ct_to_slices(volume, windows=windows, every=1, size=200, workers=workers)
        assert _pixels(sequence) == serial
        assert _pixels(sequence[3:9]) == serial[3:9]


def test_default_workers_are_the_usable_cores_up_to_four(monkeypatch):
    monkeypatch.setattr(slices_module.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert slices_module.default_render_workers() == 4 and ct_to_slices(_volume(3)).workers == 4
    monkeypatch.setattr(slices_module.os, "sched_getaffinity", lambda pid: {0, 1})
    assert ct_to_slices(_volume(3)).workers == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="workers must be a whole number >= 1"):
            ct_to_slices(_volume(3), workers=bad)


def _ct_slice_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ct-slices")]


def test_threaded_iteration_keeps_a_bounded_number_of_slices_in_flight(monkeypatch):
    started: list[int] = []
    real_render = slices_module.render_slice
    monkeypatch.setattr(slices_module, "render_slice", lambda hu, *a: started.append(int(hu[0, 0])) or real_render(hu, *a))
    sequence = ct_to_slices(_volume(40), windows="lung", every=1, size=8, workers=3)
    assert sequence.max_in_flight == 6
    iterator = iter(sequence)
    assert started == [] and _ct_slice_threads() == []  # lazy: nothing starts before the first next()
    seen = []
    for item in iterator:
        seen.append(item.index)
        time.sleep(0.002)  # a slow consumer: the workers would run ahead if they were not bounded
        assert len(seen) <= len(started) <= len(seen) + sequence.max_in_flight - 1
    assert seen == list(range(40)) and sorted(started) == [k * 100 - 1000 for k in range(40)]
    assert _ct_slice_threads() == []


def test_an_error_in_a_worker_reaches_the_caller_unchanged_after_the_slices_before_it(monkeypatch):
    real_render = slices_module.render_slice

    def render(hu, *args):
        if hu[0, 0] == -500:  # slice 5
            raise InputError("slice 5: cannot render this slice")
        return real_render(hu, *args)

    monkeypatch.setattr(slices_module, "render_slice", render)
    seen = []
    with pytest.raises(InputError) as error:
        for item in ct_to_slices(_volume(20), windows="lung", every=1, size=8, workers=2):
            seen.append(item.index)
    assert str(error.value) == "slice 5: cannot render this slice" and seen == [0, 1, 2, 3, 4]
    assert _ct_slice_threads() == []


def test_stopping_a_threaded_iteration_early_returns_at_once_and_ends_the_threads(monkeypatch):
    started: list[int] = []
    real_render = slices_module.render_slice

    def slow_render(hu, *args):
        started.append(int(hu[0, 0]))
        time.sleep(0.01)
        return real_render(hu, *args)

    monkeypatch.setattr(slices_module, "render_slice", slow_render)
    sequence = ct_to_slices(_volume(500), windows="lung", every=1, size=8, workers=2)
    iterator = iter(sequence)
    assert [next(iterator).index for _ in range(3)] == [0, 1, 2]
    start = time.perf_counter()
    iterator.close()
    assert time.perf_counter() - start < 1.0  # 497 queued renders at 10 ms each would take 2.5 s
    assert len(started) <= 3 + sequence.max_in_flight and _ct_slice_threads() == []
    for item in sequence:  # a dropped iterator (break) ends the same way
        if item.index == 1:
            break
    assert _ct_slice_threads() == []


def test_real_nifti_slices_default_selection_and_order():
    volume = load_ct(FIXTURES / "example_ct.nii.gz")
    sequence = ct_to_slices(volume)
    assert len(sequence) == 112  # fewer than 256: all kept
    assert sequence.z_mm == sorted(sequence.z_mm)
    assert sequence[0].image.size == (336, 278)
    assert sequence.windows == parse_windows("lung,mediastinum,bone")


@pytest.mark.parametrize(
    "shape, size_wh", [((512, 512), (336, 336)), ((1024, 700), (230, 336)), ((101, 122), (336, 278)), ((200, 100), (100, 100)), ((40, 70), (13, 9))]
)
def test_resample_matches_pillows_bilinear_resize(shape, size_wh):
    hu = np.random.default_rng(3).normal(0, 500, shape).astype(np.float32)
    expected = np.asarray(Image.fromarray(hu).resize(size_wh, Image.Resampling.BILINEAR))
    np.testing.assert_allclose(resample_hu(hu, size_wh), expected, rtol=0, atol=2e-3)
    rounded = resample_hu(np.rint(hu).astype(np.int16), size_wh)
    assert rounded.dtype == np.int16
    reference = np.rint(np.asarray(Image.fromarray(np.rint(hu)).resize(size_wh, Image.Resampling.BILINEAR)))
    assert np.abs(rounded - reference).max() <= 1 and (rounded != reference).mean() < 1e-3  # ties may round apart


def test_resize_bands_cover_every_output_once_and_stay_single_threaded_in_blas():
    from longllava.domains.medical.windowing import _SINGLE_THREAD_PRODUCT, _resize_bands

    for n_in, n_out, other in [(512, 336, 512), (1024, 336, 1024), (2048, 336, 336), (300, 600, 600)]:
        bands = _resize_bands(n_in, n_out, other)
        assert [k for out, _, _ in bands for k in range(out.start, out.stop)] == list(range(n_out))
        assert all(w.shape == (out.stop - out.start, used.stop - used.start) for out, used, w in bands)
        assert max(w.size * other for _, _, w in bands) <= _SINGLE_THREAD_PRODUCT
    assert all(out.stop - out.start == 16 for out, _, _ in _resize_bands(512, 336, 512)[:-1])  # the usual CT case keeps full bands


def test_resample_of_reversed_views_equals_resample_of_copies():
    hu = np.random.default_rng(4).integers(-1000, 2000, (300, 257)).astype(np.int16)
    for view in (hu[::-1], hu[:, ::-1], hu[::-1, ::-1]):
        np.testing.assert_array_equal(resample_hu(view, (120, 140)), resample_hu(np.ascontiguousarray(view), (120, 140)))


def test_a_nan_voxel_only_reaches_the_pixels_it_contributes_to():
    hu = np.full((64, 64), 40.0, dtype=np.float32)
    hu[20, 30] = np.nan
    resized = resample_hu(hu, (40, 40))
    expected = np.asarray(Image.fromarray(hu).resize((40, 40), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(np.isnan(resized), np.isnan(expected))
    assert 0 < np.isnan(resized).sum() <= 9 and np.allclose(resized[~np.isnan(resized)], 40.0)
