"""Reading prediction files, whoever wrote them, and matching them to ground-truth ids.

Accepted layouts (detected from the content, not the file name):

- JSON Lines, one object per line (our runner's ``predictions.jsonl``, LLaVA-Med's answer file
  ``{question_id, prompt, text, answer_id, model_id, metadata}``, SkySenseGPT's answers file
  ``{question_id, image_id, answer, category, ground_truth}``);
- a JSON list of objects (HuatuoGPT-Vision's ``eval.py`` output: the evaluation records plus
  ``test_id`` (1-based position in the data file) and ``model_output``).

The id is ``question_id``, else ``id``, else ``test_id``; in HuatuoGPT-Vision's output (records with
``model_output``) it is ``test_id``. The prediction text is ``model_output``, else ``text``, else
``answer`` — in HuatuoGPT-Vision's output ``answer`` is the *gold* option, which is why
``model_output`` wins. Ids compare as strings, so ``7`` and ``"7"`` are the same id.

CT-RATE predictions may also be a CSV in the labels file's layout; see :mod:`longllava.eval.ct_rate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longllava.errors import InputError
from longllava.eval.files import json_lines

ID_KEYS = ("question_id", "id", "test_id")
TEXT_KEYS = ("model_output", "text", "answer")


@dataclass(frozen=True)
class Prediction:
    id: str
    text: str
    source: str  # "<file>:<line>" or "<file>:item <index>", for error messages
    fields: dict[str, Any] = field(default_factory=dict, compare=False)  # the raw record


def prediction_from_record(record: Any, source: str) -> Prediction:
    """One prediction from one decoded JSON object (shared by the file reader and the runner)."""
    if not isinstance(record, dict):
        raise InputError(f"{source}: expected a JSON object with an id and a prediction text, "
                         f"got {type(record).__name__}")
    id_keys = ("test_id",) if "model_output" in record else ID_KEYS
    id_key = next((key for key in id_keys if key in record), None)
    text_key = next((key for key in TEXT_KEYS if key in record), None)
    if id_key is None or record[id_key] is None:
        raise InputError(f"{source}: no id; give each prediction one of the fields "
                         f"{', '.join(id_keys)}")
    if text_key is None:
        raise InputError(f"{source}: no prediction text; give each prediction one of the fields "
                         f"{', '.join(TEXT_KEYS)}")
    text = record[text_key]
    if not isinstance(text, str):
        raise InputError(f"{source}: field '{text_key}' must be a string (write \"\" for an empty "
                         f"answer), got {json.dumps(text)}")
    return Prediction(id=str(record[id_key]), text=text, source=source, fields=record)


def read_predictions(path: str | Path) -> list[Prediction]:
    """All predictions of a JSONL or JSON-list file, in file order (duplicates kept)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: prediction file not found")
    content = path.read_text(encoding="utf-8")
    if not content.strip():
        raise InputError(f"{path}: prediction file is empty")
    if content.lstrip().startswith("["):
        try:
            records = json.loads(content)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON ({error}); expected a JSON list of "
                             f"predictions or JSON Lines") from None
        if not isinstance(records, list):
            raise InputError(f"{path}: expected a JSON list of predictions, got "
                             f"{type(records).__name__}")
        return [prediction_from_record(record, f"{path}:item {index}")
                for index, record in enumerate(records)]
    lines = json_lines(content.splitlines(), path,
                       "prediction files are JSON Lines (one object per line) or one JSON list")
    return [prediction_from_record(record, f"{path}:{number}") for number, record in lines]


def _listing(ids: Iterable[str], limit: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def match_predictions(predictions: Sequence[Prediction], expected_ids: Sequence[str], *,
                      keep_first_duplicate: bool = False,
                      ignored_ids: Iterable[str] = ()) -> tuple[dict[str, Prediction], int]:
    """Map each expected id to its prediction; return the map and the number of duplicates dropped.

    Unknown ids (neither expected nor in ``ignored_ids``) and missing ids raise :class:`InputError`;
    duplicates raise unless ``keep_first_duplicate`` (the HuatuoGPT-Vision scorer keeps the first
    record of a ``test_id``: multi-GPU runs pad the last batch with repeats).
    """
    expected = set(expected_ids)
    ignored = set(ignored_ids)
    matched: dict[str, Prediction] = {}
    duplicates: list[Prediction] = []
    unknown: list[str] = []
    for prediction in predictions:
        if prediction.id not in expected:
            if prediction.id not in ignored:
                unknown.append(prediction.id)
        elif prediction.id in matched:
            duplicates.append(prediction)
        else:
            matched[prediction.id] = prediction
    where = predictions[0].source.rsplit(":", 1)[0] if predictions else "prediction file"
    if unknown:
        raise InputError(f"{where}: {len(unknown)} prediction(s) "
                         f"for ids not in the ground truth: {_listing(unknown)}; check that the "
                         f"prediction and ground-truth files belong to the same benchmark and split")
    if duplicates and not keep_first_duplicate:
        first = duplicates[0]
        raise InputError(f"{first.source}: id {first.id!r} predicted more than once "
                         f"({len(duplicates)} duplicate record(s) in all); keep one prediction per id")
    missing = [i for i in expected_ids if i not in matched]
    if missing:
        raise InputError(f"{where}: no prediction for {len(missing)} of {len(expected_ids)} "
                         f"ground-truth ids: {_listing(missing)}; finish the run (the runner resumes) "
                         f"or score against a ground truth restricted to the predicted ids")
    return matched, len(duplicates)
