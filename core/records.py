"""The dataset record every reader yields and every consumer (protocol, fine-tuning, evaluation) reads.

A record is model-free: image *references* (paths, or in-memory images for generated data) plus a
LLaVA-style conversation whose human turns hold one ``<image>`` placeholder per image, in image order.
Markers (``<img>``, ``<vid>``, ...) are *not* in record text: only :mod:`longllava.core.protocol`
writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longllava.errors import InputError

IMAGE_PLACEHOLDER = "<image>"
HUMAN, GPT = "human", "gpt"


@dataclass
class Record:
    id: str
    images: list[Any]  # Path / str (opened lazily) or PIL.Image.Image, in placeholder order
    conversations: list[dict[str, str]]  # [{"from": "human"|"gpt", "value": str}, ...]
    source: str = ""  # "<file>#<record index>", for error messages and reports
    meta: dict[str, Any] = field(default_factory=dict)  # answer_type, options, dataset, category, ...

    @property
    def question(self) -> str:
        """The first human turn without its image placeholders."""
        first = next(turn["value"] for turn in self.conversations if turn["from"] == HUMAN)
        return first.replace(IMAGE_PLACEHOLDER, "").strip()

    @property
    def answer(self) -> str | None:
        """The first gpt turn, if any."""
        return next((turn["value"] for turn in self.conversations if turn["from"] == GPT), None)

    def num_placeholders(self) -> int:
        return sum(turn["value"].count(IMAGE_PLACEHOLDER) for turn in self.conversations)


@dataclass
class BadRecord:
    source: str  # file
    index: int | str  # record index or id
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.source} record {self.index}: field '{self.field}': {self.problem}"


class RecordErrors:
    """Collects malformed records in ``skip_bad`` mode, raises on the first one otherwise."""

    def __init__(self, skip_bad: bool = False):
        self.skip_bad = skip_bad
        self.bad: list[BadRecord] = []

    def report(self, source: str | Path, index: int | str, field_name: str, problem: str) -> None:
        bad = BadRecord(str(source), index, field_name, problem)
        if not self.skip_bad:
            raise InputError(f"{bad} (fix the record, or pass --skip-bad to collect bad records into a report)")
        self.bad.append(bad)

    def summary(self) -> dict[str, Any]:
        return {"num_bad": len(self.bad), "bad": [str(b) for b in self.bad]}
