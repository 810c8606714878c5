"""Report of ``longllava bench model``: hybrid/attention ratios, the issue's targets, the markdown
tables, the printed report and the plot."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psutil
import torch

from longllava.bench.settings import CPU_PRESET

# The targets for the tiny preset on CPU at this many images: hybrid / attention ratios.
TARGET_IMAGES = 1000
TARGETS = {"prefill_s": 0.33, "peak_bytes": 1.0, "cache_bytes": 0.15}
MiB = 2**20


@dataclass
class Row:
    """One (variant, N) measurement: a row of ``results.json`` and of the table."""

    variant: str
    images: int
    tokens: int
    vision_s: float | None = None
    prefill_s: float | None = None
    peak_bytes: int | None = None
    decode_tokens_per_s: float | None = None
    cache_bytes: dict[str, int] = field(default_factory=dict)
    analytic_cache_bytes: dict[str, int] = field(default_factory=dict)
    unchunked_prefill_s: float | None = None
    unchunked_peak_bytes: int | None = None
    extrapolated: str | None = None  # set when --prefill-budget stopped the chunked prefill
    error: str | None = None


def hardware_label(device: str) -> str:
    memory_gib = psutil.virtual_memory().total / 2**30
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), host {_cpu_name()}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_name()}, {cores} cores, {memory_gib:.0f} GiB RAM, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """hybrid / attention at each N for which both were measured. Where a prefill was stopped by
    ``--prefill-budget`` the ratios say so in ``notes``, and the cache ratio comes from the analytic
    model (which every complete row checks against the cache object)."""
    by_key = {(r.variant, r.images): r for r in rows}
    result = []
    for images in sorted({r.images for r in rows}):
        hybrid, attention = by_key.get(("hybrid", images)), by_key.get(("attention", images))
        if hybrid is None or attention is None:
            continue
        notes = [f"{r.variant} prefill extrapolated, its peak a lower bound" for r in (hybrid, attention) if r.extrapolated]
        measured = bool(hybrid.cache_bytes and attention.cache_bytes)
        if not measured:
            notes.append("cache+state ratio from the analytic model")
        cache = (hybrid, attention) if measured else (None, None)
        result.append(
            {
                "images": images,
                "prefill_s": _ratio(hybrid.prefill_s, attention.prefill_s),
                "unchunked_prefill_s": _ratio(hybrid.unchunked_prefill_s, attention.unchunked_prefill_s),
                "peak_bytes": _ratio(hybrid.peak_bytes, attention.peak_bytes),
                "unchunked_peak_bytes": _ratio(hybrid.unchunked_peak_bytes, attention.unchunked_peak_bytes),
                "cache_bytes": _ratio(
                    (hybrid.cache_bytes if measured else hybrid.analytic_cache_bytes).get("total"),
                    (attention.cache_bytes if measured else attention.analytic_cache_bytes).get("total"),
                ),
                "decode_tokens_per_s": _ratio(hybrid.decode_tokens_per_s, attention.decode_tokens_per_s),
                "notes": notes,
            }
        )
    return result


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets (tiny preset, CPU, N=1000, chunked prefill): met (True), not met (False)
    or undetermined (None), each with the basis of its ratio. A prefill stopped by its budget has an
    extrapolated time and a lower-bound peak, so a peak ratio over it decides only one way."""
    applicable = results["preset"] == CPU_PRESET and results["device"] == "cpu"
    at_target = [r for r in results["ratios"] if r["images"] == TARGET_IMAGES]
    if not applicable or not at_target:
        return {"evaluated": False, "why": f"targets apply to the tiny preset on CPU at N={TARGET_IMAGES} with hybrid and attention"}
    ratio = at_target[0]
    stopped = {r["variant"] for r in results["rows"] if r["images"] == TARGET_IMAGES and r["extrapolated"]}
    checks = {}
    for key, limit in TARGETS.items():
        value = ratio[key]
        met = None if value is None else value <= limit
        basis = "measured"
        if key == "prefill_s" and stopped:
            basis = f"{' and '.join(sorted(stopped))} prefill time extrapolated"
        elif key == "peak_bytes" and stopped and value is not None:
            if stopped == {"attention"}:  # lower-bound denominator: the ratio is an upper bound
                basis, met = "attention peak a lower bound: ratio is an upper bound", True if met else None
            elif stopped == {"hybrid"}:
                basis, met = "hybrid peak a lower bound: ratio is a lower bound", None if met else False
            else:
                basis, met = "both peaks lower bounds", None
        elif key == "cache_bytes" and "cache+state ratio from the analytic model" in ratio["notes"]:
            basis = "analytic model, equal to the measured cache in every complete row"
        checks[key] = {"ratio": value, "limit": limit, "met": met, "basis": basis}
    return {"evaluated": True, "images": TARGET_IMAGES, "checks": checks}


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "—" if value is None else f"{value / scale:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    if results["mode"] == "analytic":
        return analytic_markdown(results)
    lines = [
        "| variant | images | tokens | vision s | prefill s (chunked) | prefill s (one pass) | decode tok/s "
        "| peak MiB (chunked) | peak MiB (one pass) | cache+state MiB | analytic MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        if r["error"]:
            lines.append(f"| {r['variant']} | {r['images']} | {r['tokens']} | {_fmt(r['vision_s'])} | {r['error']} |||||||")
            continue
        estimated = "~" if r["extrapolated"] else ""  # extrapolated time, lower-bound peak
        lower = ">=" if r["extrapolated"] else ""
        lines.append(
            f"| {r['variant']} | {r['images']} | {r['tokens']} | {_fmt(r['vision_s'])} | {estimated}{_fmt(r['prefill_s'])} "
            f"| {_fmt(r['unchunked_prefill_s'])} | {_fmt(r['decode_tokens_per_s'], digits=1)} "
            f"| {lower}{_fmt(r['peak_bytes'], MiB, 1)} | {_fmt(r['unchunked_peak_bytes'], MiB, 1)} "
            f"| {_fmt(r['cache_bytes'].get('total'), MiB, 3)} | {_fmt(r['analytic_cache_bytes']['total'], MiB, 3)} |"
        )
    if results["ratios"]:
        lines += [
            "",
            "| images | hybrid/attention prefill (chunked) | (one pass) | peak (chunked) | peak (one pass) | cache+state | decode tok/s | notes |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for q in results["ratios"]:
            lines.append(
                f"| {q['images']} | {_fmt(q['prefill_s'], digits=3)} | {_fmt(q['unchunked_prefill_s'], digits=3)} "
                f"| {_fmt(q['peak_bytes'], digits=3)} | {_fmt(q['unchunked_peak_bytes'], digits=3)} "
                f"| {_fmt(q['cache_bytes'], digits=3)} | {_fmt(q['decode_tokens_per_s'], digits=3)} | {'; '.join(q['notes'])} |"
            )
    extrapolated = [r for r in results["rows"] if r["extrapolated"]]
    if extrapolated:
        lines.append("")
        lines += [f"~ / >= {r['variant']} at {r['images']} images: {r['extrapolated']}" for r in extrapolated]
    return "\n".join(lines)


def analytic_markdown(results: dict[str, Any]) -> str:
    images = results["images"]
    head = "| variant | layers | params (total / active) | KV bytes/token | Mamba state bytes | " + " | ".join(
        f"cache+state GiB @ {n} img" for n in images
    )
    lines = [head + " |", "|---|---|---:|---:|---:|" + "---:|" * len(images)]
    for name, summary in results["variants"].items():
        params = summary["params"]
        cells = " | ".join(f"{b['total'] / 2**30:.3f}" for b in summary["analytic_cache_bytes"])
        lines.append(
            f"| {name} | {summary['layers']} | {params['total'] / 1e9:.2f}B / {params['active'] / 1e9:.2f}B "
            f"| {summary['kv_bytes_per_token']:,} | {summary['state_bytes']:,} | {cells} |"
        )
    return "\n".join(lines)


def format_report(results: dict[str, Any]) -> str:
    """Table, hybrid/attention ratios and target verdicts as printed by the CLI."""
    lines = [f"longllava bench model --preset {results['preset']} on {results['hardware']} ({results['dtype']})"]
    if results["mode"] == "analytic":
        lines += [results["note"], "", markdown_table(results)]
        return "\n".join(lines)
    vision = results.get("vision_per_image")
    if vision:
        lines.append(
            f"vision path per image (micro-batch of {vision['batch']}): CLIP {vision['clip_s'] * 1e3:.2f} ms, "
            f"pooling {vision['pooling_s'] * 1e3:.3f} ms, projector {vision['projector_s'] * 1e3:.3f} ms"
        )
    lines += [
        f"prefill chunk: {results['chunk_size']} tokens; decode: {results['decode_tokens']} tokens, "
        f"(n-1)/(t_n-t_1); mamba-ssm kernels: {results['mamba_kernels']}",
        "",
        markdown_table(results),
        "",
    ]
    for q in results["ratios"]:
        lines.append(
            f"N={q['images']:>5}: hybrid/attention prefill {_fmt(q['prefill_s'], digits=3)}, "
            f"peak {_fmt(q['peak_bytes'], digits=3)}, cache+state {_fmt(q['cache_bytes'], digits=3)}, "
            f"decode tok/s {_fmt(q['decode_tokens_per_s'], digits=3)}" + (f" ({'; '.join(q['notes'])})" if q["notes"] else "")
        )
    targets = results["targets"]
    if targets["evaluated"]:
        for key, check in targets["checks"].items():
            verdict = {True: "MET", False: "NOT MET", None: "UNDETERMINED"}[check["met"]]
            lines.append(
                f"target at N={targets['images']}: hybrid/attention {key} {_fmt(check['ratio'], digits=3)} "
                f"<= {check['limit']}: {verdict} ({check['basis']})"
            )
    else:
        lines.append(f"targets not evaluated: {targets['why']}")
    mismatched = [r for r in results["rows"] if r["cache_bytes"] and r["cache_bytes"]["total"] != r["analytic_cache_bytes"]["total"]]
    lines.append(
        "measured cache+state bytes equal the analytic model in every row"
        if not mismatched
        else f"measured cache+state differs from the analytic model in {len(mismatched)} row(s) (see results.json)"
    )
    lines.append(f"kernels that ran: {results.get('kernels', {})}")
    for entry in results.get("max_batch", []):
        head = (f"largest batch within {entry['cap_gib']:g} GiB at {entry['context_tokens']} tokens of context, "
                f"{entry['variant']}: {entry['batch']} sequences")
        lines.append(f"{head}: {entry['error']}" if "error" in entry else
                     f"{head}, {entry['tokens_per_s']:.0f} tokens/s ({entry['ms_per_step']:.1f} ms a step, {entry['decode_path']})")
    training = results.get("training")
    if training:
        lines.append(
            f"packed LoRA training step ({training['tokens']} tokens, {training['samples']} samples, {training['dtype']}): "
            + (training["error"] if "error" in training else f"{training['tokens_per_s']:.0f} tokens/s")
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Time and memory against N (log-log), one colour per variant; dashed = one-pass prefill."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"hybrid": "tab:green", "attention": "tab:red", "mamba": "tab:blue"}
    analytic = results["mode"] == "analytic"
    fig, axes = plt.subplots(1, 1 if analytic else 3, figsize=(6 if analytic else 16, 4.5), squeeze=False)
    axes = axes[0]
    for name in results["variants"]:
        colour = colours[name]
        if analytic:
            cache = [b["total"] / MiB for b in results["variants"][name]["analytic_cache_bytes"]]
            axes[0].plot(results["images"], cache, "o-", color=colour, label=f"{name} cache+state (analytic)")
            continue
        rows = [r for r in results["rows"] if r["variant"] == name and not r["error"]]
        if not rows:
            continue
        n = [r["images"] for r in rows]
        axes[0].plot(n, [r["prefill_s"] for r in rows], "o-", color=colour, label=f"{name} chunked")
        for r in rows:
            if r["extrapolated"]:
                axes[0].annotate("extrapolated", (r["images"], r["prefill_s"]), fontsize=7, color=colour)
                axes[1].annotate("lower bound", (r["images"], r["peak_bytes"] / MiB), fontsize=7, color=colour)
        one = [(r["images"], r["unchunked_prefill_s"]) for r in rows if r["unchunked_prefill_s"] is not None]
        if one:
            axes[0].plot(*zip(*one), "s--", color=colour, alpha=0.6, label=f"{name} one pass")
        axes[1].plot(n, [max(r["peak_bytes"], 1) / MiB for r in rows], "o-", color=colour, label=f"{name} peak (chunked)")
        one = [(r["images"], max(r["unchunked_peak_bytes"], 1) / MiB) for r in rows if r["unchunked_peak_bytes"] is not None]
        if one:
            axes[1].plot(*zip(*one), "s--", color=colour, alpha=0.6, label=f"{name} peak (one pass)")
        cached = [r for r in rows if r["cache_bytes"]]
        axes[1].plot([r["images"] for r in cached], [r["cache_bytes"]["total"] / MiB for r in cached], "^:", color=colour, label=f"{name} cache+state")
        axes[2].plot([r["images"] for r in cached], [r["decode_tokens_per_s"] for r in cached], "o-", color=colour, label=name)
    titles = (
        ["analytic cache + state (MiB)"]
        if analytic
        else ["prefill seconds", "memory MiB: peak above model (solid/dashed), cache+state (dotted)", "decode tokens/s"]
    )
    for axis, title in zip(axes, titles):
        axis.set_title(title, fontsize=9)
        if not axis.has_data():  # every run skipped or out of memory
            axis.text(0.5, 0.5, "nothing measured", ha="center", transform=axis.transAxes)
            continue
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("images (144 tokens each)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle(f"longllava bench model --preset {results['preset']} · {results['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
