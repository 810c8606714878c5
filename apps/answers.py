"""What an answer refers to: the tiles it names, and the slices it was given.

Tiles are named as the default model answers and as the grids are labelled: ``row R column C``
(also ``row R, col C``), ``rRcC`` (the GeoJSON feature ids) or ``tile (R, C)``; rows and columns
count from 0. Slices are reported from the answer's trace (one entry per image sent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_TILE_PATTERNS = (
    re.compile(r"\brow\s*#?\s*(\d+)\s*(?:,|and|/)?\s*col(?:umn)?\s*#?\s*(\d+)", re.I),
    re.compile(r"\br\s*(\d+)\s*c\s*(\d+)\b", re.I),
    re.compile(r"\btile\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.I),
)


def tiles_named(text: str, rows: int, cols: int) -> list[tuple[int, int]]:
    """(row, col) of every grid cell ``text`` names, in order of first mention, inside the grid."""
    found: list[tuple[int, tuple[int, int]]] = []
    for pattern in _TILE_PATTERNS:
        found.extend((m.start(), (int(m[1]), int(m[2]))) for m in pattern.finditer(text))
    cells: list[tuple[int, int]] = []
    for _, (row, col) in sorted(found):
        if row < rows and col < cols and (row, col) not in cells:
            cells.append((row, col))
    return cells


def slice_rows(trace: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """[frame number (1-based, the order the model saw), z index, z in mm] per slice sent."""
    return [[t["frame"] + 1, t["slice_index"], round(t["z_mm"], 2)] for t in trace if t["kind"] == "frame"]


def describe_slices(trace: Sequence[dict[str, Any]], limit: int = 12) -> str:
    """One line naming the slices an answer was based on, e.g. ``4 slices: z index 0, 37, 74, 111
    (z 94.3 to 427.3 mm)``; long lists are shortened in the middle."""
    rows = slice_rows(trace)
    if not rows:
        return "no slices"
    indices = [str(index) for _, index, _ in rows]
    if len(indices) > limit:
        indices = [*indices[: limit // 2], "…", *indices[-(limit // 2) :]]
    plural = "slice" if len(rows) == 1 else "slices"
    return f"{len(rows)} {plural}: z index {', '.join(indices)} (z {rows[0][2]:g} to {rows[-1][2]:g} mm)"


def grid_footnote(answer: Any, rows: int, cols: int, parts: str, first: bool, named: Sequence[tuple[int, int]],
                  highlight_note: str = "highlighted") -> str:
    """The line under a grid answer: what the model saw, which tiles it named, and its cost."""
    footnote = f"based on the global view + {rows} × {cols} {parts}"
    footnote += "" if first else ", sent with the first question"
    if named:
        footnote += "; names " + ", ".join(f"r{r}c{c}" for r, c in named) + f" ({highlight_note})"
    return footnote + f" · {answer.num_prompt_tokens:,} prompt tokens · {answer.seconds:.1f} s"
