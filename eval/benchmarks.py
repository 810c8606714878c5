"""Every scored benchmark, declared once: what its data is, how its questions are read and
prompted (the task builder), how long the official scripts let the model answer, and how a
prediction file is scored. ``eval BENCH`` (the runner), ``score BENCH`` and their help read it
from here.

A dependency-free module, so the CLI stays fast: readers and scorers are named as
``"module:function"`` and imported when used (:func:`load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

VQA_PROTOCOLS = ("llava-med", "multiple-choice")  # the two ways VQA-RAD / PathVQA are scored


@dataclass(frozen=True)
class Benchmark:
    name: str
    data: str  # what ``eval BENCH --data`` is (CLI help, and the context of a data error)
    ground_truth: str  # what ``score BENCH --gt`` is
    task: str  # "module:function": RunConfig -> EvalTask (questions, prompts, scorer)
    score_files: str  # "module:function": (benchmark, predictions, ground truth, protocol, strict) -> ScoreResult
    # generation length per scoring protocol: the official evaluation scripts' (LLaVA-Med's
    # model_vqa 1024, HuatuoGPT-Vision's eval.py and SkySenseGPT's batch_geochat_vqa.py 256);
    # CT-RATE questions are yes/no, so a short answer suffices
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    protocols: tuple[str, ...] = ()  # choices of --protocol, when the benchmark has several
    volumes: bool = False  # questions come 18 per CT volume: --max-slices, --split; --limit counts volumes
    videos: bool = False  # questions about videos: --fps, --max-frames; --limit counts videos


def load(target: str) -> Callable:
    """The function a declaration names as ``"module:function"``."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


_VQA = dict(
    data="LLaVA-Med test.json or HuatuoGPT-Vision medical_multimodel_evaluation_data.json",
    ground_truth="LLaVA-Med test.json or HuatuoGPT-Vision medical_multimodel_evaluation_data.json",
    task="longllava.eval.runner:vqa_task", score_files="longllava.eval.scorers:score_vqa_files",
    max_new_tokens={"llava-med": 1024, "multiple-choice": 256}, protocols=VQA_PROTOCOLS,
)

BENCHMARKS: dict[str, Benchmark] = {
    "vqa-rad": Benchmark("vqa-rad", **_VQA),
    "pathvqa": Benchmark("pathvqa", **_VQA),
    "ct-rate": Benchmark(
        "ct-rate",
        data="CT-RATE root folder (dataset/, multi_abnormality_labels/, metadata/, radiology_text_reports/)",
        ground_truth="valid_predicted_labels.csv",
        task="longllava.eval.runner:ct_rate_task", score_files="longllava.eval.scorers:score_ct_rate_files",
        max_new_tokens={"ct-rate-yes-no": 32}, volumes=True),
    "fit-rsfg": Benchmark(
        "fit-rsfg",
        data="FIT-RSFG-Bench test_FITRS_vqa_eval.jsonl",
        ground_truth="test_FITRS_vqa_eval.jsonl",
        task="longllava.eval.runner:fit_rsfg_task", score_files="longllava.eval.scorers:score_fit_rsfg_files",
        max_new_tokens={"skysensegpt-exact-match": 256}),
    # the answer is one letter (Video-MME) or a word or phrase (CDVQA): lmms-eval's Video-MME length
    "video-mme": Benchmark(
        "video-mme",
        data="Video-MME JSON (results layout or annotation rows); videos as <videoID>.mp4 in --image-root",
        ground_truth="Video-MME JSON with the gold letters",
        task="longllava.eval.runner:video_mme_task", score_files="longllava.eval.scorers:score_video_mme_files",
        max_new_tokens={"video-mme-letter": 16}, videos=True),
    "cdvqa": Benchmark(
        "cdvqa",
        data="CDVQA <split>_questions.json (with <split>_answers.json and _images.json beside it); image "
        "pairs in --image-root/im1 and im2",
        ground_truth="CDVQA <split>_questions.json",
        task="longllava.eval.runner:cdvqa_task", score_files="longllava.eval.scorers:score_cdvqa_files",
        max_new_tokens={"cdvqa-oa-aa": 16}),
}
