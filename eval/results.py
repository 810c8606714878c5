"""What every scorer returns, and how it is written to disk.

A :class:`ScoreResult` holds metric values in percent, counts, one :class:`ItemScore` per scored
item and a per-category table. :func:`write_results` turns it into ``metrics.json`` (exactly the
``--json`` object of ``longllava score`` plus notes), ``metrics.md`` (a Markdown table),
``items.jsonl`` (per-item correctness) and ``per_category.png`` (a bar chart per category).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Number = float | int | None


@dataclass
class ItemScore:
    id: str
    category: str
    correct: bool  # the item's hit; an open LLaVA-Med question counts as a hit at full recall
    score: float  # 1.0 / 0.0, or the item's partial credit (open-question token recall)
    prediction: str
    reference: str
    detail: str = ""  # how the prediction was read (cascade step, parsed yes/no, ...)


@dataclass
class ScoreResult:
    benchmark: str  # vqa-rad | pathvqa | ct-rate | fit-rsfg
    protocol: str  # llava-med | llava-med-strict | multiple-choice | ct-rate-binary | ...
    metrics: dict[str, Any]  # headline values in percent, plus the per_* table under its own key
    counts: dict[str, int]
    items: list[ItemScore]
    per_category: dict[str, dict[str, Number]]  # category -> column -> value (percent or count)
    category_label: str  # what a category is: "answer type", "dataset", "abnormality", "category"
    chart_metric: str  # the per_category column drawn in the bar chart
    notes: list[str] = field(default_factory=list)  # protocol choices and quirks, for the reader

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object: ``{"benchmark", "protocol", "metrics", "counts"}``."""
        return {"benchmark": self.benchmark, "protocol": self.protocol,
                "metrics": _rounded(self.metrics), "counts": dict(self.counts)}

    def to_markdown(self) -> str:
        lines = [f"## {self.benchmark} ({self.protocol})", "", "| metric | value |", "|---|---|"]
        for name, value in self.metrics.items():
            if not isinstance(value, dict):
                lines.append(f"| {name} | {_cell(value)} |")
        lines += ["", "| count | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.counts.items()]
        columns: list[str] = []
        for row in self.per_category.values():
            columns += [column for column in row if column not in columns]
        if self.per_category:
            lines += ["", f"| {self.category_label} | " + " | ".join(columns) + " |",
                      "|---" * (len(columns) + 1) + "|"]
            for name, row in self.per_category.items():
                lines.append(f"| {name} | " + " | ".join(_cell(row.get(c), c) for c in columns)
                             + " |")
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if column == "threshold" else f"{value:.2f}"
    return str(value)


def write_results(result: ScoreResult, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, metrics.md, items.jsonl and per_category.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("metrics.json", "metrics.md", "items.jsonl",
                                           "per_category.png")}
    payload = result.summary() | {"notes": result.notes}
    paths["metrics.json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    paths["metrics.md"].write_text(result.to_markdown(), encoding="utf-8")
    with paths["items.jsonl"].open("w", encoding="utf-8") as handle:
        for item in result.items:
            handle.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
    plot_per_category(result, paths["per_category.png"])
    return paths


def plot_per_category(result: ScoreResult, path: str | Path) -> Path:
    """Horizontal bar chart of ``result.chart_metric`` per category (Agg canvas, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [name for name, row in result.per_category.items()
             if row.get(result.chart_metric) is not None]
    values = [float(result.per_category[name][result.chart_metric]) for name in names]
    figure = Figure(figsize=(7.0, 1.2 + 0.35 * max(len(names), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(names)))
    axes.barh(positions, values, color="#4C72B0")
    axes.set_yticks(positions, names)
    axes.invert_yaxis()
    axes.set_xlim(0, 112)  # room for the value labels right of full bars
    axes.set_xticks([0, 20, 40, 60, 80, 100])
    axes.set_xlabel(f"{result.chart_metric} (%)")
    axes.set_title(f"{result.benchmark} — {result.protocol}: {result.chart_metric} per "
                   f"{result.category_label}", fontsize=10)
    for position, value in zip(positions, values):
        axes.text(value + 1, position, f"{value:.1f}", va="center", fontsize=8)
    figure.savefig(path, dpi=100)
    return Path(path)
