"""FIT-RSFG-VQA scored as SkySenseGPT's ``Eval_scripts/batch_geochat_vqa.py::evaluation_metrics``.

Ground truth: ``FIT-RSFG/FIT-RSFG-Bench/test_FITRS_vqa_eval.jsonl``, one ``{question_id, image, text,
category, ground_truth}`` per line. Predictions: SkySenseGPT's answers file (``{question_id,
image_id, answer, category, ground_truth}``) or our runner's JSONL.

A prediction is correct when ``ground_truth.lower() == answer.strip().lower()``; accuracy per
category (categories lower-cased, as the official scorer keys them) and overall over all questions
(micro). About the strip: SkySenseGPT's ``evaluation_metrics`` itself compares without stripping,
but its generation loop strips every answer before writing it, so its published numbers are
numbers on stripped answers. Stripping here gives exactly those numbers on its answers files and the
same pipeline's numbers on answers from anyone else; answers that had surrounding whitespace are
counted. The ground truth is not stripped (a ground truth with stray spaces never matches, as in
the original).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from longllava.errors import InputError
from longllava.eval.files import load_jsonl
from longllava.eval.predictions import Prediction, match_predictions
from longllava.eval.results import ItemScore, ScoreResult


@dataclass(frozen=True)
class FitRsfgQuestion:
    question_id: str
    question: str
    category: str
    ground_truth: str
    image: str = ""


def read_fit_rsfg_ground_truth(path: str | Path) -> list[FitRsfgQuestion]:
    """Questions of ``test_FITRS_vqa_eval.jsonl``, in file order."""
    questions, seen = [], set()
    for number, record in load_jsonl(path, "FIT-RSFG VQA records"):
        where = f"{path}:{number}"
        for name in ("question_id", "category", "ground_truth"):
            if name not in record or record[name] is None:
                raise InputError(f"{where}: missing field '{name}' (FIT-RSFG layout: question_id, "
                                 f"image, text, category, ground_truth)")
        if not isinstance(record["ground_truth"], str) or not isinstance(record["category"], str):
            raise InputError(f"{where}: fields 'ground_truth' and 'category' must be strings")
        question_id = str(record["question_id"])
        if question_id in seen:
            raise InputError(f"{where}: question_id {question_id!r} occurs twice in the ground truth")
        seen.add(question_id)
        questions.append(FitRsfgQuestion(question_id, str(record.get("text", "")),
                                          record["category"], record["ground_truth"],
                                          str(record.get("image", ""))))
    return questions


def score_fit_rsfg(questions: Sequence[FitRsfgQuestion],
                   predictions: Sequence[Prediction]) -> ScoreResult:
    """Exact-match accuracy per category and overall (micro)."""
    matched, _ = match_predictions(predictions, [q.question_id for q in questions])
    items, table, padded, empty = [], {}, 0, 0
    for question in questions:
        prediction = matched[question.question_id]
        stated = prediction.fields.get("ground_truth")
        if isinstance(stated, str) and stated != question.ground_truth:
            raise InputError(f"{prediction.source}: ground_truth of question_id "
                             f"{question.question_id!r} differs from the ground-truth file's; the "
                             f"files do not belong together")
        answer = prediction.text
        padded += answer != answer.strip()
        empty += not answer.strip()
        correct = question.ground_truth.lower() == answer.strip().lower()
        category = question.category.lower()
        items.append(ItemScore(question.question_id, category, correct, float(correct), answer,
                               question.ground_truth))
        table.setdefault(category, [0, 0])
        table[category][0] += correct
        table[category][1] += 1
    per_category = {name: {"n": total, "correct": hits, "accuracy": 100.0 * hits / total}
                    for name, (hits, total) in sorted(table.items())}
    n_correct = sum(item.correct for item in items)
    metrics = {"accuracy": 100.0 * n_correct / len(items), "per_category": per_category}
    counts = {"questions": len(items), "correct": n_correct, "categories": len(per_category),
              "answers_with_surrounding_whitespace": padded, "empty_predictions": empty}
    notes = ["exact match of ground_truth.lower() and answer.strip().lower(); SkySenseGPT strips at "
             "generation, so this reproduces its numbers on its own answers files"]
    return ScoreResult(benchmark="fit-rsfg", protocol="skysensegpt-exact-match", metrics=metrics,
                       counts=counts, items=items, per_category=per_category,
                       category_label="category", chart_metric="accuracy", notes=notes)
