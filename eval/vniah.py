"""V-NIAH: a needle among N images, asked for at each depth; accuracy over (N, depth) as a heat map.

The haystack is a real image sequence: the axial slices of a CT volume (medical loader, windowed,
in z order) or the tiles of a scene (remote-sensing tiler, raster order). For a length N the
haystack takes N of them evenly spread over the source (repeating the sequence when it has fewer
than N). :func:`~longllava.eval.needles.insert_needle` marks the image at relative depth d
(index ``round(d * (N - 1))``) with a coloured square; the question asks for the colour, which only
that image shows. The N images go to the model as one ordered stack (``<vid>`` frames).

An answer is right when the first colour name it mentions (red, green, blue, yellow) is the
needle's. V-NIAH runs through the runner's :func:`~longllava.eval.runner.run_task` like every
benchmark: answers go to ``predictions.jsonl`` (appended, resumable, sharded by ``RANK`` /
``WORLD_SIZE``); the results are ``vniah.json`` (accuracy per
(N, depth) cell, counts) and ``vniah_heatmap.png`` (depth down, N across, like Figure 4 of the
LongLLaVA paper). Each (N, depth, sample) draws its colour and mark position from a generator seeded
with (seed, N, depth index, sample), so a resumed or sharded run asks exactly the same questions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from longllava.core import protocol
from longllava.errors import InputError
from longllava.eval.needles import NEEDLE_COLOURS, NEEDLE_QUESTION, insert_needle
from longllava.traces import ImageTrace
from longllava.eval.predictions import Prediction
from longllava.eval.runner import EvalItem, EvalTask, RunOutcome, run_task

CT_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".zip")
DEFAULT_LENGTHS = (1, 10, 50, 100, 200, 500, 1000)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
RESULTS, HEATMAP = "vniah.json", "vniah_heatmap.png"


@dataclass
class VniahConfig:
    """A V-NIAH run; saved as ``run.json`` in the output folder."""

    data: str  # a CT (NIfTI, DICOM folder / zip) or a scene raster
    out: str
    model: str = "tiny-random"
    haystack: str = "auto"  # auto | ct | scene
    lengths: list[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))
    depths: list[float] = field(default_factory=lambda: list(DEFAULT_DEPTHS))
    samples: int = 1  # questions per (N, depth) cell
    seed: int = 0
    tile: int = 336  # scene tiles, pixels
    batch_size: int = 1
    max_new_tokens: int = 16
    merge_timeout_s: float = 3600.0

    IDENTITY = ("data", "model", "haystack", "seed", "tile", "max_new_tokens")


def haystack_kind(path: str | Path, requested: str = "auto") -> str:
    """``ct`` for NIfTI / DICOM (file, folder or zip), ``scene`` for other rasters."""
    if requested in ("ct", "scene"):
        return requested
    if requested != "auto":
        raise InputError(f"haystack must be auto, ct or scene, got {requested!r}")
    path = Path(path)
    return "ct" if path.is_dir() or path.name.lower().endswith(CT_SUFFIXES) else "scene"


def spread_indices(count: int, n: int) -> list[int]:
    """n indices into a sequence of ``count``: evenly spread (ends kept) when count >= n, else the
    sequence repeated."""
    if count >= n:
        return np.rint(np.linspace(0, count - 1, n)).astype(int).tolist()
    return [index % count for index in range(n)]


class Haystack:
    """An ordered image source with one trace per image; images are rendered once, on first use."""

    def __init__(self, kind: str, source: str, count: int, render, traces: list[ImageTrace]):
        self.kind, self.source, self.count = kind, source, count
        self._render, self._traces, self._cache = render, traces, {}

    def image(self, index: int):
        if index not in self._cache:
            self._cache[index] = self._render(index)
        return self._cache[index]

    def take(self, n: int) -> tuple[list[Any], list[ImageTrace]]:
        indices = spread_indices(self.count, n)
        return [self.image(i) for i in indices], [self._traces[i] for i in indices]


def open_haystack(path: str | Path, kind: str = "auto", *, tile: int = 336) -> Haystack:
    """CT slices (all of them, z ascending) or scene tiles (raster order, all-nodata ones dropped)."""
    kind = haystack_kind(path, kind)
    if kind == "ct":
        from longllava.domains.medical.ct import load_ct
        from longllava.domains.medical.slices import ct_to_slices
        from longllava.domains.medical.visuals import slice_trace

        slices = ct_to_slices(load_ct(path), every=1)
        traces = [slice_trace(index, z) for index, z in zip(slices.indices, slices.z_mm)]
        return Haystack("ct", str(path), len(slices), lambda i: slices[i].image, traces)
    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene
    from longllava.domains.remote_sensing.visuals import tile_trace

    grid = tile_scene(open_scene(path), tile=tile, drop_empty=True)
    traces = [tile_trace(t) for t in grid.tiles]
    return Haystack("scene", str(path), len(grid.tiles), lambda i: grid.tiles[i].image(), traces)


def vniah_item_id(n: int, depth: float, sample: int) -> str:
    return f"n{n}-depth{depth:g}-s{sample}"


def vniah_items(haystack: Haystack, config: VniahConfig) -> list[EvalItem]:
    """One question per (N, depth, sample), N ascending. An item's ``needle_index`` and ``colour``
    fields are filled when its message is built (that is when the needle is drawn)."""
    for n in config.lengths:
        if n < 1:
            raise InputError(f"haystack lengths must be at least 1 image, got {n}")
    for depth in config.depths:
        if not 0.0 <= depth <= 1.0:
            raise InputError(f"needle depths must lie in [0, 1] (0 = first image, 1 = last), got {depth}")
    if config.samples < 1:
        raise InputError(f"samples must be at least 1, got {config.samples}")

    def build(n: int, depth_index: int, sample: int, fields: dict) -> protocol.UserMessage:
        images, traces = haystack.take(n)
        rng = np.random.default_rng([config.seed, n, depth_index, sample])
        needle = insert_needle(images, config.depths[depth_index], rng)
        fields.update(needle_index=needle.needle_index, colour=needle.colour)
        traces[needle.needle_index] = replace(traces[needle.needle_index], needle=needle.colour)
        return protocol.user_message([protocol.StackInput(needle.images, traces)], needle.question)

    items = []
    for n in config.lengths:
        for depth_index, depth in enumerate(config.depths):
            for sample in range(config.samples):
                fields: dict[str, Any] = {"n": n, "depth": depth, "sample": sample}
                items.append(EvalItem(
                    id=vniah_item_id(n, depth, sample), question=NEEDLE_QUESTION,
                    message=lambda n=n, d=depth_index, s=sample, f=fields: build(n, d, s, f),
                    fields=fields))
    return items


def needle_found(answer: str, colour: str) -> bool:
    """Whether the first colour name in ``answer`` is ``colour``."""
    named = [word for word in re.findall(r"[a-z]+", answer.lower()) if word in NEEDLE_COLOURS]
    return bool(named) and named[0] == colour


@dataclass
class VniahResult:
    lengths: list[int]
    depths: list[float]
    accuracy: list[list[float | None]]  # [depth][length], percent; None: no question
    counts: list[list[int]]  # questions per cell
    overall: float
    haystack: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_vniah(records: Sequence[dict], lengths: Sequence[int], depths: Sequence[float],
                haystack: dict[str, Any]) -> VniahResult:
    hits = np.zeros((len(depths), len(lengths)))
    totals = np.zeros((len(depths), len(lengths)), dtype=int)
    for record in records:
        row, col = list(depths).index(record["depth"]), list(lengths).index(record["n"])
        hits[row, col] += needle_found(record["text"], record["colour"])
        totals[row, col] += 1
    accuracy = np.where(totals > 0, 100.0 * hits / np.maximum(totals, 1), np.nan)
    return VniahResult(list(lengths), list(depths),
                       [[None if np.isnan(v) else float(v) for v in row] for row in accuracy],
                       totals.tolist(), 100.0 * float(hits.sum()) / max(int(totals.sum()), 1),
                       haystack)


def plot_heatmap(result: VniahResult, path: str | Path, title: str = "") -> Path:
    """Accuracy per (depth, N): depth down, N across, red (0 %) to green (100 %)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = np.array([[np.nan if v is None else v for v in row] for row in result.accuracy])
    figure = Figure(figsize=(1.6 + 0.7 * len(result.lengths), 1.4 + 0.45 * len(result.depths)),
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = axes.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    axes.set_xticks(range(len(result.lengths)), [str(n) for n in result.lengths])
    axes.set_yticks(range(len(result.depths)), [f"{100 * d:g}%" for d in result.depths])
    axes.set_xlabel("images in the haystack (N)")
    axes.set_ylabel("needle depth")
    for row in range(grid.shape[0]):
        for col in range(grid.shape[1]):
            if not np.isnan(grid[row, col]):
                axes.text(col, row, f"{grid[row, col]:.0f}", ha="center", va="center", fontsize=8)
    figure.colorbar(shown, ax=axes, label="accuracy (%)")
    axes.set_title(title or f"V-NIAH ({result.haystack.get('kind')} haystack)", fontsize=10)
    figure.savefig(path, dpi=100)
    return Path(path)


def vniah_task(config: VniahConfig) -> EvalTask:
    """V-NIAH as a task of the runner: its questions, and a scorer that also writes
    ``vniah.json`` and the heat map."""
    haystack = open_haystack(config.data, config.haystack, tile=config.tile)
    described = {"kind": haystack.kind, "source": haystack.source, "images": haystack.count}

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> VniahResult:
        return score_vniah([p.fields for p in predictions], config.lengths, config.depths, described)

    def write(result: VniahResult, out_dir: Path) -> None:
        (out_dir / RESULTS).write_text(json.dumps(result.to_dict() | {"model": config.model}, indent=2) + "\n",
                                       encoding="utf-8")
        plot_heatmap(result, out_dir / HEATMAP)

    return EvalTask("vniah", "vniah", vniah_items(haystack, config), score, config.max_new_tokens, write,
                    run_fields={"haystack": haystack.kind}, keep_other_ids=True)


def run_vniah(config: VniahConfig, load_model: Callable[[], Any] | None = None) -> RunOutcome:
    """Ask every (N, depth, sample) question (resuming, sharded), then score and plot (rank 0).

    ``load_model`` returns a :class:`~longllava.core.pipeline.LongLlava`, called once the haystack
    is open; by default ``config.model`` is loaded on the CPU."""
    return run_task(vniah_task(config), config, load_model)
