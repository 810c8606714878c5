"""VQA-RAD / PathVQA scored as LLaVA-Med v1.0.0 does (``llava/eval/run_eval.py`` + ``eval_metrics``).

Ground truth: LLaVA-Med's ``test.json``, a list of ``{id, image, conversations: [{from: human, value:
question}, {from: gpt, value: answer}], answer_type}`` (the key is misspelled ``conversatons`` in
some releases). The answer is ``conversations[1]["value"]``, as in the official script.

Both answers are lower-cased and go through :func:`~longllava.eval.normalize.normalize_word`. Then

- closed questions (``CLOSED``, PathVQA's ``yes/no``): a hit needs ``"yes"`` or ``"no"`` to occur in
  the prediction and the ground truth to occur in it, both as *substrings*, as published ("no" is
  found inside "nodule", "yes" inside "eyes"). ``strict=True`` asks for whole words instead: ``yes``
  or ``no`` as a token and the ground-truth tokens as a contiguous token run.
- open questions (``OPEN``, PathVQA's ``other``/``number``): the official metric functions normalise
  their inputs a second time, then compare whitespace unigrams: recall tp/(tp+fn) where tp counts the
  *prediction's* occurrences of shared words, precision tp/(tp+fp), F1, and an "exact match" that is
  (distinct ground-truth words found) / (prediction words). All are 0 for an empty prediction or when
  no word is shared. Values are averaged over open questions.

``closed_accuracy`` divides by every closed question. v1.0.0's ``run_eval.py`` appends *nothing* for a
wrong answer that contains "yes"/"no" (its ``else: append(0)`` belongs to the yes/no test), so its
printed "yes/no accuracy" divides only by hits plus answers without yes/no; that figure is reported
as ``closed_accuracy_run_eval_py`` with the number of dropped answers in the counts. The candidate-file
"open accuracy" and BLEU rows are not computed (no published number here rests on them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from longllava.errors import InputError
from longllava.eval.files import load_json_list
from longllava.eval.normalize import normalize_word, word_counts
from longllava.eval.predictions import Prediction, match_predictions
from longllava.eval.results import ItemScore, ScoreResult

# answer_type values run_eval.py (OPEN/CLOSED) and run_eval_pvqa.py (other/number, yes/no) accept
ANSWER_TYPES = {"OPEN": "OPEN", "other": "OPEN", "number": "OPEN", "CLOSED": "CLOSED",
                "yes/no": "CLOSED"}


@dataclass(frozen=True)
class LlavaMedQuestion:
    id: str
    question: str
    answer: str
    answer_type: str  # "OPEN" | "CLOSED"


def is_llava_med_ground_truth(records: list) -> bool:
    first = records[0] if records else None
    return isinstance(first, dict) and ("conversations" in first or "conversatons" in first)


def read_llava_med_ground_truth(path: str | Path) -> list[LlavaMedQuestion]:
    """Questions of a LLaVA-Med ``test.json`` (VQA-RAD, PathVQA), in file order."""
    path = Path(path)
    records = load_json_list(path, "LLaVA-Med test.json records with 'conversations'")
    questions: list[LlavaMedQuestion] = []
    seen: set[str] = set()
    for index, record in enumerate(records):
        where = f"{path} record {index}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object")
        turns = record.get("conversations", record.get("conversatons"))
        if "id" not in record:
            raise InputError(f"{where}: missing field 'id'")
        if not isinstance(turns, list) or len(turns) < 2 or not all(
                isinstance(turn, dict) and isinstance(turn.get("value"), str) for turn in turns[:2]):
            raise InputError(f"{where}: field 'conversations' must hold a question turn and an answer "
                             f"turn with string 'value's (LLaVA-Med test.json layout)")
        answer_type = record.get("answer_type")
        if answer_type not in ANSWER_TYPES:
            raise InputError(f"{where}: field 'answer_type' is {json.dumps(answer_type)}; expected one "
                             f"of {', '.join(ANSWER_TYPES)}")
        question_id = str(record["id"])
        if question_id in seen:
            raise InputError(f"{where}: id {question_id!r} occurs twice in the ground truth")
        seen.add(question_id)
        questions.append(LlavaMedQuestion(question_id, turns[0]["value"], turns[1]["value"],
                                          ANSWER_TYPES[answer_type]))
    return questions


def closed_hit(prediction: str, ground_truth: str, *, strict: bool = False) -> tuple[bool, bool]:
    """(hit, mentions yes/no) for normalised strings, with substring or whole-word semantics."""
    if not strict:
        mentions = "yes" in prediction or "no" in prediction
        return mentions and ground_truth in prediction, mentions
    tokens, wanted = prediction.split(), ground_truth.split()
    mentions = "yes" in tokens or "no" in tokens
    runs = (tokens[start:start + len(wanted)] for start in range(len(tokens) - len(wanted) + 1))
    return mentions and any(run == wanted for run in runs), mentions


def open_scores(prediction: str, ground_truth: str) -> dict[str, float]:
    """Recall, precision, F1 and "exact match" of normalised strings, as LLaVA-Med's metric functions.

    Those functions normalise their inputs once more (the period limit makes that matter).
    """
    candidate = word_counts(normalize_word(prediction))
    reference = word_counts(normalize_word(ground_truth))
    shared = candidate.keys() & reference.keys()
    total = sum(candidate.values())
    exact = len(shared) / total if total else 0.0
    tp = sum(candidate[word] for word in shared)
    fp = sum(count for word, count in candidate.items() if word not in reference)
    fn = sum(count for word, count in reference.items() if word not in candidate)
    if not candidate or not reference or tp == 0:
        return {"recall": 0.0, "precision": 0.0, "f1": 0.0, "exact_match": exact}
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return {"recall": recall, "precision": precision,
            "f1": 2 * precision * recall / (precision + recall), "exact_match": exact}


def _mean_percent(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def score_llava_med_vqa(questions: Sequence[LlavaMedQuestion], predictions: Sequence[Prediction], *,
                        benchmark: str, strict: bool = False) -> ScoreResult:
    """Closed accuracy, open recall (+ exact match, F1, precision) under the LLaVA-Med protocol."""
    matched, _ = match_predictions(predictions, [question.id for question in questions])
    items: list[ItemScore] = []
    closed_hits = closed_without_yes_no = closed_wrong_with_yes_no = empty = 0
    open_values: dict[str, list[float]] = {"recall": [], "precision": [], "f1": [], "exact_match": []}
    for question in questions:
        raw = matched[question.id].text
        empty += not raw.strip()
        prediction, truth = normalize_word(raw.lower()), normalize_word(question.answer.lower())
        if question.answer_type == "CLOSED":
            hit, mentions = closed_hit(prediction, truth, strict=strict)
            closed_hits += hit
            closed_without_yes_no += not mentions
            closed_wrong_with_yes_no += mentions and not hit
            detail = "" if mentions else "no yes/no in prediction"
            items.append(ItemScore(question.id, "closed", hit, float(hit), raw, question.answer, detail))
        else:
            scores = open_scores(prediction, truth)
            for name, value in scores.items():
                open_values[name].append(value)
            items.append(ItemScore(question.id, "open", scores["recall"] >= 1.0, scores["recall"],
                                   raw, question.answer, f"precision {scores['precision']:.3f}"))
    n_closed = sum(question.answer_type == "CLOSED" for question in questions)
    n_open = len(questions) - n_closed
    closed_accuracy = 100.0 * closed_hits / n_closed if n_closed else None
    metrics: dict = {"closed_accuracy": closed_accuracy,
                     "open_recall": _mean_percent(open_values["recall"]),
                     "exact_match": _mean_percent(open_values["exact_match"]),
                     "f1": _mean_percent(open_values["f1"]),
                     "precision": _mean_percent(open_values["precision"])}
    counts = {"questions": len(questions), "closed": n_closed, "open": n_open,
              "closed_hits": closed_hits, "closed_without_yes_no": closed_without_yes_no,
              "empty_predictions": empty}
    notes = []
    if strict:
        notes.append("strict matching: closed hits need 'yes' or 'no' as a whole word and the "
                     "ground-truth words as a contiguous word run (published numbers use substrings)")
    else:
        notes.append("substring matching as published: 'no' matches inside 'nodule'")
        counted = closed_hits + closed_without_yes_no
        metrics["closed_accuracy_run_eval_py"] = 100.0 * closed_hits / counted if counted else 0.0
        counts["closed_dropped_by_run_eval_py"] = closed_wrong_with_yes_no
        notes.append("closed_accuracy_run_eval_py reproduces v1.0.0 run_eval.py's printed yes/no "
                     "accuracy, which leaves wrong answers containing yes/no out of its denominator")
    if not n_open:
        notes.append("no open questions: open metrics are n/a (run_eval.py divides by zero)")
    per_category = {"closed": {"n": n_closed, "score": closed_accuracy},
                    "open": {"n": n_open, "score": metrics["open_recall"],
                             "exact_match": metrics["exact_match"], "f1": metrics["f1"],
                             "precision": metrics["precision"]}}
    notes.append("per-category score: closed = accuracy, open = token recall")
    return ScoreResult(benchmark=benchmark, protocol="llava-med-strict" if strict else "llava-med",
                       metrics=metrics, counts=counts, items=items, per_category=per_category,
                       category_label="answer type", chart_metric="score", notes=notes)
