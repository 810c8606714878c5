"""``longllava bench scan``: the selective scan of one Mamba mixer, fused CPU kernel vs pure torch.

Times forward and forward+backward over random inputs of a mixer's shapes (tokens x channels x
d_state; the tiny preset is 128 x 8 at the default model's d_state, the released 9B 8192 x 16) and
prints milliseconds per call and the speed-up. The pure-torch scan is what a GPU without mamba-ssm
runs, and what the CPU ran before the kernel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from longllava.core import selective_scan as scan
from longllava.errors import InputError


@dataclass
class ScanBenchConfig:
    tokens: tuple[int, ...] = (512, 2048, 8192)
    channels: int = 128
    d_state: int = 8
    repeats: int = 3
    threads: int | None = None
    seed: int = 0


def _inputs(tokens: int, channels: int, d_state: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, tokens, channels, generator=g)
    dt = torch.rand(1, tokens, channels, generator=g) * 0.1
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    B = torch.randn(1, tokens, d_state, generator=g)
    C = torch.randn(1, tokens, d_state, generator=g)
    return [t.requires_grad_() for t in (x, dt, A, B, C)]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (and, for the kernel, its compilation or cache load)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def run_scan_bench(config: ScanBenchConfig) -> list[dict]:
    if scan.numba is None:
        raise InputError("numba is not installed: `pip install numba` (a dependency of longllava) to get the CPU kernel")
    if min(config.tokens) < 1 or config.channels < 1 or config.d_state < 1 or config.repeats < 1:
        raise InputError("bench scan: tokens, channels, d_state and repeats must all be >= 1")
    if config.threads:
        torch.set_num_threads(config.threads)
    rows = []
    for tokens in config.tokens:
        inputs = _inputs(tokens, config.channels, config.d_state, config.seed)
        grad = torch.randn(1, tokens, config.channels)
        row = {"tokens": tokens, "channels": config.channels, "d_state": config.d_state, "threads": torch.get_num_threads()}
        h0 = torch.zeros(1, config.channels, config.d_state)
        for name, run in (("kernel", scan.cpu_kernel_scan), ("torch", scan.torch_selective_scan)):
            def forward():
                with torch.no_grad():
                    run(*inputs, None, h0)

            def forward_backward():
                y, _ = run(*inputs, None, h0)
                (y * grad).sum().backward()

            row[f"{name}_forward_ms"] = round(_time(forward, config.repeats), 2)
            row[f"{name}_train_ms"] = round(_time(forward_backward, config.repeats), 2)
        row["forward_speedup"] = round(row["torch_forward_ms"] / row["kernel_forward_ms"], 2)
        row["train_speedup"] = round(row["torch_train_ms"] / row["kernel_train_ms"], 2)
        rows.append(row)
    return rows


def format_scan_report(rows: list[dict]) -> str:
    lines = ["| tokens | channels x d_state | threads | forward: kernel / torch (ms) | fwd+bwd: kernel / torch (ms) | speed-up fwd / fwd+bwd |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['channels']} x {r['d_state']} | {r['threads']} | {r['kernel_forward_ms']} / {r['torch_forward_ms']}"
                     f" | {r['kernel_train_ms']} / {r['torch_train_ms']} | {r['forward_speedup']}x / {r['train_speedup']}x |")
    return "\n".join(lines)
