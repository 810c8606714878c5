"""CLI for ``longllava bench model`` (hybrid vs pure attention vs pure Mamba, 1 to 1000 images) and
``longllava bench scan`` (the Mamba selective scan: fused CPU kernel vs pure torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    model = bench.add_parser(
        "model",
        help="prefill time, decode speed and memory of the hybrid vs pure attention vs pure Mamba, 1-1000 images",
    )
    model.add_argument(
        "--preset",
        default="tiny",
        choices=("tiny", "longllava-9b", "longllava-a13b"),
        help="tiny (CPU-sized, default); released shapes with random weights on CUDA, analytic memory model on CPU",
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
        type=float,
        default=None,
        metavar="S",
        help="start no new measurement after S seconds; the rest are reported as skipped (outputs still written)",
    )
    model.add_argument(
        "--prefill-budget",
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
    model.add_argument(
        "--training-tokens", type=int, default=16_384,
        help="CUDA: tokens of the packed bf16 LoRA training step timed on the hybrid (0 skips it)",
    )
    model.add_argument("--resume", action="store_true", help="keep the measured rows of an earlier run in --out")
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    model.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: bfloat16 for the analytic model and on CUDA with mamba-ssm kernels, else float32")
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


def _bench_model(args: argparse.Namespace) -> int:
    from longllava.core.bench_model import ModelBenchConfig, format_report, parse_counts, run_model_bench

    settings = ModelBenchConfig(
        preset=args.preset,
        images=parse_counts(args.images),
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
        chunk_size=args.chunk_size,
        max_new_tokens=args.max_new_tokens,
        unchunked_max_images=args.unchunked_max_images,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        time_budget_s=args.time_budget,
        prefill_budget_s=args.prefill_budget,
        resume=args.resume,
        seed=args.seed,
        max_batch_memory_gib=args.max_batch_memory_gib,
        context_tokens=args.context_tokens,
        training_tokens=args.training_tokens,
        out=args.out,
    )
    results = run_model_bench(settings)
    print(json.dumps(results, indent=2) if args.json else format_report(results))
    return 0


def _bench_scan(args: argparse.Namespace) -> int:
    from longllava.core.bench_model import parse_counts
    from longllava.core.bench_scan import ScanBenchConfig, format_scan_report, run_scan_bench

    tokens = parse_counts(args.tokens, "--tokens")
    rows = run_scan_bench(ScanBenchConfig(tokens=tokens, channels=args.channels, d_state=args.d_state,
                                          repeats=args.repeats, threads=args.threads))
    print(json.dumps(rows, indent=2) if args.json else format_scan_report(rows))
    return 0
