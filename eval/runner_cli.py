"""CLI for the runner: ``longllava eval {vqa-rad,pathvqa,ct-rate,fit-rsfg,vniah} --model M --data PATH
--out DIR``. Launch it with ``torchrun --nproc_per_node K -m longllava eval ...`` (or ``accelerate
launch``) to shard the questions over K processes."""

from __future__ import annotations

import argparse
import os
import sys

from longllava.core.cli import add_model_args
from longllava.eval.benchmarks import BENCHMARKS
from longllava.examples import EXAMPLE_CT


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _add_run_args(parser: argparse.ArgumentParser, data_help: str, data_default: str | None = None) -> None:
    add_model_args(parser)
    parser.add_argument("--data", required=data_default is None, default=data_default, metavar="PATH", help=data_help)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: predictions.jsonl (resumed when present), run.json, "
                        "results")
    parser.add_argument("--batch-size", type=int, default=1, metavar="B",
                        help="questions generated together (left-padded batch)")
    parser.add_argument("--merge-timeout", type=float, default=3600.0, metavar="S",
                        help="sharded runs: how long rank 0 waits for the other ranks' answers")


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval", help="run a model on a benchmark (resumable, shardable) and score it",
        description="Generate greedy answers with the core protocol, append them to "
        "OUT/predictions.jsonl as they come (a restart skips answered questions), and score with the "
        "benchmark's official protocol: metrics.json, metrics.md, items.jsonl, per_category.png. "
        "Under torchrun / accelerate launch (RANK, WORLD_SIZE) each rank answers its share and "
        "rank 0 merges and scores.")
    benchmarks = evaluate.add_subparsers(dest="eval_benchmark", metavar="BENCH", required=True)
    for name, declared in BENCHMARKS.items():
        run = benchmarks.add_parser(name, help=f"{name}: --data {declared.data}")
        _add_run_args(run, declared.data)
        run.add_argument("--limit", type=int, metavar="N",
                         help="only the first N questions" + (" (volumes: 18 questions each)" if declared.volumes
                                                              else " (videos: all their questions)" if declared.videos
                                                              else ""))
        lengths = ", ".join(f"{protocol} {tokens}" for protocol, tokens in declared.max_new_tokens.items())
        run.add_argument("--max-new-tokens", type=int, metavar="T",
                         help=f"default: the official script's ({lengths})")
        if declared.protocols:
            run.add_argument("--protocol", choices=declared.protocols,
                             help="default: recognised from the --data layout")
        if declared.videos:
            run.add_argument("--fps", type=float, default=1.0, help="frames per second of video (default 1, the paper's)")
            run.add_argument("--max-frames", type=int, default=256, metavar="N",
                             help="frames per video at most, evenly spread beyond (default 256)")
        if declared.volumes:
            run.add_argument("--max-slices", type=int, default=256, metavar="N",
                             help="axial slices per volume, evenly spaced (default 256)")
            run.add_argument("--split", choices=("valid", "train"), default="valid")
        else:
            run.add_argument("--image-root", metavar="DIR",
                             help="folder the data's image paths are relative to (default: the "
                             "data file's folder)")
        run.set_defaults(func=_run_benchmark)

    vniah = benchmarks.add_parser(
        "vniah", help="V-NIAH: needle among N CT slices or scene tiles; accuracy heat map",
        description="Insert a coloured-square needle at each depth among N haystack images (the "
        "slices of a CT volume, or the tiles of a scene), ask for its colour, and write vniah.json "
        "and vniah_heatmap.png (accuracy over N and depth).")
    _add_run_args(vniah, "a CT volume (NIfTI, DICOM folder / zip) or a scene raster (GeoTIFF ...); "
                  "default: the package's example CT (112 real slices)", str(EXAMPLE_CT))
    vniah.add_argument("--haystack", choices=("auto", "ct", "scene"), default="auto",
                       help="what --data is (default: CT for NIfTI / DICOM, else a scene)")
    vniah.add_argument("--lengths", type=_ints, default="1,10,50,100,200,500,1000", metavar="N,..",
                       help="haystack sizes N (default 1,10,50,100,200,500,1000)")
    vniah.add_argument("--depths", type=_floats, default="0,0.25,0.5,0.75,1", metavar="D,..",
                       help="needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)")
    vniah.add_argument("--samples", type=int, default=1, help="questions per (N, depth) cell")
    vniah.add_argument("--seed", type=int, default=0)
    vniah.add_argument("--tile", type=int, default=336, help="scene tile size in pixels")
    vniah.add_argument("--max-new-tokens", type=int, default=16, metavar="T")
    vniah.set_defaults(func=_run_vniah)


def _load_model(args: argparse.Namespace):
    """The model, loaded by ``args.load_model`` (set by the top-level CLI, which resolves names
    such as ``default``)."""
    import torch

    if args.device is None and torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # one GPU per rank
    return args.load_model(args)


def _run_benchmark(args: argparse.Namespace) -> int:
    from longllava.eval.runner import RunConfig, run_benchmark

    config = RunConfig(benchmark=args.eval_benchmark, data=args.data, out=args.out, model=args.model,
                       protocol=getattr(args, "protocol", None),
                       image_root=getattr(args, "image_root", None), limit=args.limit,
                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       max_slices=getattr(args, "max_slices", 256),
                       split=getattr(args, "split", "valid"), fps=getattr(args, "fps", 1.0),
                       max_frames=getattr(args, "max_frames", 256), merge_timeout_s=args.merge_timeout)
    outcome = _run_rank(run_benchmark, config, args)
    if outcome is None or outcome.result is None:
        return 1 if outcome is None else 0
    print(outcome.result.to_markdown(), end="")
    print(f"\nwrote predictions.jsonl, metrics.json, metrics.md, items.jsonl, per_category.png to "
          f"{outcome.out_dir}")
    return 0


def _run_rank(run, config, args: argparse.Namespace):
    """Run this process's shard; None if rank 0 timed out waiting for the others. Ranks other than
    0 return an outcome without a result: they only write answers."""
    try:
        outcome = run(config, lambda: _load_model(args))
    except TimeoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    if outcome.result is None:
        print(f"rank {outcome.rank}: {outcome.new_answers} answer(s) written; rank 0 merges and scores")
    return outcome


def _run_vniah(args: argparse.Namespace) -> int:
    from longllava.eval.vniah import VniahConfig, run_vniah

    config = VniahConfig(data=args.data, out=args.out, model=args.model, haystack=args.haystack,
                         lengths=args.lengths, depths=args.depths, samples=args.samples,
                         seed=args.seed, tile=args.tile, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, merge_timeout_s=args.merge_timeout)
    outcome = _run_rank(run_vniah, config, args)
    if outcome is None or outcome.result is None:
        return 1 if outcome is None else 0
    result = outcome.result
    print(f"V-NIAH over {result.haystack['images']} {result.haystack['kind']} image(s): overall "
          f"accuracy {result.overall:.1f}%")
    for depth, row in zip(result.depths, result.accuracy):
        cells = "  ".join(f"N={n}: {'n/a' if v is None else f'{v:.0f}%'}"
                          for n, v in zip(result.lengths, row))
        print(f"  depth {depth:g}: {cells}")
    print(f"wrote predictions.jsonl, vniah.json, vniah_heatmap.png to {outcome.out_dir}")
    return 0
