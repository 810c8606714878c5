"""Clips: videos (PyAV) and cine DICOM sampled by presentation time, as <vid> stacks traced by time."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from longllava.core import protocol
from longllava.domains.medical.cine import dicom_content, load_cine_dicom
from longllava.domains.medical.clips import load_clip
from longllava.domains.medical.video import load_video, sample_frame_indices
from longllava.domains.medical.visuals import clip_stack
from longllava.errors import InputError


def test_sample_frame_indices_by_time_and_cap():
    times = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25]
    assert sample_frame_indices(times, fps=1) == [0, 4, 8]
    assert sample_frame_indices(times, fps=2) == [0, 2, 4, 6, 8]
    # more sample times than max_frames: evenly spaced from first to last frame
    assert sample_frame_indices(times, fps=4, max_frames=4) == [0, 3, 6, 9]
    # a frame on screen at several sample times is sent once
    assert sample_frame_indices([0.0, 3.0], fps=1) == [0, 1]
    with pytest.raises(InputError, match="fps"):
        sample_frame_indices(times, fps=0)


def test_video_frames_sent_at_their_presentation_times(tmp_path, clips):
    path = tmp_path / "clip.mp4"
    clips.write_mp4(path, list(range(10)))  # 4 fps, 10 frames: 0 .. 2.25 s
    clip = load_video(path, fps=1)
    assert clip.num_source_frames == 10 and clip.duration_s == pytest.approx(2.25)
    assert clip.times_s == pytest.approx([0.0, 1.0, 2.0])
    assert [f.index for f in clip.frames] == [0, 4, 8]
    assert [clips.frame_colour_index(f.image, 10) for f in clip.frames] == [0, 4, 8]
    assert clip.frames[0].image.size == (64, 48)

    capped = load_video(path, fps=4, max_frames=4)
    assert [clips.frame_colour_index(f.image, 10) for f in capped.frames] == [0, 3, 6, 9]
    assert capped.times_s == pytest.approx([0.0, 0.75, 1.5, 2.25])


def test_video_with_irregular_timestamps_sends_the_frame_on_screen(tmp_path, clips):
    path = tmp_path / "gaps.mp4"
    clips.write_mp4(path, [0, 1, 2, 9, 10, 16], rate=4)  # frames at 0, .25, .5, 2.25, 2.5, 4.0 s
    clip = load_video(path, fps=1)
    # at 1 s and 2 s frame 2 (shown since 0.5 s) is on screen: sent once; at 3 s frame 4; at 4 s frame 5
    assert [clips.frame_colour_index(f.image, 6) for f in clip.frames] == [0, 2, 4, 5]
    assert clip.times_s == pytest.approx([0.0, 0.5, 2.5, 4.0])


def test_clip_as_vid_stack_with_times_in_the_trace(tmp_path, clips):
    path = tmp_path / "clip.mp4"
    clips.write_mp4(path, list(range(10)))
    message = protocol.user_message([clip_stack(load_clip(path, fps=1))], "What changes?")
    assert message.text.startswith("<vid><img><image></img><t><img><image></img><t><img><image></img></vid>\n")
    assert [(t["kind"], t["frame"], t["time_s"], t["index"]) for t in message.trace] == [
        ("frame", 0, 0.0, 0), ("frame", 1, 1.0, 4), ("frame", 2, 2.0, 8)]
    assert all(t["path"] == str(path) for t in message.trace)


def test_bad_videos_give_clear_errors(tmp_path, clips):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="corrupt.mp4: .*corrupt, truncated or not a video"):
        load_video(corrupt)
    with pytest.raises(InputError, match="no such video file"):
        load_video(tmp_path / "missing.mp4")
    good = tmp_path / "clip.mp4"
    clips.write_mp4(good, list(range(4)))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match="truncated.mp4"):
        load_video(truncated)
    with pytest.raises(InputError, match="max_frames"):
        load_video(good, max_frames=0)


# --- cine DICOM -----------------------------------------------------------------------------------


def test_pydicom_ultrasound_cine_read_in_order_with_times():
    path = get_testdata_file("color3d_jpeg_baseline.dcm")  # US, 120 YBR_FULL_422 JPEG frames, 33.333 ms apart
    assert dicom_content(pydicom.dcmread(path, stop_before_pixels=True)) == "clip"
    clip = load_cine_dicom(path, fps=1)
    assert clip.num_source_frames == 120
    assert clip.duration_s == pytest.approx(119 * 0.033333)
    assert [f.index for f in clip.frames] == [0, 30, 60, 90]
    assert clip.times_s == pytest.approx([0.0, 0.99999, 1.99998, 2.99997])
    # the decoded frames equal pydicom's own RGB decoding of the same frames (YBR converted)
    from pydicom.pixels import pixel_array

    for frame in clip.frames:
        assert frame.image.mode == "RGB" and frame.image.size == (640, 480)
        assert np.array_equal(np.asarray(frame.image), pixel_array(path, index=frame.index))
    summary = json.dumps(clip.summary())
    assert "PLA" not in summary and "204" not in summary  # PatientName / PatientID of the file
    assert clip.metadata["modality"] == "US" and clip.metadata["frame_time"] == pytest.approx(33.333)


def test_generated_ybr_cine_with_frame_time_vector(tmp_path, clips):
    path = tmp_path / "echo.dcm"
    # increments before each frame (ms): frames at 0, 0.4, 1.2, 1.3, 2.5 s
    clips.write_cine(path, frame_times_ms=[0, 400, 800, 100, 1200], photometric="YBR_FULL")
    clip = load_clip(path, fps=1)
    # on screen at 0 s: frame 0; at 1 s: frame 1 (since 0.4 s); at 2 s: frame 3 (since 1.3 s)
    assert [f.index for f in clip.frames] == [0, 1, 3]
    assert clip.times_s == pytest.approx([0.0, 0.4, 1.3])
    for frame in clip.frames:
        assert np.abs(np.asarray(frame.image, dtype=int) - clips.colour(frame.index)).max() <= 2
    every = load_cine_dicom(path, fps=10)
    assert [f.index for f in every.frames] == [0, 1, 2, 3, 4]
    assert "Doe" not in json.dumps(every.summary()) and "998877" not in json.dumps(every.summary())


def test_cine_errors_name_the_file_and_say_why(tmp_path, clips):
    untimed = tmp_path / "untimed.dcm"
    clips.write_cine(untimed)
    with pytest.raises(InputError, match=r"untimed.dcm: 5 frame\(s\) of modality US with neither frame times") as info:
        load_cine_dicom(untimed)
    assert "Doe" not in str(info.value)
    with pytest.raises(InputError, match="neither as a clip nor as a volume"):
        load_cine_dicom(get_testdata_file("emri_small.dcm"))  # 10 MR frames, no times, no positions
    with pytest.raises(InputError, match="a CT / MR volume .* --ct"):
        load_clip(get_testdata_file("eCT_Supplemental.dcm"))  # enhanced CT: frames placed in space
    bad_vector = tmp_path / "bad.dcm"
    clips.write_cine(bad_vector, frame_times_ms=[0, 40, 40])
    with pytest.raises(InputError, match="FrameTimeVector has 3 values for 5 frames"):
        load_cine_dicom(bad_vector)
    with pytest.raises(InputError, match="not a DICOM file"):
        (tmp_path / "x.dcm").write_bytes(b"nothing")
        load_cine_dicom(tmp_path / "x.dcm")


def write_cine_mr_slice(path, trigger_ms, value, series_uid, position=(0.0, 0.0, 0.0), instance=1):
    """One grey 16-bit frame of a cine MR series at ``trigger_ms`` after the R wave."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.Modality, ds.SeriesInstanceUID = "Roe^Richard", "MR", series_uid
    ds.InstanceNumber, ds.TriggerTime = instance, trigger_ms
    ds.ImagePositionPatient, ds.ImageOrientationPatient = list(position), [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 6, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.full((4, 6), value, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_cine_mr_series_ordered_by_trigger_time(tmp_path):
    folder = tmp_path / "cine"
    folder.mkdir()
    uid = generate_uid()
    # written out of order: names and instance numbers do not follow the cardiac phase
    for name, trigger, value in [("a.dcm", 80.0, 300), ("b.dcm", 0.0, 100), ("c.dcm", 120.0, 400), ("d.dcm", 40.0, 200)]:
        write_cine_mr_slice(folder / name, trigger, value, uid, instance=len(name) + int(value))
    clip = load_clip(folder, fps=25)
    assert clip.times_s == pytest.approx([0.0, 0.04, 0.08, 0.12])
    levels = [int(np.asarray(f.image)[0, 0, 0]) for f in clip.frames]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 255  # one grey scale for the clip
    assert "Roe" not in json.dumps(clip.summary())
    write_cine_mr_slice(folder / "e.dcm", 20.0, 100, uid, position=(0.0, 0.0, 5.0))
    with pytest.raises(InputError, match="2 slice positions; a cine series shows one plane"):
        load_clip(folder)


def test_long_gaps_between_kept_frames_are_seeked_over(tmp_path, clips):
    path = tmp_path / "long.mp4"
    clips.write_mp4(path, list(range(60)), rate=1)  # one frame per second for a minute, a keyframe every 12 frames
    clip = load_video(path, fps=1, max_frames=4)  # sample times 0, 19.67, 39.33, 59 s: 20 s apart
    assert [f.index for f in clip.frames] == [0, 19, 39, 59]
    assert [clips.frame_colour_index(f.image, 60) for f in clip.frames] == [0, 19, 39, 59]
    assert clip.times_s == pytest.approx([0.0, 19.0, 39.0, 59.0])


def test_palette_colour_ultrasound_through_its_lookup_table(tmp_path):
    from pydicom.pixels import apply_color_lut

    source = pydicom.dcmread(get_testdata_file("OBXXXX1A_2frame.dcm"))  # US, PALETTE COLOR, no frame times
    source.FrameTime = 40.0
    path = tmp_path / "palette.dcm"
    source.save_as(path)
    clip = load_cine_dicom(path, fps=25)
    assert clip.times_s == pytest.approx([0.0, 0.04])
    for frame in clip.frames:
        expected = (apply_color_lut(source.pixel_array[frame.index], source) >> 8).astype(np.uint8)
        assert np.array_equal(np.asarray(frame.image), expected)


def test_load_ct_sends_a_cine_clip_to_load_clip():
    from longllava.domains.medical.ct import load_ct

    with pytest.raises(InputError, match=r"a cine clip \(120 US frames spaced in time .*\), not a volume; load it "
                                         r"with load_clip \(CLI: ask --video\)"):
        load_ct(get_testdata_file("color3d_jpeg_baseline.dcm"))
