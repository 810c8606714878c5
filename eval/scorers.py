"""One entry point from (benchmark, prediction file, ground-truth file) to a :class:`ScoreResult`.

The scorers themselves are pure functions over parsed records (:func:`score_llava_med_vqa`,
:func:`score_multiple_choice`, :func:`score_ct_rate`, :func:`score_fit_rsfg`, :func:`score_video_mme`,
:func:`score_cdvqa`); this module only picks
the readers. VQA-RAD / PathVQA have two protocols, recognised from the ground-truth layout: a
LLaVA-Med ``test.json`` (records with ``conversations``) -> ``llava-med``; a HuatuoGPT-Vision
evaluation file (records with ``options``) -> ``multiple-choice``.
"""

from __future__ import annotations

from pathlib import Path

from longllava.errors import InputError
from longllava.eval.benchmarks import BENCHMARKS, load
from longllava.eval.ct_rate import (VOLUME_COLUMN, ct_rate_table_from_answers,
                                    read_ct_rate_labels, read_ct_rate_prediction_csv, score_ct_rate)
from longllava.eval.files import load_json_list
from longllava.eval.cdvqa import read_cdvqa, score_cdvqa
from longllava.eval.fit_rsfg import read_fit_rsfg_ground_truth, score_fit_rsfg
from longllava.eval.llava_med import (is_llava_med_ground_truth, read_llava_med_ground_truth,
                                      score_llava_med_vqa)
from longllava.eval.multiple_choice import (is_multiple_choice_ground_truth,
                                            read_multiple_choice_ground_truth,
                                            score_multiple_choice)
from longllava.eval.predictions import read_predictions
from longllava.eval.results import ScoreResult
from longllava.eval.video_mme import read_video_mme, score_video_mme


def vqa_protocol_of(ground_truth: str | Path) -> str:
    """``llava-med`` or ``multiple-choice``, from the layout of a VQA-RAD / PathVQA ground truth."""
    records = load_json_list(ground_truth, "a LLaVA-Med test.json or a HuatuoGPT-Vision "
                                           "evaluation file")
    if is_llava_med_ground_truth(records):
        return "llava-med"
    if is_multiple_choice_ground_truth(records):
        return "multiple-choice"
    raise InputError(f"{ground_truth}: neither a LLaVA-Med test.json (records with 'conversations') "
                     f"nor a HuatuoGPT-Vision evaluation file (records with 'options')")


def _is_csv(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    with path.open(encoding="utf-8") as handle:
        return handle.readline().lstrip("\ufeff").startswith(VOLUME_COLUMN)


def score_files(benchmark: str, predictions: str | Path, ground_truth: str | Path, *,
                protocol: str | None = None, strict: bool = False) -> ScoreResult:
    """Score a prediction file against a ground-truth file, with the benchmark's official protocol."""
    if benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    score = load(BENCHMARKS[benchmark].score_files)
    return score(benchmark, predictions, ground_truth, protocol=protocol, strict=strict)


def score_vqa_files(benchmark: str, predictions: str | Path, ground_truth: str | Path, *,
                    protocol: str | None = None, strict: bool = False) -> ScoreResult:
    """VQA-RAD / PathVQA: the protocol (llava-med or multiple-choice) from the ground truth's layout."""
    layout = vqa_protocol_of(ground_truth)
    if protocol is not None and protocol != layout:
        raise InputError(f"{ground_truth}: --protocol {protocol} was asked for, but this ground "
                         f"truth is in the {layout} layout; pass the matching file or protocol")
    if strict and layout != "llava-med":
        raise InputError("--strict applies to the llava-med protocol only")
    if layout == "llava-med":
        return score_llava_med_vqa(read_llava_med_ground_truth(ground_truth),
                                   read_predictions(predictions), benchmark=benchmark,
                                   strict=strict)
    return score_multiple_choice(read_multiple_choice_ground_truth(ground_truth),
                                 read_predictions(predictions), benchmark=benchmark)


def _one_protocol(benchmark: str, protocol: str | None, strict: bool) -> None:
    if protocol is not None:
        raise InputError(f"--protocol applies to vqa-rad and pathvqa only; {benchmark} has one "
                         f"protocol")
    if strict:
        raise InputError("--strict applies to the llava-med protocol of vqa-rad / pathvqa only")


def score_ct_rate_files(benchmark: str, predictions: str | Path, ground_truth: str | Path, *,
                        protocol: str | None = None, strict: bool = False) -> ScoreResult:
    """CT-RATE: yes/no answers (JSONL) or a CSV in the labels layout (0/1 or probabilities)."""
    _one_protocol(benchmark, protocol, strict)
    labels = read_ct_rate_labels(ground_truth)
    path = Path(predictions)
    if not path.is_file():
        raise InputError(f"{path}: prediction file not found")
    table = (read_ct_rate_prediction_csv(path) if _is_csv(path)
             else ct_rate_table_from_answers(read_predictions(path)))
    return score_ct_rate(labels, table)


def score_fit_rsfg_files(benchmark: str, predictions: str | Path, ground_truth: str | Path, *,
                         protocol: str | None = None, strict: bool = False) -> ScoreResult:
    """FIT-RSFG-Bench: SkySenseGPT's exact match."""
    _one_protocol(benchmark, protocol, strict)
    return score_fit_rsfg(read_fit_rsfg_ground_truth(ground_truth), read_predictions(predictions))


def score_video_mme_files(benchmark: str, predictions: str | Path, ground_truth: str | Path, *,
                          protocol: str | None = None, strict: bool = False) -> ScoreResult:
    """Video-MME: the letter of eval_your_results.py, accuracy over answered questions."""
    _one_protocol(benchmark, protocol, strict)
    return score_video_mme(read_video_mme(ground_truth), read_predictions(predictions))


def score_cdvqa_files(benchmark: str, predictions: str | Path, ground_truth: str | Path, *,
                      protocol: str | None = None, strict: bool = False) -> ScoreResult:
    """CDVQA: OA and AA over question types."""
    _one_protocol(benchmark, protocol, strict)
    return score_cdvqa(read_cdvqa(ground_truth), read_predictions(predictions))
