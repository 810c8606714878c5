"""Video-MME scored as its ``evaluation/eval_your_results.py``, with its prompt.

Ground truth, either layout (a JSON list):

- the official results layout (``output_test_template.json``): one object per video with
  ``video_id``, ``duration_category`` (short / medium / long), ``video_category``,
  ``video_subcategory`` and ``questions`` ``[{question_id, task_type, question, choices (or
  options), answer}]``;
- the released annotation rows (the ``videomme`` parquet exported to JSON): one object per question
  with ``video_id``, ``duration``, ``domain``, ``sub_category``, ``videoID``, ``question_id``,
  ``task_type``, ``question``, ``options``, ``answer``.

The video file is ``<video root>/<videoID or video_id>.mp4``. The prompt is Video-MME's
(frames, then :data:`INSTRUCTION`, the question, the ``A. ...`` options and ``The best answer is:``).

Scoring, per ``eval_your_results.py``: the response is stripped, the answer prefixes are removed
(the official list, including its two pairs fused by missing commas: ``"The best option isThe
correct option is"`` and ``"Best answer:Best option:"``, so ``"The best option is"`` alone is not
removed), a response of more than 10 words without any of A-D gives no letter, else the first
A / B / C / D anywhere in it is the letter. A response without a letter is not *answered* and
leaves the denominator: accuracy = correct / answered, per duration, video category, task type and
overall (micro over answered questions).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from longllava.errors import InputError
from longllava.eval.files import load_json_list
from longllava.eval.predictions import Prediction, match_predictions
from longllava.eval.results import ItemScore, ScoreResult

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video. "
               "Respond with only the letter (A, B, C, or D) of the correct option.")
# The official list, evaluated as Python does: two pairs are fused by missing commas.
ANSWER_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                   "The best option is" "The correct option is", "Best answer:" "Best option:")
DURATIONS = ("short", "medium", "long")


@dataclass(frozen=True)
class VideoMmeQuestion:
    question_id: str
    video_id: str
    video_file: str  # file stem of the video: videoID when given, else video_id
    duration: str
    category: str
    task_type: str
    question: str
    options: tuple[str, ...]  # "A. ...", "B. ...", ...
    answer: str  # the gold letter


def video_mme_prompt(question: VideoMmeQuestion) -> str:
    return "\n".join([INSTRUCTION, question.question, *question.options, "The best answer is:"])


def extract_letter(response: str) -> str:
    """The option letter Video-MME reads from a response, or "" when there is none."""
    text = response.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    if len(text.split()) > 10 and not re.search("[ABCD]", text):
        return ""
    match = re.search(r"[ABCD]", text)
    return "" if match is None else match[0]


def _field(record: dict, names: Sequence[str], where: str) -> str:
    for name in names:
        if record.get(name) not in (None, ""):
            return str(record[name])
    raise InputError(f"{where}: missing field {' / '.join(repr(n) for n in names)} (Video-MME layout)")


def _question(row: dict, video: dict, where: str) -> VideoMmeQuestion:
    options = row.get("choices", row.get("options"))
    if not isinstance(options, (list, tuple)) or not options:
        raise InputError(f"{where}: field 'choices' / 'options' must be a list like ['A. ...', 'B. ...']")
    answer = _field(row, ("answer",), where)
    if answer not in "ABCD" or len(answer) != 1:
        raise InputError(f"{where}: answer must be one letter A-D, got {answer!r}")
    duration = _field(video, ("duration_category", "duration"), where)
    if duration not in DURATIONS:
        raise InputError(f"{where}: duration must be one of {', '.join(DURATIONS)}, got {duration!r}")
    video_id = _field(video, ("video_id",), where)
    return VideoMmeQuestion(
        question_id=_field(row, ("question_id",), where), video_id=video_id,
        video_file=str(video.get("videoID") or video_id), duration=duration,
        category=_field(video, ("video_category", "domain"), where), task_type=_field(row, ("task_type",), where),
        question=_field(row, ("question",), where), options=tuple(str(o) for o in options), answer=answer)


def read_video_mme(path: str | Path) -> list[VideoMmeQuestion]:
    """The questions of a Video-MME JSON file (either layout), in file order."""
    records = load_json_list(path, "Video-MME videos (with 'questions') or question rows")
    questions, seen = [], set()
    for index, record in enumerate(records):
        where = f"{path}: item {index}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object")
        rows = record["questions"] if "questions" in record else [record]
        for row in rows:
            question = _question(row, record, where)
            if question.question_id in seen:
                raise InputError(f"{where}: question_id {question.question_id!r} occurs twice")
            seen.add(question.question_id)
            questions.append(question)
    return questions


def score_video_mme(questions: Sequence[VideoMmeQuestion], predictions: Sequence[Prediction]) -> ScoreResult:
    """Accuracy over answered questions (a letter was found), overall and per duration / category / task."""
    matched, _ = match_predictions(predictions, [q.question_id for q in questions])
    items, tables = [], {"duration": {}, "category": {}, "task_type": {}}
    for question in questions:
        response = matched[question.question_id].text
        letter = extract_letter(response)
        correct = letter == question.answer
        items.append(ItemScore(question.question_id, question.duration, correct, float(correct), response,
                               question.answer, detail=f"letter {letter!r}" if letter else "no letter: not answered"))
        if not letter:
            continue
        for key, value in (("duration", question.duration), ("category", question.category),
                           ("task_type", question.task_type)):
            hits, total = tables[key].get(value, (0, 0))
            tables[key][value] = (hits + correct, total + 1)

    def table(counts: dict) -> dict:
        return {name: {"answered": total, "correct": hits, "accuracy": 100.0 * hits / total}
                for name, (hits, total) in sorted(counts.items())}

    answered = sum(total for _, total in tables["duration"].values())
    n_correct = sum(hits for hits, _ in tables["duration"].values())
    per_duration = {name: table(tables["duration"])[name] for name in DURATIONS if name in tables["duration"]}
    metrics = {"accuracy": 100.0 * n_correct / answered if answered else 0.0,
               **{f"accuracy_{name}": row["accuracy"] for name, row in per_duration.items()},
               "per_category": table(tables["category"]), "per_task_type": table(tables["task_type"])}
    counts = {"questions": len(items), "answered": answered, "correct": n_correct,
              "not_answered": len(items) - answered}
    notes = ["eval_your_results.py: the first A-D after removing the answer prefixes; a response without a "
             "letter is not answered and leaves the denominator (accuracy = correct / answered)"]
    return ScoreResult(benchmark="video-mme", protocol="video-mme-letter", metrics=metrics, counts=counts,
                       items=items, per_category=per_duration, category_label="duration",
                       chart_metric="accuracy", notes=notes)
