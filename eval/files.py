"""Small JSON / JSON Lines loaders for ground-truth files, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from longllava.errors import InputError


def load_json_list(path: str | Path, what: str) -> list:
    """A non-empty JSON list; ``what`` says what the list should hold, for the error message."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ground-truth file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error}); expected {what}") from None
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected {what} (a non-empty JSON list)")
    return data


def load_jsonl(path: str | Path, what: str) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON Lines file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ground-truth file not found")
    records = []
    for number, record in json_lines(path.read_text(encoding="utf-8").splitlines(), path,
                                     f"expected {what} as JSON Lines"):
        if not isinstance(record, dict):
            raise InputError(f"{path}:{number}: expected a JSON object ({what})")
        records.append((number, record))
    if not records:
        raise InputError(f"{path}: no records; expected {what} as JSON Lines")
    return records


def json_lines(lines: Iterable[str], path: str | Path, hint: str) -> Iterator[tuple[int, object]]:
    """(line number, decoded value) for every non-blank line; a line that is not JSON is an
    error naming the file and line, then ``hint`` (what the file should be, what to do)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not a JSON object ({error}); {hint}") from None
