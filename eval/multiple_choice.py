"""VQA-RAD / PathVQA as multiple choice, scored as HuatuoGPT-Vision's ``scorer.py::score_mix_llava``.

This protocol is behind LongLLaVA-Med's VQA-RAD 68.5 / PathVQA 55.0 and HuatuoGPT-Vision's 63.8 /
59.9. Ground truth: ``medical_multimodel_evaluation_data.json``, a list of ``{question, options
(list, or its Python literal as a string), answer (the option text), image, dataset,
question_type?, subset?}``. HuatuoGPT-Vision's ``eval.py`` numbers the records 1, 2, ... in file
order (``test_id``); that number is the id predictions must carry.

Scoring, per ``score_mix_llava``:

- records with ``question_type == "open"`` or no options are skipped (and counted); repeated ids in
  the predictions (multi-GPU padding) count once, the first one;
- the gold option becomes its letter A, B, ...; a gold answer ``"?"`` is always wrong;
- the prediction becomes a letter by a cascade: (1) the first standalone letter a-n / A-N (preceded
  by the start, a non-word character, 是 or 为, followed by a non-word character or the end, and not
  an article "a " / "A "); (2) else the option whose lower-cased text occurs last in the lower-cased
  output (on a tie the earlier option); (3) else the option most similar to the output by
  ``difflib.SequenceMatcher`` ratio (on a tie the later option);
- the letter must equal the gold letter exactly, so a lower-case letter ("b") is always wrong, and
  so is "I" in "I think ...".

The official scorer hands steps (2) and (3) the whole record instead of the option map and crashes
(AssertionError) on any output without a standalone letter. Where it runs, our numbers are its
numbers; where it would crash we apply the cascade as documented, and count those items as
``official_scorer_would_crash``.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from longllava.errors import InputError
from longllava.eval.files import load_json_list
from longllava.eval.predictions import Prediction, match_predictions
from longllava.eval.results import ItemScore, ScoreResult

OPTION_LETTERS = "ABCDEFGHIJKLMN"
# dataset field of the evaluation file, compared lower-case without punctuation
BENCHMARK_DATASETS = {"vqa-rad": "vqarad", "pathvqa": "pathvqa"}

_STANDALONE_LETTER = re.compile(r"(?:^|(?<=\W)|(?<=[是为]))(?![aA] )([a-nA-N])(?=\W|$)")


@dataclass(frozen=True)
class ChoiceQuestion:
    test_id: str  # 1-based position in the evaluation file
    question: str
    options: tuple[str, ...]
    answer: str
    dataset: str
    question_type: str | None = None
    subset: str | None = None


def is_multiple_choice_ground_truth(records: list) -> bool:
    first = records[0] if records else None
    return isinstance(first, dict) and "options" in first


def _options(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip() else []
        except (ValueError, SyntaxError):
            raise InputError(f"{where}: field 'options' is a string that is not a Python list "
                             f"literal: {value[:80]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{where}: field 'options' must be a list of option texts")
    return tuple(str(option) for option in value)


def read_multiple_choice_ground_truth(path) -> list[ChoiceQuestion]:
    """All records of a HuatuoGPT-Vision evaluation file, numbered 1, 2, ... as its eval.py does."""
    records = load_json_list(path, "HuatuoGPT-Vision evaluation records with 'options'")
    questions = []
    for index, record in enumerate(records):
        where = f"{path} record {index}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object")
        for name in ("question", "options", "answer", "dataset"):
            if name not in record:
                raise InputError(f"{where}: missing field '{name}' (HuatuoGPT-Vision evaluation "
                                 f"layout: question, options, answer, image, dataset)")
        if not isinstance(record["answer"], str) or not isinstance(record["dataset"], str):
            raise InputError(f"{where}: fields 'answer' and 'dataset' must be strings")
        questions.append(ChoiceQuestion(
            test_id=str(index + 1), question=str(record["question"]),
            options=_options(record["options"], where), answer=record["answer"],
            dataset=record["dataset"], question_type=record.get("question_type"),
            subset=record.get("subset") or None))
    return questions


def extract_choice(output: str, options: Sequence[str]) -> tuple[str, str]:
    """(letter, how) read from a model output: ``how`` is "letter", "option text" or "similarity"."""
    match = _STANDALONE_LETTER.search(output)
    if match:
        return match.group(1), "letter"
    lowered = output.lower()
    found = [(lowered.rindex(option.lower()), -number) for number, option in enumerate(options)
             if option.lower() in lowered]
    if found:
        return OPTION_LETTERS[-max(found)[1]], "option text"
    ratios = [difflib.SequenceMatcher(None, option.lower(), lowered).ratio() for option in options]
    best = max(number for number, ratio in enumerate(ratios) if ratio == max(ratios))
    return OPTION_LETTERS[best], "similarity"


def _dataset_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def score_multiple_choice(questions: Sequence[ChoiceQuestion], predictions: Sequence[Prediction], *,
                          benchmark: str) -> ScoreResult:
    """Accuracy (overall and per dataset / subset) of ``benchmark``'s records in the evaluation file."""
    wanted = BENCHMARK_DATASETS.get(benchmark)
    if wanted is None:
        raise InputError(f"the multiple-choice protocol covers {', '.join(BENCHMARK_DATASETS)}, "
                         f"not {benchmark!r}")
    selected = [q for q in questions if _dataset_key(q.dataset) == wanted]
    if not selected:
        found = sorted({q.dataset for q in questions})
        raise InputError(f"the ground truth holds no {benchmark} records (datasets found: "
                         f"{', '.join(found)}); pass the evaluation file that contains them")
    scored = [q for q in selected if q.question_type != "open" and q.options]
    scored_ids = {q.test_id for q in scored}
    ignored = [q.test_id for q in questions if q.test_id not in scored_ids]
    matched, duplicates = match_predictions(predictions, [q.test_id for q in scored],
                                            keep_first_duplicate=True, ignored_ids=ignored)
    steps = {"letter": 0, "option text": 0, "similarity": 0}
    lowercase = unanswerable = empty = 0
    items: list[ItemScore] = []
    table: dict[str, list[int]] = {}
    for question in scored:
        prediction = matched[question.test_id]
        stated = prediction.fields.get("question")
        if isinstance(stated, str) and stated != question.question:
            raise InputError(f"{prediction.source}: question of test_id {question.test_id} differs "
                             f"from the ground truth's; the files do not belong together")
        if len(question.options) > len(OPTION_LETTERS):
            raise InputError(f"ground-truth record {int(question.test_id) - 1}: more than "
                             f"{len(OPTION_LETTERS)} options; the letter cascade stops at N")
        if question.answer == "?":
            gold = "?"
            unanswerable += 1
        elif question.answer not in question.options:
            raise InputError(f"ground-truth record {int(question.test_id) - 1}: answer "
                             f"{question.answer!r} is not one of its options {list(question.options)}")
        else:
            gold = OPTION_LETTERS[question.options.index(question.answer)]
        letter, how = extract_choice(prediction.text, question.options)
        steps[how] += 1
        lowercase += letter.islower()
        empty += not prediction.text.strip()
        correct = letter == gold
        items.append(ItemScore(question.test_id, question.dataset, correct, float(correct),
                               prediction.text, gold, f"{how}: {letter}"))
        groups = [question.dataset] + ([f"{question.dataset}_{question.subset}"]
                                       if question.subset else [])
        for group in groups:
            table.setdefault(group, [0, 0])
            table[group][0] += correct
            table[group][1] += 1
    per_dataset = {name: {"n": total, "correct": hits, "accuracy": 100.0 * hits / total}
                   for name, (hits, total) in table.items()}
    n_correct = sum(item.correct for item in items)
    metrics = {"accuracy": 100.0 * n_correct / len(items) if items else None,
               "per_dataset": per_dataset}
    counts = {"records": len(selected), "scored": len(items), "correct": n_correct,
              "skipped_open": sum(q.question_type == "open" for q in selected),
              "skipped_no_options": sum(q.question_type != "open" and not q.options
                                        for q in selected),
              "duplicate_predictions": duplicates, "letter_answers": steps["letter"],
              "lowercase_letter_answers": lowercase, "option_text_fallback": steps["option text"],
              "similarity_fallback": steps["similarity"],
              "official_scorer_would_crash": steps["option text"] + steps["similarity"],
              "gold_unanswerable": unanswerable, "empty_predictions": empty}
    notes = ["HuatuoGPT-Vision score_mix_llava letter cascade; a lower-case letter never matches"]
    if counts["official_scorer_would_crash"]:
        notes.append(f"{counts['official_scorer_would_crash']} output(s) have no standalone letter: "
                     f"the official scorer would crash on them; they were read by the documented "
                     f"option-text / similarity fallback")
    return ScoreResult(benchmark=benchmark, protocol="multiple-choice", metrics=metrics,
                       counts=counts, items=items, per_category=per_dataset,
                       category_label="dataset", chart_metric="accuracy", notes=notes)
