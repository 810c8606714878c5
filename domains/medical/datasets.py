"""Readers for the medical training / benchmark sets, yielding :class:`~longllava.core.records.Record`.

- PubMedVision (alignment and instruction-tuning JSON);
- VQA-RAD / PathVQA in LLaVA-Med's test format (``answer_type`` OPEN / CLOSED);
- VQA-RAD / PathVQA / ... in HuatuoGPT-Vision's multiple-choice format;
- CT-RATE (volumes, 18 abnormality labels, metadata, reports) with per-abnormality yes/no questions.

Every reader returns a :class:`RecordStream`: iterate it for records; a malformed record raises
:class:`~longllava.errors.InputError` naming the file, the record and the field, or, with
``skip_bad=True``, is left out and listed in ``stream.errors`` (``stream.errors.summary()``).
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from longllava.core.records import GPT, HUMAN, IMAGE_PLACEHOLDER, Record, RecordErrors
from longllava.domains.medical.ct import CTVolume, apply_rescale, load_ct
from longllava.errors import InputError

T = TypeVar("T")
_LETTERS = "ABCDEFGHIJKLMN"  # HuatuoGPT-Vision's scorer recognises option letters A-N


@dataclass
class RecordStream(Generic[T]):
    """A re-iterable dataset read; each pass starts a fresh ``errors`` collection."""

    read: Callable[[RecordErrors], Iterator[T]]
    skip_bad: bool = False
    errors: RecordErrors = field(init=False)

    def __post_init__(self) -> None:
        self.errors = RecordErrors(self.skip_bad)

    def __iter__(self) -> Iterator[T]:
        self.errors = RecordErrors(self.skip_bad)
        return self.read(self.errors)


class _Bad(Exception):
    """A record problem found while validating: (field, problem)."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(problem)
        self.field_name, self.problem = field_name, problem


def _load_json_list(path: Path) -> list[Any]:
    """A JSON list (``.json``) or one JSON object per line (``.jsonl``)."""
    if not path.is_file():
        raise InputError(f"{path}: no such dataset file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from error
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got a {type(data).__name__}")
    return data


def _records(path: Path, build: Callable[[Any, int], Record]) -> Callable[[RecordErrors], Iterator[Record]]:
    def read(errors: RecordErrors) -> Iterator[Record]:
        for index, raw in enumerate(_load_json_list(path)):
            try:
                if not isinstance(raw, dict):
                    raise _Bad("<record>", f"expected a JSON object, got {type(raw).__name__}")
                yield build(raw, index)
            except _Bad as bad:
                errors.report(path, index, bad.field_name, bad.problem)

    return read


def _required(raw: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in raw:
        raise _Bad(key, "missing")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _Bad(key, f"expected {names}, got {type(value).__name__} {value!r:.60}")
    return value


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _Bad(key, f"expected a string, got {type(value).__name__}")
    return value


def _images(raw: dict[str, Any], image_root: Path) -> list[str]:
    value = _required(raw, "image", (str, list))
    names = [value] if isinstance(value, str) else value
    if not names or not all(isinstance(n, str) and n for n in names):
        raise _Bad("image", f"expected a non-empty path or list of paths, got {value!r:.80}")
    paths = [image_root / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise _Bad("image", f"image file not found: {', '.join(missing[:3])} (check the image root)")
    return [str(p) for p in paths]


def _conversation(raw: dict[str, Any], key: str, num_images: int) -> list[dict[str, str]]:
    turns = _required(raw, key, list)
    if not turns:
        raise _Bad(key, "empty conversation")
    out = []
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in (HUMAN, GPT) or not isinstance(turn.get("value"), str):
            raise _Bad(key, f"turn {position} must be {{'from': 'human'|'gpt', 'value': str}}, got {turn!r:.80}")
        out.append({"from": turn["from"], "value": turn["value"]})
    if out[0]["from"] != HUMAN:
        raise _Bad(key, "the first turn must be from 'human'")
    return _with_placeholders(out, key, num_images)


def _with_placeholders(turns: list[dict[str, str]], key: str, num_images: int) -> list[dict[str, str]]:
    """Prepend one ``<image>`` per image to the first human turn when the text has none."""
    count = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if count == 0:
        turns[0] = {"from": HUMAN, "value": (IMAGE_PLACEHOLDER + "\n") * num_images + turns[0]["value"]}
    elif count != num_images:
        raise _Bad(key, f"{count} {IMAGE_PLACEHOLDER} placeholder(s) for {num_images} image(s)")
    return turns


def _record_id(raw: dict[str, Any], fallback: str) -> str:
    value = raw.get("id", fallback)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _Bad("id", f"expected a string or integer, got {type(value).__name__}")
    return str(value)


# --- PubMedVision ---------------------------------------------------------------------------------


def read_pubmedvision(
    json_path: str | PathLike[str], image_root: str | PathLike[str], *, skip_bad: bool = False
) -> RecordStream[Record]:
    """``PubMedVision_{Alignment,InstructionTuning}_VQA.json``: ``{id, image: [paths], conversations,
    modality, body_part}``; paths resolve against ``image_root``."""
    path, root = Path(json_path), Path(image_root)

    def build(raw: dict[str, Any], index: int) -> Record:
        record_id = str(_required(raw, "id", (str, int)))
        images = _images(raw, root)
        return Record(
            id=record_id,
            images=images,
            conversations=_conversation(raw, "conversations", len(images)),
            source=f"{path}#{index}",
            meta={
                "dataset": "PubMedVision",
                "modality": _optional_str(raw, "modality"),
                "body_part": _optional_str(raw, "body_part"),
            },
        )

    return RecordStream(_records(path, build), skip_bad)


# --- VQA-RAD / PathVQA, LLaVA-Med test format -----------------------------------------------------


def read_llava_med_vqa(
    json_path: str | PathLike[str], image_root: str | PathLike[str], *, skip_bad: bool = False
) -> RecordStream[Record]:
    """LLaVA-Med's ``test.json`` (or ``.jsonl``): ``{id, image, conversations, answer_type}``; the
    misspelled ``conversatons`` key of the released files is accepted."""
    path, root = Path(json_path), Path(image_root)

    def build(raw: dict[str, Any], index: int) -> Record:
        record_id = str(_required(raw, "id", (str, int)))
        images = _images(raw, root)
        key = "conversations" if "conversations" in raw or "conversatons" not in raw else "conversatons"
        turns = _conversation(raw, key, len(images))
        answer_type = _required(raw, "answer_type", str).strip().upper()
        if answer_type not in ("OPEN", "CLOSED"):
            raise _Bad("answer_type", f"expected OPEN or CLOSED, got {raw['answer_type']!r}")
        if not any(t["from"] == GPT for t in turns):
            raise _Bad(key, "no 'gpt' turn holding the reference answer")
        return Record(
            id=record_id,
            images=images,
            conversations=turns,
            source=f"{path}#{index}",
            meta={"answer_type": answer_type, "dataset": _optional_str(raw, "dataset")},
        )

    return RecordStream(_records(path, build), skip_bad)


# --- HuatuoGPT-Vision multiple choice -------------------------------------------------------------


def read_multiple_choice_vqa(
    json_path: str | PathLike[str], image_root: str | PathLike[str], *, skip_bad: bool = False
) -> RecordStream[Record]:
    """HuatuoGPT-Vision's ``medical_multimodel_evaluation_data.json``: ``{question, options (list or
    its Python literal), answer (option text), image: [paths], dataset, question_type?, subset?}``.

    The conversation holds the bare question and the answer text; ``meta`` carries ``options``,
    ``answer``, ``answer_letter`` (A-N, None without options), ``dataset``, ``question_type``, ``subset``.
    """
    path, root = Path(json_path), Path(image_root)

    def build(raw: dict[str, Any], index: int) -> Record:
        question = _required(raw, "question", str)
        answer = _required(raw, "answer", str)
        dataset = _required(raw, "dataset", str)
        options = _options(raw)
        letter = None
        if options:
            if answer not in options:
                raise _Bad("answer", f"{answer!r} is not one of the options {options}")
            letter = _LETTERS[options.index(answer)]
        images = _images(raw, root)
        turns = [{"from": HUMAN, "value": question}, {"from": GPT, "value": answer}]
        return Record(
            id=_record_id(raw, f"{path.stem}-{index}"),
            images=images,
            conversations=_with_placeholders(turns, "question", len(images)),
            source=f"{path}#{index}",
            meta={
                "dataset": dataset,
                "options": options,
                "answer": answer,
                "answer_letter": letter,
                "question_type": _optional_str(raw, "question_type"),
                "subset": _optional_str(raw, "subset"),
            },
        )

    return RecordStream(_records(path, build), skip_bad)


def _options(raw: dict[str, Any]) -> list[str]:
    value = raw.get("options", [])
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip() else []
        except (ValueError, SyntaxError) as error:
            raise _Bad("options", f"a string that is not a Python list literal: {value!r:.80}") from error
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise _Bad("options", f"expected a list of option strings, got {value!r:.80}")
    if len(value) > len(_LETTERS):
        raise _Bad("options", f"{len(value)} options; at most {len(_LETTERS)} (A-N) are supported")
    return value


# --- CT-RATE --------------------------------------------------------------------------------------

CT_RATE_ABNORMALITIES = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)
_CT_RATE_REPORT_FIELDS = ("ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
_CT_RATE_CSV_STEM = {"valid": "validation", "train": "train"}


@dataclass
class CTRateItem:
    """One CT-RATE volume with its labels (1 = present), acquisition metadata and report."""

    volume_name: str  # e.g. valid_53_a_1.nii.gz
    volume_path: Path
    labels: dict[str, int]  # CT_RATE_ABNORMALITIES order
    xy_spacing_mm: tuple[float, float]  # (row spacing, column spacing), from the metadata CSV
    z_spacing_mm: float
    rescale_slope: float
    rescale_intercept: float
    report: dict[str, str]  # ClinicalInformation_EN, Technique_EN, Findings_EN, Impressions_EN
    source: str  # "<labels csv>#<row>"


def read_ct_rate(root: str | PathLike[str], *, split: str = "valid", skip_bad: bool = False) -> RecordStream[CTRateItem]:
    """The CT-RATE layout under ``root``: ``dataset/<split>[_fixed]/<split>_<pid>/<split>_<pid>_<scan>/
    <name>.nii.gz`` (``_fixed`` preferred), ``multi_abnormality_labels/<split>_predicted_labels.csv``,
    ``metadata/<validation|train>_metadata.csv`` and ``radiology_text_reports/<...>_reports.csv``."""
    root = Path(root)
    if split not in _CT_RATE_CSV_STEM:
        raise InputError(f"CT-RATE split must be one of {', '.join(_CT_RATE_CSV_STEM)}, got {split!r}")
    stem = _CT_RATE_CSV_STEM[split]
    labels_csv = root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv"
    metadata_csv = root / "metadata" / f"{stem}_metadata.csv"
    reports_csv = root / "radiology_text_reports" / f"{stem}_reports.csv"
    volumes = next((d for d in (root / "dataset" / f"{split}_fixed", root / "dataset" / split) if d.is_dir()), None)
    if volumes is None:
        raise InputError(f"{root}: no dataset/{split}_fixed or dataset/{split} folder of CT-RATE volumes")

    def read(errors: RecordErrors) -> Iterator[CTRateItem]:
        label_rows = _read_csv(labels_csv, ("VolumeName", *CT_RATE_ABNORMALITIES))
        metadata = {row["VolumeName"]: row for row in _read_csv(metadata_csv, ("VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"))}
        reports = {row["VolumeName"]: row for row in _read_csv(reports_csv, ("VolumeName", *_CT_RATE_REPORT_FIELDS))}
        for index, row in enumerate(label_rows):
            try:
                yield _ct_rate_item(row, index, labels_csv, volumes, split, metadata, reports, metadata_csv, reports_csv)
            except _Bad as bad:
                errors.report(labels_csv, f"{index} ({row.get('VolumeName')})", bad.field_name, bad.problem)

    return RecordStream(read, skip_bad)


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path}: CT-RATE file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _ct_rate_item(
    row: dict[str, str],
    index: int,
    labels_csv: Path,
    volumes: Path,
    split: str,
    metadata: dict[str, dict[str, str]],
    reports: dict[str, dict[str, str]],
    metadata_csv: Path,
    reports_csv: Path,
) -> CTRateItem:
    name = row["VolumeName"].strip()
    parts = name.removesuffix(".nii.gz").split("_")
    if not name.endswith(".nii.gz") or len(parts) != 4 or parts[0] != split:
        raise _Bad("VolumeName", f"expected {split}_<patient>_<scan>_<reconstruction>.nii.gz, got {name!r}")
    volume_path = volumes / "_".join(parts[:2]) / "_".join(parts[:3]) / name
    if not volume_path.is_file():
        raise _Bad("VolumeName", f"volume file not found: {volume_path}")
    labels = {}
    for abnormality in CT_RATE_ABNORMALITIES:
        try:
            value = float(row[abnormality])
        except ValueError:
            value = -1.0
        if value not in (0.0, 1.0):
            raise _Bad(abnormality, f"expected label 0 or 1, got {row[abnormality]!r}")
        labels[abnormality] = int(value)
    if name not in metadata:
        raise _Bad("VolumeName", f"no row for {name} in {metadata_csv}")
    meta = metadata[name]
    try:
        xy = ast.literal_eval(meta["XYSpacing"])
        xy_spacing = (float(xy[0]), float(xy[1]))
    except (ValueError, SyntaxError, TypeError, IndexError) as error:
        raise _Bad("XYSpacing", f"expected a list like '[0.75, 0.75]' in {metadata_csv}, got {meta['XYSpacing']!r}") from error
    numbers = {}
    for key in ("ZSpacing", "RescaleSlope", "RescaleIntercept"):
        try:
            numbers[key] = float(meta[key])
        except ValueError as error:
            raise _Bad(key, f"expected a number in {metadata_csv}, got {meta[key]!r}") from error
    if min(*xy_spacing, numbers["ZSpacing"]) <= 0:
        raise _Bad("ZSpacing" if numbers["ZSpacing"] <= 0 else "XYSpacing", f"spacing must be > 0 mm in {metadata_csv}")
    if name not in reports:
        raise _Bad("VolumeName", f"no row for {name} in {reports_csv}")
    return CTRateItem(
        volume_name=name,
        volume_path=volume_path,
        labels=labels,
        xy_spacing_mm=xy_spacing,
        z_spacing_mm=numbers["ZSpacing"],
        rescale_slope=numbers["RescaleSlope"],
        rescale_intercept=numbers["RescaleIntercept"],
        report={k: reports[name][k] for k in _CT_RATE_REPORT_FIELDS},
        source=f"{labels_csv}#{index}",
    )


def ct_rate_needs_rescale(raw_min: float, *, header_scaled: bool, slope: float, intercept: float, volume: str) -> bool:
    """Whether the metadata's RescaleSlope/Intercept must still be applied to a CT-RATE volume.

    Not when the NIfTI header carried scaling (nibabel already applied it) or when the values
    are negative somewhere (stored CT values are unsigned; negative values are HU: the ``_fixed``
    volumes). Otherwise yes, and the result must reach below 0 HU (air), else the volume is
    neither raw nor HU and we refuse to guess.
    """
    if header_scaled or raw_min < 0:
        return False
    if raw_min * slope + intercept >= 0:
        raise InputError(
            f"{volume}: values start at {raw_min:g} and RescaleSlope {slope:g} / RescaleIntercept {intercept:g} "
            "would not bring air below 0 HU; the volume is neither raw CT values nor HU - check its metadata row"
        )
    return True


def load_ct_rate_volume(item: CTRateItem) -> CTVolume:
    """The item's volume in HU, with the metadata CSV's spacing (CT-RATE headers were often blank)."""
    volume = load_ct(item.volume_path)
    needs = ct_rate_needs_rescale(
        float(volume.hu.min()),
        header_scaled=volume.metadata.get("nifti_scl_slope") is not None,
        slope=item.rescale_slope,
        intercept=item.rescale_intercept,
        volume=str(item.volume_path),
    )
    if needs:
        volume.hu = apply_rescale(volume.hu, item.rescale_slope, item.rescale_intercept)
    spacing = (item.z_spacing_mm, *item.xy_spacing_mm)
    affine = volume.affine_ras.copy()
    affine[:3, :3] *= np.asarray(spacing) / np.linalg.norm(affine[:3, :3], axis=0)
    volume.affine_ras = affine
    volume.spacing_mm = spacing
    volume.slice_z_mm = affine[2, 3] + affine[2, 0] * np.arange(volume.hu.shape[0])
    volume.metadata.update(ct_rate_rescale_applied=needs, spacing_source="CT-RATE metadata csv")
    return volume


def ct_rate_questions(item: CTRateItem) -> list[Record]:
    """18 closed yes/no questions, one per abnormality, on the whole volume (one ``<image>``)."""
    return [
        Record(
            id=f"{item.volume_name}#{abnormality}",
            images=[str(item.volume_path)],
            conversations=[
                {"from": HUMAN, "value": f"{IMAGE_PLACEHOLDER}\nIs there {abnormality.lower()} in this chest CT volume? Answer yes or no."},
                {"from": GPT, "value": "yes" if item.labels[abnormality] else "no"},
            ],
            source=item.source,
            meta={
                "dataset": "CT-RATE",
                "modality": "CT",
                "body_part": "chest",
                "image_kind": "ct_volume",
                "answer_type": "CLOSED",
                "abnormality": abnormality,
                "label": item.labels[abnormality],
                "labels": dict(item.labels),
            },
        )
        for abnormality in CT_RATE_ABNORMALITIES
    ]


def ct_rate_report_record(item: CTRateItem) -> Record:
    """Report generation: the volume -> findings and impression."""
    answer = f"Findings: {item.report['Findings_EN'].strip()}\nImpression: {item.report['Impressions_EN'].strip()}"
    return Record(
        id=f"{item.volume_name}#report",
        images=[str(item.volume_path)],
        conversations=[
            {"from": HUMAN, "value": f"{IMAGE_PLACEHOLDER}\nWrite the findings and impression of this chest CT volume."},
            {"from": GPT, "value": answer},
        ],
        source=item.source,
        meta={"dataset": "CT-RATE", "modality": "CT", "body_part": "chest", "image_kind": "ct_volume", "answer_type": "OPEN", "labels": dict(item.labels)},
    )
