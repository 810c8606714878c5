"""CT-RATE multi-abnormality classification, scored per abnormality and macro-averaged.

Ground truth: ``multi_abnormality_labels/valid_predicted_labels.csv`` (``VolumeName`` with its
``.nii.gz``, then the 18 abnormalities of :data:`CT_RATE_ABNORMALITIES`, 0/1). CT-CLIP's scripts call
the second column "Calcification"; that name is accepted as well. Volume names match with or without
``.nii.gz``.

Predictions, either

- a CSV in the labels file's layout, 0/1 (decisions) or values in [0, 1] (probabilities), or
- question-level answers (our runner's JSONL, see :mod:`longllava.eval.predictions`) whose id is
  :func:`ct_rate_question_id` (``"<VolumeName>::<abnormality>"``) or whose record carries ``volume``
  and ``abnormality`` fields; free text is read by :func:`yes_no_from_text`, and answers it cannot
  read are counted as ``unparseable`` and scored as "absent".

Per abnormality: accuracy, precision, recall and F1 of the positive class (scikit-learn, 0 where a
ratio is 0/0) and CT-CLIP's weighted F1; their macro means; and ``f1_of_means`` = 2PR/(P+R) of the
macro precision and recall — the convention behind the LongLLaVA paper's CT-CLIP row (P 30.4, R 73.8,
F1 43.0). With probabilities, each abnormality's decision threshold is CT-CLIP's
(``bootstrap_values.py::find_threshold``): among 100 values ``linspace(0, 1, 100)``, the one whose
decisions ``p > t`` minimise sqrt((1 - TPR)^2 + FPR^2) on the same set, the largest on ties; AUROC is
reported too. (CT-CLIP's bootstrap never resamples, so its "confidence intervals" are these values.)
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longllava.errors import InputError
from longllava.eval.predictions import Prediction
from longllava.eval.results import ItemScore, ScoreResult

CT_RATE_ABNORMALITIES = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
    "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
VOLUME_COLUMN = "VolumeName"
_NAMES = {name.lower(): name for name in CT_RATE_ABNORMALITIES} | {
    "calcification": "Arterial wall calcification"}  # CT-CLIP's name for column 1
CT_CLIP_THRESHOLDS = np.linspace(0.0, 1.0, 100)
QUESTION_ID_SEPARATOR = "::"


def ct_rate_question_id(volume: str, abnormality: str) -> str:
    """The prediction id of one (volume, abnormality) question: ``"<VolumeName>::<abnormality>"``."""
    return f"{volume}{QUESTION_ID_SEPARATOR}{abnormality}"


def abnormality_name(name: str, where: str) -> str:
    canonical = _NAMES.get(name.strip().lower())
    if canonical is None:
        raise InputError(f"{where}: {name!r} is not a CT-RATE abnormality; expected one of "
                         f"{', '.join(CT_RATE_ABNORMALITIES)}")
    return canonical


def volume_key(volume: str) -> str:
    volume = volume.strip()
    return volume[: -len(".nii.gz")] if volume.endswith(".nii.gz") else volume


@dataclass
class CtRateTable:
    """One value per (volume, abnormality), columns in :data:`CT_RATE_ABNORMALITIES` order."""

    volumes: list[str]
    values: np.ndarray  # (volumes, 18) float
    source: str
    texts: list[list[str]] | None = None  # the free-text answers, when read from text
    unparseable: np.ndarray | None = None  # (volumes, 18) bool, when read from text
    empty: int = 0

    @property
    def is_binary(self) -> bool:
        return bool(np.isin(self.values, (0.0, 1.0)).all())


def _read_table_csv(path: str | Path, what: str) -> CtRateTable:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or VOLUME_COLUMN not in rows[0]:
        raise InputError(f"{path}: expected a CSV whose header starts with '{VOLUME_COLUMN}' followed "
                         f"by the 18 CT-RATE abnormalities (the valid_predicted_labels.csv layout)")
    header = rows[0]
    columns = {}
    for index, name in enumerate(header):
        canonical = _NAMES.get(name.strip().lower())
        if canonical is not None:
            columns[canonical] = index
    missing = [name for name in CT_RATE_ABNORMALITIES if name not in columns]
    if missing:
        raise InputError(f"{path}: header lacks the column(s) {', '.join(missing)}")
    volume_index = header.index(VOLUME_COLUMN)
    volumes, values, seen = [], [], set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"{path}:{number}: {len(row)} cells for {len(header)} columns")
        volume = row[volume_index].strip()
        if not volume:
            raise InputError(f"{path}:{number}: empty {VOLUME_COLUMN}")
        if volume_key(volume) in seen:
            raise InputError(f"{path}:{number}: volume {volume!r} occurs twice")
        seen.add(volume_key(volume))
        try:
            numbers = [float(row[columns[name]]) for name in CT_RATE_ABNORMALITIES]
        except ValueError:
            raise InputError(f"{path}:{number}: every abnormality cell must be a number (0/1 or a "
                             f"probability in [0, 1])") from None
        if not all(0.0 <= value <= 1.0 for value in numbers):
            raise InputError(f"{path}:{number}: values must lie in [0, 1] (0/1 or probabilities)")
        volumes.append(volume)
        values.append(numbers)
    if not volumes:
        raise InputError(f"{path}: no volumes below the header")
    return CtRateTable(volumes, np.asarray(values, dtype=float), str(path))


def read_ct_rate_labels(path: str | Path) -> CtRateTable:
    """The ground-truth labels CSV; every value must be 0 or 1."""
    table = _read_table_csv(path, "CT-RATE labels")
    if not table.is_binary:
        raise InputError(f"{path}: ground-truth labels must be 0 or 1; this looks like a "
                         f"predictions file (pass it as --pred)")
    return table


def read_ct_rate_prediction_csv(path: str | Path) -> CtRateTable:
    """Predictions in the labels layout: all 0/1 -> decisions, otherwise probabilities."""
    return _read_table_csv(path, "CT-RATE predictions")


_YES_WORDS = frozenset({"yes", "present", "positive", "true", "1"})
_NO_WORDS = frozenset({"no", "absent", "negative", "false", "none", "0"})
_NEGATIONS = frozenset({"no", "not", "absent", "negative", "without", "none", "neither", "nor"})
_AFFIRMATIONS = frozenset({"yes", "present", "positive", "seen", "visible", "detected",
                           "identified", "observed", "noted"})


def yes_no_from_text(text: str) -> int | None:
    """1 (present), 0 (absent) or None (unparseable) for a free-text answer.

    Rule: lower-case, expand "n't" to " not", split into words. (1) The first word decides when it
    is yes/present/positive/true/1 or no/absent/negative/false/none/0 ("Yes, although ..." -> 1).
    (2) Otherwise any negation (no, not, absent, negative, without, none, neither, nor) -> 0.
    (3) Otherwise any affirmation (yes, present, positive, seen, visible, detected, identified,
    observed, noted) -> 1. (4) Otherwise None (also for a bare number other than 0/1, e.g. "0.7":
    probabilities go in the CSV layout).
    """
    words = re.findall(r"[a-z]+|\d+(?:\.\d+)?", text.lower().replace("n't", " not"))
    if not words:
        return None
    if words[0] in _YES_WORDS:
        return 1
    if words[0] in _NO_WORDS:
        return 0
    if _NEGATIONS.intersection(words):
        return 0
    if _AFFIRMATIONS.intersection(words):
        return 1
    return None


def ct_rate_table_from_answers(predictions: Sequence[Prediction]) -> CtRateTable:
    """Question-level free-text answers -> a (volumes, 18) 0/1 table, unparseable answers as 0."""
    if not predictions:
        raise InputError("no CT-RATE predictions")
    answers: dict[str, dict[str, Prediction]] = {}
    names: dict[str, str] = {}
    for prediction in predictions:
        fields = prediction.fields
        if "volume" in fields and "abnormality" in fields:
            volume, name = str(fields["volume"]), str(fields["abnormality"])
        elif QUESTION_ID_SEPARATOR in prediction.id:
            volume, name = prediction.id.rsplit(QUESTION_ID_SEPARATOR, 1)
        else:
            raise InputError(f"{prediction.source}: id {prediction.id!r} does not name a volume and "
                             f"an abnormality; use '<VolumeName>::<abnormality>' or give 'volume' "
                             f"and 'abnormality' fields")
        name = abnormality_name(name, prediction.source)
        per_volume = answers.setdefault(volume_key(volume), {})
        names.setdefault(volume_key(volume), volume)
        if name in per_volume:
            raise InputError(f"{prediction.source}: second answer for volume {volume!r}, "
                             f"abnormality {name!r}; keep one answer per question")
        per_volume[name] = prediction
    volumes, values, texts, unparseable, empty = [], [], [], [], 0
    for key, per_volume in answers.items():
        missing = [name for name in CT_RATE_ABNORMALITIES if name not in per_volume]
        if missing:
            raise InputError(f"{per_volume[next(iter(per_volume))].source}: volume {names[key]!r} "
                             f"has no answer for {', '.join(missing)}")
        row_texts = [per_volume[name].text for name in CT_RATE_ABNORMALITIES]
        parsed = [yes_no_from_text(text) for text in row_texts]
        empty += sum(not text.strip() for text in row_texts)
        volumes.append(names[key])
        values.append([0.0 if value is None else float(value) for value in parsed])
        texts.append(row_texts)
        unparseable.append([value is None for value in parsed])
    source = predictions[0].source.rsplit(":", 1)[0]
    return CtRateTable(volumes, np.asarray(values), source, texts, np.asarray(unparseable), empty)


def choose_threshold_ct_clip(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """CT-CLIP's operating point: the t in linspace(0, 1, 100) nearest the ROC corner, largest on ties."""
    truth = np.asarray(labels).astype(bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        raise InputError("the threshold needs both present and absent cases among the ground truth")
    best_threshold, best_distance = 0.0, math.inf
    for threshold in CT_CLIP_THRESHOLDS:
        decided = np.asarray(probabilities) > threshold
        tpr = np.sum(decided & truth) / positives
        fpr = np.sum(decided & ~truth) / negatives
        distance = math.sqrt((1 - tpr) ** 2 + fpr ** 2)
        if distance <= best_distance:
            best_threshold, best_distance = float(threshold), distance
    return best_threshold


def f1_of_means(precision: float, recall: float) -> float:
    """2PR/(P+R) of (macro) precision and recall, in the unit given (0 when both are 0)."""
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _aligned(labels: CtRateTable, predictions: CtRateTable) -> np.ndarray:
    """Prediction rows in the label file's volume order."""
    rows = {volume_key(volume): index for index, volume in enumerate(predictions.volumes)}
    unknown = sorted(set(rows) - {volume_key(volume) for volume in labels.volumes})
    if unknown:
        raise InputError(f"{predictions.source}: predictions for {len(unknown)} volume(s) not in the "
                         f"labels, e.g. {unknown[0]!r}; use the labels file of the same split")
    missing = [volume for volume in labels.volumes if volume_key(volume) not in rows]
    if missing:
        raise InputError(f"{predictions.source}: no predictions for {len(missing)} of "
                         f"{len(labels.volumes)} labelled volumes, e.g. {missing[0]!r}")
    return np.asarray([rows[volume_key(volume)] for volume in labels.volumes])


def score_ct_rate(labels: CtRateTable, predictions: CtRateTable) -> ScoreResult:
    """Per-abnormality and macro accuracy / precision / recall / F1 (+ AUROC for probabilities)."""
    from sklearn.metrics import (accuracy_score, f1_score, precision_score, recall_score,
                                 roc_auc_score)

    order = _aligned(labels, predictions)
    values = predictions.values[order]
    truth = labels.values.astype(int)
    probabilistic = not predictions.is_binary
    per_abnormality: dict[str, dict] = {}
    decisions = np.zeros_like(truth)
    for column, name in enumerate(CT_RATE_ABNORMALITIES):
        y = truth[:, column]
        row: dict = {"n": len(y), "positives": int(y.sum())}
        if probabilistic:
            try:
                threshold = choose_threshold_ct_clip(values[:, column], y)
            except InputError:
                raise InputError(f"{labels.source}: abnormality {name!r} is "
                                 f"{'present' if y.all() else 'absent'} in every volume, so CT-CLIP's "
                                 f"threshold and AUROC are undefined; score a set with both cases or "
                                 f"pass 0/1 decisions") from None
            decisions[:, column] = values[:, column] > threshold
            row |= {"threshold": threshold, "auroc": 100.0 * roc_auc_score(y, values[:, column])}
        else:
            decisions[:, column] = values[:, column].astype(int)
        d = decisions[:, column]
        row |= {"accuracy": 100.0 * accuracy_score(y, d),
                "precision": 100.0 * precision_score(y, d, zero_division=0),
                "recall": 100.0 * recall_score(y, d, zero_division=0),
                "f1": 100.0 * f1_score(y, d, zero_division=0),
                "f1_weighted": 100.0 * f1_score(y, d, average="weighted", zero_division=0)}
        per_abnormality[name] = row

    def macro(key: str) -> float:
        return float(np.mean([row[key] for row in per_abnormality.values()]))

    metrics = {"accuracy": macro("accuracy"), "precision": macro("precision"),
               "recall": macro("recall"), "f1_macro": macro("f1"),
               "f1_of_means": f1_of_means(macro("precision"), macro("recall")),
               "f1_weighted": macro("f1_weighted")}
    if probabilistic:
        metrics["auroc"] = macro("auroc")
    metrics["per_abnormality"] = per_abnormality
    unparseable = predictions.unparseable[order] if predictions.unparseable is not None else None
    counts = {"volumes": len(labels.volumes), "abnormalities": len(CT_RATE_ABNORMALITIES),
              "decisions": int(truth.size), "positives": int(truth.sum()),
              "predicted_positive": int(decisions.sum()),
              "unparseable": int(unparseable.sum()) if unparseable is not None else 0,
              "empty_predictions": predictions.empty,
              "abnormalities_without_positives": int(sum(row["positives"] == 0
                                                         for row in per_abnormality.values()))}
    items = []
    for row_index, volume in enumerate(labels.volumes):
        for column, name in enumerate(CT_RATE_ABNORMALITIES):
            decided, expected = int(decisions[row_index, column]), int(truth[row_index, column])
            if predictions.texts is not None:
                shown = predictions.texts[order[row_index]][column]
                detail = "unparseable -> absent" if unparseable[row_index, column] else \
                    f"read as {'present' if decided else 'absent'}"
            else:
                shown = f"{values[row_index, column]:g}"
                detail = (f"> {per_abnormality[name]['threshold']:.4f}" if probabilistic
                          else "decision")
            items.append(ItemScore(ct_rate_question_id(volume, name), name, decided == expected,
                                   float(decided == expected), shown, str(expected), detail))
    notes = ["precision / recall / F1 of the positive class (0 where undefined); f1_of_means = "
             "2PR/(P+R) of the macro precision and recall; f1_weighted = CT-CLIP's weighted F1"]
    if probabilistic:
        notes.append("probabilities: per-abnormality CT-CLIP threshold (100 values in [0, 1], nearest "
                     "ROC corner, largest on ties), chosen on the scored set itself")
    if counts["unparseable"]:
        notes.append(f"{counts['unparseable']} free-text answer(s) were neither yes nor no and were "
                     f"scored as 'absent'")
    return ScoreResult(benchmark="ct-rate",
                       protocol="ct-clip-threshold" if probabilistic else "ct-rate-yes-no",
                       metrics=metrics, counts=counts, items=items, per_category=per_abnormality,
                       category_label="abnormality", chart_metric="f1", notes=notes)
