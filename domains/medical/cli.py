"""CLI for the medical domain: ``ct-slices`` and the ``--ct`` and ``--video`` inputs of ``ask``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from longllava.core.cli import ask_inputs


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    slices = commands.add_parser(
        "ct-slices",
        help="CT volume (NIfTI, DICOM folder / files / zip) -> windowed RGB PNG slices + JSON summary",
        description="Load a CT volume, reorient it (axial, z inferior->superior, radiological display), "
        "window it to RGB and write the selected slices as PNGs named slice_<z index>.png.",
    )
    slices.add_argument("path", nargs="+", help="a .nii/.nii.gz file, a DICOM folder, a .zip of DICOM, or DICOM files")
    slices.add_argument("--out", required=True, type=Path, help="output folder for the PNGs and slices.json")
    window = slices.add_mutually_exclusive_group()
    window.add_argument("--windows", default="lung,mediastinum,bone", help="three windows as R,G,B (default lung,mediastinum,bone)")
    window.add_argument("--window", help="one window as gray: a preset (lung, mediastinum, abdomen, bone, brain) or WIDTH/LEVEL")
    select = slices.add_mutually_exclusive_group()
    select.add_argument("--max-slices", type=int, help="at most N slices, evenly spaced (default 256)")
    select.add_argument("--every", type=int, help="every K-th slice")
    select.add_argument("--num-slices", type=int, help="exactly N evenly spaced slices (all if fewer)")
    select.add_argument("--z-spacing", type=float, help="one slice per MM millimetres")
    slices.add_argument("--size", type=int, default=336, help="longer side of the output images in pixels (default 336)")
    slices.add_argument("--workers", type=int, help="threads that render the slices (default: the usable cores, at most 4; 1: serial)")
    slices.add_argument("--series", help="SeriesInstanceUID or SeriesNumber when the DICOM input mixes series")
    slices.add_argument("--allow-non-ct", action="store_true", help="accept non-CT DICOM (values are then not HU)")
    slices.add_argument("--json", action="store_true", help="print the summary as JSON")
    slices.set_defaults(func=_ct_slices)

    ct = ask_inputs(commands, "CT volumes", ("--ct",), ct_visuals)
    if ct is not None:
        ct.add_argument("--ct", metavar="PATH", help="a CT volume (NIfTI, DICOM folder / files / .zip) as an ordered slice stack")
        ct.add_argument("--max-slices", type=int, default=256, help="CT slices sent to the model (evenly spaced)")
        ct.add_argument("--windows", default="lung,mediastinum,bone", help="CT windows as RGB channels, or one W/L")

    clips = ask_inputs(commands, "clips (videos, cine DICOM)", ("--video",), clip_visuals)
    if clips is not None:
        clips.add_argument("--video", nargs="+", action="extend", metavar="PATH",  # repeated: more files
                           help="a video (MP4, MOV, MKV, WebM, AVI, ...), a cine DICOM file (US, echo, XA, cine MR), or "
                           "the files / folder / .zip of a cine series, as one ordered stack of <vid> frames")
        clips.add_argument("--fps", type=float, default=1.0, help="frames sent per second of the clip (default 1, the paper's)")
        clips.add_argument("--max-frames", type=int, default=256,
                           help="frames at most, evenly spread over the clip beyond (default 256)")


def clip_visuals(args: argparse.Namespace) -> list:
    """``ask --video``: the clip's frames, sampled by presentation time, as one ordered stack."""
    from longllava.domains.medical.clips import load_clip
    from longllava.domains.medical.visuals import clip_stack

    source = args.video[0] if len(args.video) == 1 else args.video
    return [clip_stack(load_clip(source, args.fps, args.max_frames))]


def ct_visuals(args: argparse.Namespace) -> list:
    """``ask --ct``: the volume's slices as one ordered stack."""
    from longllava.domains.medical.ct import load_ct
    from longllava.domains.medical.slices import ct_to_slices
    from longllava.domains.medical.visuals import ct_stack

    return [ct_stack(ct_to_slices(load_ct(args.ct), windows=args.windows, max_slices=args.max_slices))]


def _ct_slices(args: argparse.Namespace) -> int:
    from longllava.domains.medical.ct import load_ct
    from longllava.domains.medical.slices import ct_to_slices

    path = args.path[0] if len(args.path) == 1 else args.path
    volume = load_ct(path, series=args.series, allow_non_ct=args.allow_non_ct)
    slices = ct_to_slices(
        volume,
        windows=args.window or args.windows,
        max_slices=args.max_slices,
        every=args.every,
        num_slices=args.num_slices,
        z_spacing_mm=args.z_spacing,
        size=args.size,
        workers=args.workers,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    files = []
    for item in slices:
        name = f"slice_{item.index:04d}.png"
        item.image.save(args.out / name)
        files.append(name)
    hu_min, hu_max = volume.hu_range()
    summary = {
        "source": volume.source,
        "num_slices": len(slices),
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
        "orientation": volume.orientation,
        "hu_min": hu_min,
        "hu_max": hu_max,
        "windows": [w.label for w in slices.windows],
        "size": args.size,
        "indices": slices.indices,
        "slice_z_mm": [round(z, 4) for z in slices.z_mm],
        "files": files,
        "metadata": volume.metadata,
    }
    (args.out / "slices.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{len(slices)} of {volume.shape[0]} slices -> {args.out}  shape {volume.shape}  spacing "
            f"{tuple(round(s, 3) for s in volume.spacing_mm)} mm  {volume.orientation}  HU {hu_min:g}..{hu_max:g}  "
            f"z {summary['slice_z_mm'][0]}..{summary['slice_z_mm'][-1]} mm"
        )
    return 0
