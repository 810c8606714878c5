"""CLI for the evaluators: ``longllava score BENCH --pred FILE --gt FILE``."""

from __future__ import annotations

import argparse
import json

from longllava.eval.benchmarks import BENCHMARKS, VQA_PROTOCOLS


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score", help="score a prediction file with a benchmark's official protocol",
        description="Score predictions made by any model: LLaVA-Med answer files, HuatuoGPT-Vision "
        "output JSON, SkySenseGPT answers files, our runner's JSONL (question_id/id + text/answer), "
        "or for CT-RATE a CSV in the labels layout (0/1 or probabilities). Metric values are in "
        "percent.")
    score.add_argument("benchmark", choices=BENCHMARKS, metavar="BENCH",
                       help=f"one of {', '.join(BENCHMARKS)}")
    score.add_argument("--pred", required=True, metavar="FILE", help="prediction file")
    score.add_argument("--gt", required=True, metavar="FILE",
                       help="ground truth: " + ", ".join(
                           f"{gt} ({', '.join(names)})" for gt, names in _by_ground_truth().items()))
    score.add_argument("--protocol", choices=VQA_PROTOCOLS,
                       help="vqa-rad / pathvqa protocol (default: recognised from --gt)")
    score.add_argument("--strict", action="store_true",
                       help="llava-med: whole-word closed matching instead of the published "
                       "substring matching")
    score.add_argument("--out", metavar="DIR",
                       help="write metrics.json, metrics.md, items.jsonl and per_category.png here")
    score.add_argument("--json", action="store_true",
                       help='print {"benchmark", "protocol", "metrics", "counts"} as JSON')
    score.set_defaults(func=_score)


def _by_ground_truth() -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, declared in BENCHMARKS.items():
        grouped.setdefault(declared.ground_truth, []).append(name)
    return grouped


def _score(args: argparse.Namespace) -> int:
    from longllava.eval.results import write_results
    from longllava.eval.scorers import score_files

    result = score_files(args.benchmark, args.pred, args.gt, protocol=args.protocol,
                         strict=args.strict)
    if args.out:
        write_results(result, args.out)
    if args.json:
        print(json.dumps(result.summary(), ensure_ascii=False))
    else:
        print(result.to_markdown(), end="")
        if args.out:
            print(f"\nwrote metrics.json, metrics.md, items.jsonl, per_category.png to {args.out}")
    return 0
