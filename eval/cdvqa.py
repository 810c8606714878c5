"""CDVQA (change-detection VQA, Yuan et al. 2022) read from its release files and scored as in its paper.

Ground truth: the release's RSVQA-style triple for one split, e.g. ``Test_questions.json``
(``{"questions": [{id, img_id, type, question, answers_ids, active}]}``), ``Test_answers.json``
(``{"answers": [{id, question_id, answer, active}]}``) and ``Test_images.json``
(``{"images": [{id, file_name, questions_ids, active}]}``), found next to each other by their split
prefix. Inactive records are left out. Each question is about one image pair: the pre-change image
``<image root>/im1/<file_name>`` and the post-change image ``<image root>/im2/<file_name>`` (the
SECOND dataset's layout, on which CDVQA is built); the pair is sent as one ``<vid>`` stack of two
frames in time order, then the question and :data:`INSTRUCTION`.

Scoring as the paper's tables: accuracy per question type, the overall accuracy (OA, over all
questions) and the average accuracy (AA, the mean of the per-type accuracies). CDVQA's models are
classifiers over its answer set; a generated answer is read by normalising both sides (lower case,
outer whitespace and one trailing period removed, spaces and underscores equal, so ``NVG_surface``
matches ``nvg surface``) and comparing them exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from longllava.errors import InputError
from longllava.eval.predictions import Prediction, match_predictions
from longllava.eval.results import ItemScore, ScoreResult

INSTRUCTION = "Answer the question using a single word or phrase."
_SUFFIX = "_questions.json"


@dataclass(frozen=True)
class CdvqaQuestion:
    question_id: str
    question: str
    type: str
    answer: str
    file_name: str  # the pair's file name in im1/ (pre) and im2/ (post)


def cdvqa_prompt(question: CdvqaQuestion) -> str:
    return f"{question.question}\n{INSTRUCTION}"


def normalise_answer(text: str) -> str:
    text = text.strip().lower()
    text = text[:-1] if text.endswith(".") else text
    return text.strip().replace("_", " ")


def _records(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path}: not found; CDVQA needs <split>_questions.json, <split>_answers.json and "
                         "<split>_images.json side by side")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise InputError(f"{path}: expected an object with a '{key}' list (CDVQA / RSVQA layout)")
    return [record for record in data[key] if isinstance(record, dict) and record.get("active", True)]


def read_cdvqa(questions_path: str | Path) -> list[CdvqaQuestion]:
    """The active questions of one split, in file order, with their answers and image pairs."""
    questions_path = Path(questions_path)
    if not questions_path.name.endswith(_SUFFIX):
        raise InputError(f"{questions_path}: expected a CDVQA <split>_questions.json (e.g. Test_questions.json)")
    prefix = questions_path.name[: -len(_SUFFIX)]
    answers = {str(a.get("question_id")): a for a in _records(questions_path.with_name(f"{prefix}_answers.json"), "answers")}
    images = {str(i.get("id")): i for i in _records(questions_path.with_name(f"{prefix}_images.json"), "images")}
    out = []
    for record in _records(questions_path, "questions"):
        question_id = str(record.get("id"))
        where = f"{questions_path}: question {question_id}"
        for name in ("img_id", "type", "question"):
            if record.get(name) in (None, ""):
                raise InputError(f"{where}: missing field '{name}'")
        answer = answers.get(question_id)
        if answer is None or not isinstance(answer.get("answer"), str):
            raise InputError(f"{where}: no active answer with this question_id in {prefix}_answers.json")
        image = images.get(str(record["img_id"]))
        if image is None or not image.get("file_name"):
            raise InputError(f"{where}: img_id {record['img_id']} has no active entry with a file_name in "
                             f"{prefix}_images.json")
        out.append(CdvqaQuestion(question_id, str(record["question"]), str(record["type"]), answer["answer"],
                                 str(image["file_name"])))
    if not out:
        raise InputError(f"{questions_path}: no active questions")
    return out


def cdvqa_image_pair(question: CdvqaQuestion, image_root: str | Path) -> tuple[Path, Path]:
    """(pre-change, post-change) image paths of a question."""
    root = Path(image_root)
    return root / "im1" / question.file_name, root / "im2" / question.file_name


def score_cdvqa(questions: Sequence[CdvqaQuestion], predictions: Sequence[Prediction]) -> ScoreResult:
    """Accuracy per question type, OA (all questions) and AA (mean over types)."""
    matched, _ = match_predictions(predictions, [q.question_id for q in questions])
    items, table = [], {}
    for question in questions:
        text = matched[question.question_id].text
        correct = normalise_answer(text) == normalise_answer(question.answer)
        items.append(ItemScore(question.question_id, question.type, correct, float(correct), text, question.answer))
        hits, total = table.get(question.type, (0, 0))
        table[question.type] = (hits + correct, total + 1)
    per_type = {name: {"n": total, "correct": hits, "accuracy": 100.0 * hits / total}
                for name, (hits, total) in sorted(table.items())}
    n_correct = sum(item.correct for item in items)
    metrics = {"overall_accuracy": 100.0 * n_correct / len(items),
               "average_accuracy": sum(row["accuracy"] for row in per_type.values()) / len(per_type),
               "per_type": per_type}
    counts = {"questions": len(items), "correct": n_correct, "types": len(per_type)}
    notes = ["exact match after normalising both sides (lower case, outer whitespace and one trailing period "
             "removed, '_' read as ' '); OA over all questions, AA the mean of the per-type accuracies"]
    return ScoreResult(benchmark="cdvqa", protocol="cdvqa-oa-aa", metrics=metrics, counts=counts, items=items,
                       per_category=per_type, category_label="question type", chart_metric="accuracy", notes=notes)
