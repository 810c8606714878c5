"""What ``longllava bench model`` runs: its options and the three layer layouts it compares."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from longllava.core.configuration import PRESETS, LongLlavaConfig
from longllava.errors import InputError

VARIANTS = ("hybrid", "attention", "mamba")
# The one preset small enough to materialise on CPU; the released shapes get the analytic memory
# model there (their weights only on CUDA).
CPU_PRESET = "tiny-random"
# ``--preset tiny``, the name the bench's docs have always used, is the core's tiny-random.
PRESET_ALIASES = {"tiny": CPU_PRESET}
DEFAULT_IMAGES = (1, 8, 64, 256, 1000)
QUESTION = "Which of these images shows the abnormality, and where is it?"


@dataclass
class ModelBenchConfig:
    """One benchmark run. ``None`` fields take device-dependent defaults (see :func:`resolve`)."""

    preset: str = CPU_PRESET
    images: tuple[int, ...] = DEFAULT_IMAGES
    variants: tuple[str, ...] = VARIANTS
    chunk_size: int | None = None  # default: the preset's prefill_chunk_size
    max_new_tokens: int | None = None  # default: 1000 on CUDA (the paper's), 32 on CPU
    unchunked_max_images: int | None = None  # one-forward prefill up to this N; default 256 CPU, 8 CUDA
    device: str | None = None  # default: cuda if available
    dtype: str | None = None  # default: see _default_dtype_name
    threads: int | None = None  # torch CPU threads; default: torch's own choice
    time_budget_s: float | None = None  # no new measurement starts after this; the rest are marked skipped
    prefill_budget_s: float | None = None  # a chunked prefill running longer stops; its time is extrapolated
    resume: bool = False  # keep the rows of an earlier run in ``out`` made with the same settings
    seed: int = 0
    # CUDA only: decode throughput at the largest batch within this memory at this context (the
    # paper's "Max TP"), and a packed LoRA training step of the hybrid (0 tokens skips it)
    max_batch_memory_gib: float = 80.0
    context_tokens: int = 100_000
    throughput_steps: int = 20
    training_tokens: int = 16_384
    out: Path = Path("bench_model")

    def resolve(self) -> "ModelBenchConfig":
        preset = PRESET_ALIASES.get(self.preset, self.preset)
        if preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown or not self.variants:
            raise InputError(f"--variants: unknown {unknown or 'empty list'}; choose from {', '.join(VARIANTS)}")
        if not self.images or min(self.images) < 1:
            raise InputError(f"--images must be positive image counts, got {list(self.images)}")
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        cuda = device.startswith("cuda")
        resolved = replace(
            self,
            preset=preset,
            images=tuple(sorted(set(self.images))),
            variants=tuple(v for v in VARIANTS if v in self.variants),
            device=device,
            dtype=self.dtype or _default_dtype_name(preset, cuda),
            max_new_tokens=(1000 if cuda else 32) if self.max_new_tokens is None else self.max_new_tokens,
            unchunked_max_images=(8 if cuda else 256) if self.unchunked_max_images is None else self.unchunked_max_images,
            out=Path(self.out),
        )
        if resolved.max_new_tokens < 2:
            raise InputError("--max-new-tokens must be at least 2: decode speed is (n - 1) / (t_n - t_1)")
        if resolved.time_budget_s is not None and resolved.time_budget_s < 0:
            raise InputError(f"--time-budget must be >= 0 seconds, got {resolved.time_budget_s}")
        if resolved.prefill_budget_s is not None and resolved.prefill_budget_s <= 0:
            raise InputError(f"--prefill-budget must be positive seconds, got {resolved.prefill_budget_s}")
        if resolved.threads is not None and resolved.threads < 1:
            raise InputError(f"--threads must be positive, got {resolved.threads}")
        if resolved.max_batch_memory_gib <= 0 or resolved.context_tokens < 1 or resolved.throughput_steps < 1:
            raise InputError("--max-batch-memory-gib, --context-tokens and the throughput steps must be positive")
        if resolved.training_tokens < 0:
            raise InputError(f"--training-tokens must be >= 0, got {resolved.training_tokens}")
        if resolved.chunk_size is not None and resolved.chunk_size < 1:
            raise InputError(f"--chunk-size must be positive, got {resolved.chunk_size}")
        return resolved


def mamba_kernels_available() -> bool:
    from transformers.utils.import_utils import is_causal_conv1d_available, is_mamba_ssm_available

    return torch.cuda.is_available() and is_mamba_ssm_available() and is_causal_conv1d_available()


def _default_dtype_name(preset: str, cuda: bool) -> str:
    """bfloat16 (the released dtype) for the analytic model and on CUDA (every Mamba path of
    :mod:`longllava.core.mamba` computes its scan in float32 whatever the weights' dtype); float32
    for the tiny preset on CPU."""
    if not cuda:
        return "float32" if preset == CPU_PRESET else "bfloat16"
    return "bfloat16"


def variant_config(config: LongLlavaConfig, variant: str) -> LongLlavaConfig:
    """``config`` with only the attention/Mamba layer layout changed (see :mod:`longllava.bench.model`)."""
    result = copy.deepcopy(config)
    text = result.text_config
    if variant == "attention":
        text.attn_layer_period, text.attn_layer_offset = 1, 0
    elif variant == "mamba":
        text.attn_layer_period, text.attn_layer_offset = text.num_hidden_layers + 1, text.num_hidden_layers
    elif variant != "hybrid":
        raise InputError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    text.validate_architecture()
    return result
