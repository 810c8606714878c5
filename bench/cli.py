"""``longllava bench ...``: every benchmark target. ``model`` (hybrid vs pure attention vs pure
Mamba, 1 to 1000 images), ``scan`` (the Mamba selective scan: fused CPU kernel vs pure torch),
``ct`` (CT loading + slicing), ``scene`` (scene tiling) and ``clip`` (sampling a long video)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from longllava.domains.remote_sensing.cli import DEFAULT_GDAL_CACHE_MB
from longllava.errors import InputError


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    model = bench.add_parser(
        "model",
        help="prefill time, decode speed and memory of the hybrid vs pure attention vs pure Mamba, 1-1000 images",
    )
    model.add_argument(
        "--preset",
        default="tiny-random",
        help="tiny-random (or tiny; CPU-sized, default), longllava-9b, longllava-a13b: released shapes with random "
        "weights on CUDA, analytic memory model on CPU",
    )
    model.add_argument("--images", default="1,8,64,256,1000", metavar="N,N,...", help="image counts (144 tokens each)")
    model.add_argument(
        "--variants", default="hybrid,attention,mamba", metavar="V,V,...", help="any of hybrid, attention, mamba"
    )
    model.add_argument("--chunk-size", type=int, default=None, help="prefill chunk in tokens (default: the preset's, 8192)")
    model.add_argument(
        "--max-new-tokens",
        "--decode-tokens",
        dest="max_new_tokens",
        type=int,
        default=None,
        help="tokens decoded for (n-1)/(t_n-t_1) (default: 1000 on CUDA as in the paper, 32 on CPU)",
    )
    model.add_argument(
        "--unchunked-max-images",
        type=int,
        default=None,
        help="also prefill in one forward up to this N, to show what chunking does (default: 256 on CPU, 8 on CUDA)",
    )
    model.add_argument(
        "--time-budget",
        dest="time_budget_s",
        type=float,
        default=None,
        metavar="S",
        help="start no new measurement after S seconds; the rest are reported as skipped (outputs still written)",
    )
    model.add_argument(
        "--prefill-budget",
        dest="prefill_budget_s",
        type=float,
        default=None,
        metavar="S",
        help="stop a chunked prefill after S seconds (>= 3 chunks) and extrapolate its time, labelled as such",
    )
    model.add_argument(
        "--max-batch-memory-gib", type=float, default=80.0,
        help="CUDA: decode throughput at the largest batch whose weights + caches fit in this many GiB (default 80)",
    )
    model.add_argument("--context-tokens", type=int, default=100_000, help="CUDA: context of that largest-batch decode (default 100000)")
    model.add_argument("--throughput-steps", type=int, default=20, help="CUDA: timed decode steps of that largest batch (default 20)")
    model.add_argument(
        "--training-tokens", type=int, default=16_384,
        help="CUDA: tokens of the packed bf16 LoRA training step timed on the hybrid (0 skips it)",
    )
    model.add_argument("--resume", action="store_true", help="keep the measured rows of an earlier run in --out")
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    model.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bfloat16 for the analytic model and on CUDA, float32 for the tiny preset on CPU")
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a shared machine)")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--out", type=Path, default=Path("bench_model"), help="output folder (results.json, .md, .png)")
    model.add_argument("--json", action="store_true", help="print results.json instead of the report")
    model.set_defaults(func=_bench_model)

    scan = bench.add_parser("scan", help="one Mamba mixer's selective scan: fused CPU kernel vs pure torch, fwd and fwd+bwd")
    scan.add_argument("--tokens", default="512,2048,8192", metavar="N,N,...", help="sequence lengths")
    scan.add_argument("--channels", type=int, default=128, help="Mamba inner channels (tiny 128, released 9B 8192)")
    scan.add_argument("--d-state", type=int, default=8, help="SSM state per channel (default model 8, released 16)")
    scan.add_argument("--repeats", type=int, default=3)
    scan.add_argument("--threads", type=int, default=None, help="torch (and kernel) CPU threads")
    scan.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    scan.set_defaults(func=_bench_scan)

    ct = bench.add_parser("ct", help="CT loading + slicing speed and peak memory on a generated volume")
    ct.add_argument("--shape", default="300,512,512", help="z,y,x of the generated volume (default 300,512,512)")
    ct.add_argument("--formats", default="nifti,dicom,dicom-j2k", help="comma-separated: nifti, dicom (uncompressed), dicom-j2k (JPEG 2000 lossless)")
    ct.add_argument("--workdir", type=Path, help="where to write the generated files (default: a temporary folder)")
    ct.add_argument(
        "--repeat", type=int, default=3, help="run decode and slices alternately N times, keep the fastest of each (default 3)"
    )
    ct.add_argument(
        "--workers", type=int, help="threads that render the slices (default: the usable cores, at most 4; 1: serial)"
    )
    ct.add_argument("--json", action="store_true")
    ct.set_defaults(func=_bench_ct)

    scene = bench.add_parser("scene", help="tiling throughput and peak RSS on a large generated GeoTIFF")
    scene.add_argument("--size", type=int, default=30000, help="generated scene side in pixels")
    scene.add_argument("--tile", type=int, default=336)
    scene.add_argument("--path", default=None, help="benchmark this raster instead of generating one")
    scene.add_argument("--workdir", default=None, help="where to generate the scene (default: a temp dir)")
    scene.add_argument("--keep", action="store_true", help="keep the generated scene")
    scene.add_argument("--limit", type=int, default=None, help="read only the first N tiles")
    scene.add_argument("--gdal-cache-mb", type=int, default=DEFAULT_GDAL_CACHE_MB)
    scene.add_argument("--repeat", type=int, default=2, help="runs of each measurement (best time kept)")
    scene.add_argument("--json", action="store_true")
    scene.set_defaults(func=_bench_scene)

    clip = bench.add_parser("clip", help="sampling a long generated video at 1 fps (dense and sparse caps) vs decoding every frame")
    clip.add_argument("--duration", type=float, default=600.0, metavar="S", help="video length in seconds (default 600)")
    clip.add_argument("--rate", type=int, default=25, help="frames per second of the video (default 25)")
    clip.add_argument("--size", default="320,240", metavar="W,H", help="frame size (default 320,240)")
    clip.add_argument("--gop", type=int, default=250, help="frames between keyframes (default 250)")
    clip.add_argument("--dense", type=int, default=256, metavar="N", help="max frames of the dense sampling (default 256)")
    clip.add_argument("--sparse", type=int, default=16, metavar="N", help="max frames of the sparse sampling (default 16)")
    clip.add_argument("--workdir", default=None, help="where to write the video (default: a temp dir)")
    clip.add_argument("--json", action="store_true")
    clip.set_defaults(func=_bench_clip)


def _bench_model(args: argparse.Namespace) -> int:
    from longllava.bench.model import run_model_bench
    from longllava.bench.report import format_report
    from longllava.bench.settings import ModelBenchConfig

    # every option is a ModelBenchConfig field of the same name; two arrive as comma-separated text
    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(ModelBenchConfig)}
    options["images"] = parse_counts(args.images)
    options["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    results = run_model_bench(ModelBenchConfig(**options))
    print(json.dumps(results, indent=2) if args.json else format_report(results))
    return 0


def _bench_scan(args: argparse.Namespace) -> int:
    from longllava.bench.scan import ScanBenchConfig, format_scan_report, run_scan_bench

    tokens = parse_counts(args.tokens, "--tokens")
    rows = run_scan_bench(ScanBenchConfig(tokens=tokens, channels=args.channels, d_state=args.d_state,
                                          repeats=args.repeats, threads=args.threads))
    print(json.dumps(rows, indent=2) if args.json else format_scan_report(rows))
    return 0


def _bench_ct(args: argparse.Namespace) -> int:
    from longllava.bench.ct import format_report, run_ct_bench

    shape = tuple(int(v) for v in args.shape.split(","))
    report = run_ct_bench(shape, [f.strip() for f in args.formats.split(",")], args.workdir, args.repeat, args.workers)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _bench_scene(args: argparse.Namespace) -> int:
    from longllava.bench.scene import run_scene_bench

    report = run_scene_bench(path=args.path, size=args.size, tile=args.tile, workdir=args.workdir,
                             keep=args.keep, limit=args.limit, gdal_cache_mb=args.gdal_cache_mb,
                             repeat=args.repeat)
    _print_report(report, args.json)
    return 0


def _bench_clip(args: argparse.Namespace) -> int:
    from longllava.bench.clip import run_clip_bench

    size = parse_counts(args.size, "--size")
    if len(size) != 2:
        raise InputError(f"--size takes W,H, got {args.size!r}")
    report = run_clip_bench(duration_s=args.duration, rate=args.rate, size=size, gop=args.gop,
                            dense_frames=args.dense, sparse_frames=args.sparse, workdir=args.workdir)
    _print_report(report, args.json)
    return 0


def _print_report(report: dict, as_json: bool) -> None:
    """A flat report as one JSON line, or as aligned ``key: value`` lines."""
    if as_json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>24}: {value}")


def parse_counts(text: str, option: str = "--images") -> tuple[int, ...]:
    """A comma-separated list of positive integers given to ``option`` (image counts, token counts)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise InputError(f"{option} must be comma-separated integers like 1,8,64, got {text!r}") from error
    if not values or min(values) < 1:
        raise InputError(f"{option} must list positive counts, got {text!r}")
    return values
