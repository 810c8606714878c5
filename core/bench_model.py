"""``longllava bench model``: the hybrid against a pure transformer and a pure Mamba model.

The paper's central efficiency claim (Table 1, Figure 4): at equal width and depth, a 1:7
attention:Mamba hybrid prefills long multi-image prompts faster, decodes faster and keeps a far
smaller cache than a transformer. This module measures it on the user's own hardware.

What is compared. Three language models built from one preset config by changing only the layer
layout (widths, depth, MoE layout and vision path unchanged), each with seeded random weights:

* ``hybrid``    the preset as is (tiny and released: attention at layer 4 of every 8, Mamba elsewhere);
* ``attention`` every layer attention (``attn_layer_period=1, attn_layer_offset=0``);
* ``mamba``     no attention layer (``attn_layer_period=L+1, attn_layer_offset=L``: JambaConfig only
  requires offset < period, and no layer index 0..L-1 reaches offset L).

What is measured, for N images (one ordered stack of N frames rendered by the protocol, 144 tokens
each, plus a short question, in the chat template):

* vision path: ``embed_inputs`` on N random images (CLIP in micro-batches, 2D pooling, projector),
  plus a per-image breakdown (CLIP / pooling / projector) of one micro-batch. The language-model
  timings below start from those embeddings (``inputs_embeds``), so the vision path, identical for
  all variants, is reported once per row and never mixed into prefill time;
* prefill seconds, chunked (``chunk_size`` tokens per forward, Mamba state and KV carried between
  chunks: the toolkit's inference path) and, up to ``unchunked_max_images``, in one forward, to
  show what chunking does to time and memory;
* decode tokens/s, the paper's ``(n - 1) / (t_n - t_1)``: ``t_k`` is the time until token k exists,
  token 1 coming from the prefill logits; greedy, never stopping at EOS;
* peak memory above the level at the start of the prefill: on CUDA the allocator's peak, on CPU
  the process RSS sampled by a thread every ``SAMPLE_INTERVAL_S`` (freed heap is handed back to
  the OS before each measurement so that the baseline is honest);
* cache + state bytes: the sum of tensor bytes of the cache object after prefill (attention K/V,
  Mamba conv and SSM states), next to the analytic model :func:`analytic_cache_bytes`.

``--preset longllava-9b`` without CUDA reports the analytic memory model only (parameters counted
on the meta device, KV bytes per token, Mamba state bytes, cache + state at each N).

Long runs: ``results.json`` is rewritten after every measurement and ``resume`` keeps the rows of
an earlier run made with the same settings; ``time_budget_s`` starts no measurement after that
many seconds; ``prefill_budget_s`` stops a chunked prefill that runs longer (after at least 3
chunks) and extrapolates its time from the measured chunks; such rows are labelled everywhere
(``~`` time, ``>=`` peak, a note in the ratios) and carry no cache or decode figures.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import math
import os
import platform
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from longllava.core import protocol, selective_scan
from longllava.core.checkpoint import preset_config
from longllava.core.configuration import LongLlavaConfig
from longllava.core.decode import StaticDecoder
from longllava.core.modeling import LongLlavaForConditionalGeneration, pool_image_features
from longllava.core.processor import LongLlavaProcessor
from longllava.core.selective_scan import KERNELS_RUN
from longllava.core.tokenizer import load_tiny_tokenizer
from longllava.errors import InputError

VARIANTS = ("hybrid", "attention", "mamba")
PRESETS = {"tiny": "tiny-random", "longllava-9b": "longllava-9b", "longllava-a13b": "longllava-a13b"}
DEFAULT_IMAGES = (1, 8, 64, 256, 1000)
QUESTION = "Which of these images shows the abnormality, and where is it?"
SAMPLE_INTERVAL_S = 0.005
# Short prefills are repeated (best of up to REPEATS while their total stays under REPEAT_BELOW_S):
# one-off costs such as oneDNN primitive creation for a new shape would otherwise dominate them.
REPEATS, REPEAT_BELOW_S = 3, 2.0
# The targets for the tiny preset on CPU at this many images: hybrid / attention ratios.
TARGET_IMAGES = 1000
TARGETS = {"prefill_s": 0.33, "peak_bytes": 1.0, "cache_bytes": 0.15}
MiB = 2**20
GiB = 2**30
DECODE_PATHS: set[str] = set()  # which decode paths ran (results.json "kernels")


@dataclass
class ModelBenchConfig:
    """One benchmark run. ``None`` fields take device-dependent defaults (see :func:`resolve`)."""

    preset: str = "tiny"
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
    # CUDA only: decode throughput at the largest batch within this memory at this context
    max_batch_memory_gib: float = 80.0
    context_tokens: int = 100_000
    throughput_steps: int = 20
    training_tokens: int = 16_384  # the packed LoRA training step (hybrid); 0 skips it
    out: Path = Path("bench_model")

    def resolve(self) -> "ModelBenchConfig":
        if self.preset not in PRESETS:
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
            images=tuple(sorted(set(self.images))),
            variants=tuple(v for v in VARIANTS if v in self.variants),
            device=device,
            dtype=self.dtype or _default_dtype_name(self.preset, cuda),
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
        return "float32" if preset == "tiny" else "bfloat16"
    return "bfloat16"


# -- the three layouts and their analytic memory model --------------------------------------------
def variant_config(config: LongLlavaConfig, variant: str) -> LongLlavaConfig:
    """``config`` with only the attention/Mamba layer layout changed (see module docstring)."""
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


def analytic_cache_bytes(text_config, tokens: int, dtype_bytes: int, batch: int = 1) -> dict[str, int]:
    """Cache + state after ``tokens`` tokens: K and V of every attention layer grow with the
    sequence; every Mamba layer keeps a conv window (inner x d_conv) and an SSM state (inner x d_state)
    whatever the length."""
    kinds = text_config.layers_block_type
    head_dim = text_config.hidden_size // text_config.num_attention_heads
    inner = text_config.mamba_expand * text_config.hidden_size
    kv = 2 * kinds.count("attention") * batch * text_config.num_key_value_heads * head_dim * tokens * dtype_bytes
    state = kinds.count("mamba") * batch * inner * (text_config.mamba_d_conv + text_config.mamba_d_state) * dtype_bytes
    return {"kv": kv, "state": state, "total": kv + state}


def measured_cache_bytes(cache: DynamicCache) -> dict[str, int]:
    """Bytes held by a cache object: K/V tensors of attention layers, conv + SSM states of Mamba layers."""
    kv = state = 0
    for layer in cache.layers:
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            tensors = [*layer.conv_states.values(), *layer.recurrent_states.values()]
            state += sum(t.numel() * t.element_size() for t in tensors if t is not None)
        else:
            kv += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values) if t is not None)
    return {"kv": kv, "state": state, "total": kv + state}


def parameter_counts(config: LongLlavaConfig) -> dict[str, int]:
    """Total, active (top-k of the experts) and vision-path parameters, counted on the meta device."""
    text = config.text_config
    with torch.device("meta"):
        model = LongLlavaForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.vision_tower.parameters())
    vision += sum(p.numel() for p in model.multi_modal_projector.parameters())
    inactive = 0
    for layer in model.language_model.model.layers:
        experts = getattr(layer.feed_forward, "experts", None)
        if experts is not None:
            per_expert = sum(p.numel() for p in experts.parameters()) // text.num_experts
            inactive += per_expert * (text.num_experts - text.num_experts_per_tok)
    return {"total": total, "active": total - inactive, "vision_and_projector": vision}


def variant_summary(config: LongLlavaConfig, dtype_bytes: int) -> dict[str, Any]:
    text = config.text_config
    kinds = text.layers_block_type
    return {
        "layers": "".join("A" if k == "attention" else "M" for k in kinds),
        "attention_layers": kinds.count("attention"),
        "mamba_layers": kinds.count("mamba"),
        "params": parameter_counts(config),
        "kv_bytes_per_token": analytic_cache_bytes(text, 1, dtype_bytes)["kv"],
        "state_bytes": analytic_cache_bytes(text, 0, dtype_bytes)["state"],
    }


# -- inputs ---------------------------------------------------------------------------------------
def prompt_ids(processor: LongLlavaProcessor, num_images: int) -> torch.Tensor:
    """(1, T) ids of a chat prompt with one ordered stack of ``num_images`` frames and the question."""
    message = protocol.user_message([protocol.StackInput([None] * num_images)], QUESTION)
    return torch.tensor([processor.tokenize(protocol.chat_prompt(message.text))])


def random_pixels(num_images: int, config: LongLlavaConfig, device: str, seed: int) -> torch.Tensor:
    size = config.vision_config.image_size
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(num_images, 3, size, size, generator=generator, device=device)


# -- measurement ----------------------------------------------------------------------------------
def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _return_freed_memory(device: str) -> None:
    """Hand freed allocator memory back so the next baseline is what is really in use."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif platform.system() == "Linux":
        # glibc keeps freed heap pages mapped; without this a later run could reuse them unseen.
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _release_freed_memory(device: str) -> None:
    """Also collect reference cycles (slow with transformers loaded: once per measurement, not per run)."""
    gc.collect()
    _return_freed_memory(device)


class PeakMemory:
    """Peak memory above the level at entry: the CUDA allocator's peak, or the process RSS sampled
    by a background thread on CPU (torch ops release the GIL, so the sampler keeps running)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        _return_freed_memory(self.device)
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._process = psutil.Process()
            self._baseline = self._peak = self._process.memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._baseline
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
            self.peak_bytes = self._peak - self._baseline


def _lm_step(language_model, cache: DynamicCache, start: int, **inputs) -> torch.Tensor:
    """One forward of ``inputs_embeds`` or ``input_ids`` at positions ``start...``; last logits."""
    tokens = next(iter(inputs.values()))
    position_ids = torch.arange(start, start + tokens.shape[1], device=tokens.device)[None]
    # An unpadded batch of one needs no mask; passing the per-layer-type mapping for a model without
    # attention keeps JambaModel from building a causal mask, which asks the cache for a length that
    # only attention layers track (it raises for a pure-Mamba cache).
    has_attention = "attention" in language_model.config.layers_block_type
    mask = None if has_attention else {"linear_attention": None}
    out = language_model(
        **inputs, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=1
    )
    return out.logits[:, -1]


@torch.no_grad()
def prefill_chunks(
    language_model, inputs_embeds: torch.Tensor, chunk_size: int, progress: bool = False
) -> Iterator[tuple[DynamicCache, torch.Tensor, int]]:
    """Chunked prefill from embeddings, as ``LongLlavaForConditionalGeneration.prefill`` does from
    ids: Mamba state and KV carried from chunk to chunk. Yields (cache, last logits, tokens done)
    after every chunk."""
    cache = DynamicCache(config=language_model.config)
    length = inputs_embeds.shape[1]
    starts = range(0, length, chunk_size)
    for start in tqdm(starts, desc="prefill chunks", unit="chunk", leave=False, disable=not progress or len(starts) < 2):
        logits = _lm_step(language_model, cache, start, inputs_embeds=inputs_embeds[:, start : start + chunk_size])
        yield cache, logits, min(length, start + chunk_size)


def prefill_embeds(
    language_model, inputs_embeds: torch.Tensor, chunk_size: int, progress: bool = False
) -> tuple[DynamicCache, torch.Tensor]:
    """The whole chunked prefill: the cache and the last position's logits."""
    for cache, logits, _ in prefill_chunks(language_model, inputs_embeds, chunk_size, progress):
        pass
    return cache, logits


def extrapolate_prefill_seconds(chunk_seconds: Sequence[float], length: int, chunk_size: int) -> float:
    """Measured chunk times plus the unmeasured chunks estimated from a least-squares line through
    the seconds of chunks 1.. against their index (attention work grows linearly with the KV before
    the chunk; chunk 0 has none), the last chunk scaled by its share of a full chunk."""
    if len(chunk_seconds) < 3:
        raise ValueError(f"need at least 3 measured chunks to extrapolate, got {len(chunk_seconds)}")
    slope, intercept = np.polyfit(np.arange(1, len(chunk_seconds)), np.asarray(chunk_seconds[1:]), 1)
    rest = 0.0
    for index in range(len(chunk_seconds), math.ceil(length / chunk_size)):
        share = min(chunk_size, length - index * chunk_size) / chunk_size
        rest += share * (intercept + slope * index)
    return float(sum(chunk_seconds) + rest)


@dataclass
class PrefillTiming:
    cache: DynamicCache | None  # None when the prefill was stopped by its budget
    logits: torch.Tensor | None
    seconds: float  # measured, or measured + extrapolated when stopped
    peak_bytes: int  # a lower bound when stopped (the K/V cache grows with every chunk)
    measured_chunks: int
    total_chunks: int

    @property
    def complete(self) -> bool:
        return self.measured_chunks == self.total_chunks


def timed_prefill(
    language_model,
    inputs_embeds: torch.Tensor,
    chunk_size: int,
    device: str,
    progress: bool = False,
    budget_s: float | None = None,
) -> PrefillTiming:
    """:func:`prefill_chunks`, timed: the lowest time and peak over up to ``REPEATS`` runs while the
    runs stay short, a single run otherwise. With ``budget_s``, a prefill still running after that
    many seconds (and at least 3 chunks) stops and its time is extrapolated
    (:func:`extrapolate_prefill_seconds`)."""
    length = inputs_embeds.shape[1]
    total_chunks = math.ceil(length / chunk_size)
    best: PrefillTiming | None = None
    spent = 0.0
    for _ in range(REPEATS):
        cache = logits = None  # the previous run's cache is freed before the next baseline
        if best is not None:
            best.cache = best.logits = None
        chunk_seconds: list[float] = []
        with PeakMemory(device) as memory:
            began = last = time.perf_counter()
            for cache, logits, done in prefill_chunks(language_model, inputs_embeds, chunk_size, progress):
                _synchronize(device)
                now = time.perf_counter()
                chunk_seconds.append(now - last)
                last = now
                if budget_s is not None and now - began > budget_s and len(chunk_seconds) >= 3 and done < length:
                    break
            seconds = time.perf_counter() - began
        if len(chunk_seconds) < total_chunks:
            seconds = extrapolate_prefill_seconds(chunk_seconds, length, chunk_size)
            return PrefillTiming(None, None, seconds, memory.peak_bytes, len(chunk_seconds), total_chunks)
        if best is None:
            best = PrefillTiming(cache, logits, seconds, memory.peak_bytes, total_chunks, total_chunks)
        else:  # every run leaves the same cache; keep the last
            best.cache, best.logits = cache, logits
            best.seconds, best.peak_bytes = min(best.seconds, seconds), min(best.peak_bytes, memory.peak_bytes)
        spent += seconds
        if spent >= REPEAT_BELOW_S:
            break
    return best


@torch.no_grad()
def warm_up(model, device: str) -> None:
    """A short untimed prefill + decode: lazy initialisation must not land in the first measurement."""
    language_model = model.language_model
    embeds = torch.randn(1, 64, language_model.config.hidden_size, device=device, dtype=language_model.dtype)
    cache, logits = prefill_embeds(language_model, embeds, 32)
    decode_seconds(model, cache, logits, embeds.shape[1], 4)


@torch.no_grad()
def decode_seconds(model, cache: DynamicCache, logits: torch.Tensor, start: int, new_tokens: int) -> float:
    """Seconds from token 1 (taken from the prefill logits) to token ``new_tokens``: t_n - t_1.
    On CUDA the decode runs as generation does there: static buffers, the step a CUDA graph
    (:class:`~longllava.core.decode.StaticDecoder`); elsewhere over the dynamic cache."""
    device = str(logits.device)
    token = logits.argmax(-1)
    decoder = None
    if device.startswith("cuda"):
        decoder = StaticDecoder(model, token.shape[0], start + new_tokens, device)
        decoder.adopt(cache, torch.ones(token.shape[0], start, dtype=torch.long, device=device))
        cache = None
    _synchronize(device)
    began = time.perf_counter()
    for step in range(new_tokens - 1):
        if decoder is not None:
            token = decoder.step(token).argmax(-1)
        else:
            token = _lm_step(model.language_model, cache, start + step, input_ids=token[:, None]).argmax(-1)
    _synchronize(device)
    DECODE_PATHS.add("dynamic-eager" if decoder is None else decoder.path)
    return time.perf_counter() - began


@torch.no_grad()
def vision_breakdown(model: LongLlavaForConditionalGeneration, pixel_values: torch.Tensor) -> dict[str, float]:
    """Seconds per image of each stage of ``get_image_features`` on one micro-batch."""
    config, device = model.config, str(pixel_values.device)
    seconds = {}

    def timed(name, fn):
        _synchronize(device)
        began = time.perf_counter()
        result = fn()
        _synchronize(device)
        seconds[name] = (time.perf_counter() - began) / pixel_values.shape[0]
        return result

    hidden = timed("clip_s", lambda: model.vision_tower(pixel_values.to(model.vision_tower.dtype), output_hidden_states=True))
    patches = hidden.hidden_states[config.vision_feature_layer][:, 1:]
    pooled = timed("pooling_s", lambda: pool_image_features(patches, config.pooling, config.patch_grid))
    timed("projector_s", lambda: model.multi_modal_projector(pooled))
    seconds["total_s"] = sum(seconds.values())
    return seconds


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_variant(config: LongLlavaConfig, variant: str, device: str, dtype: torch.dtype, seed: int):
    """A seeded random model with the variant's layout, created directly on ``device`` in ``dtype``
    (a 9B model is never materialised in float32 first)."""
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype):
        model = LongLlavaForConditionalGeneration(variant_config(config, variant))
    return model.eval()


@dataclass
class Row:
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


def measure(model, processor, variant: str, num_images: int, settings: ModelBenchConfig, chunk_size: int) -> Row:
    """One (variant, N) measurement; see the module docstring for what each field means."""
    device = settings.device
    ids = prompt_ids(processor, num_images).to(device)
    lm = model.language_model
    dtype_bytes = lm.dtype.itemsize
    row = Row(variant, num_images, ids.shape[1], analytic_cache_bytes=analytic_cache_bytes(lm.config, ids.shape[1], dtype_bytes))
    try:
        pixels = random_pixels(num_images, model.config, device, settings.seed)
        _synchronize(device)
        began = time.perf_counter()
        with torch.no_grad():
            embeds = model.embed_inputs(ids, pixels)
        _synchronize(device)
        row.vision_s = time.perf_counter() - began
        del pixels
        if num_images <= settings.unchunked_max_images:
            one_pass = timed_prefill(lm, embeds, row.tokens, device)
            row.unchunked_prefill_s, row.unchunked_peak_bytes = one_pass.seconds, one_pass.peak_bytes
            one_pass = None
        timing = timed_prefill(lm, embeds, chunk_size, device, progress=True, budget_s=settings.prefill_budget_s)
        row.prefill_s, row.peak_bytes = timing.seconds, timing.peak_bytes
        if not timing.complete:
            row.extrapolated = (
                f"--prefill-budget {settings.prefill_budget_s:g} s: {timing.measured_chunks} of {timing.total_chunks} "
                "chunks measured, the rest extrapolated; peak is a lower bound; no cache or decode figures"
            )
            return row
        row.cache_bytes = measured_cache_bytes(timing.cache)
        seconds = decode_seconds(model, timing.cache, timing.logits, row.tokens, settings.max_new_tokens)
        row.decode_tokens_per_s = (settings.max_new_tokens - 1) / seconds
    except torch.cuda.OutOfMemoryError as error:  # recorded, as the paper records OOM entries
        row.error = f"out of memory: {str(error).splitlines()[0]}"
    finally:
        pixels = embeds = timing = None
        _release_freed_memory(device)
    return row


# -- largest-batch decode throughput (the paper's "Max TP") and a packed LoRA training step -------
def decode_bytes_per_sequence(text_config, context_tokens: int, new_tokens: int, dtype_bytes: int) -> int:
    """What one more sequence adds to a decode batch: its cache + state at the full length (the
    static K/V buffers are preallocated to it) and its float32 logits (the step's and the copy
    handed back)."""
    cache = analytic_cache_bytes(text_config, context_tokens + new_tokens, dtype_bytes)["total"]
    return cache + 2 * 4 * text_config.vocab_size


def largest_batch(config: LongLlavaConfig, context_tokens: int, new_tokens: int, dtype_bytes: int, cap_bytes: int) -> dict[str, int]:
    """The most sequences whose weights + caches fit in ``cap_bytes`` by the analytic model."""
    weights = parameter_counts(config)["total"] * dtype_bytes
    per_sequence = decode_bytes_per_sequence(config.text_config, context_tokens, new_tokens, dtype_bytes)
    return {"batch": max(0, (cap_bytes - weights) // per_sequence), "weights_bytes": weights, "bytes_per_sequence": per_sequence}


@torch.no_grad()
def max_batch_throughput(model, variant: str, context_tokens: int, cap_gib: float, steps: int, device: str) -> dict[str, Any]:
    """Decode tokens/s of the largest batch within ``cap_gib`` at ``context_tokens`` of context.

    The context is synthesised, as a 100K-token prefill per sequence would take the whole budget:
    a short real prefill (Mamba states, which are fixed-size), then every attention layer's K/V
    buffer filled with random values over the full context, all of it visible. Two untimed steps
    (the eager one and, on CUDA, the graph capture), then ``steps`` timed ones."""
    lm = model.language_model
    dtype_bytes = lm.dtype.itemsize
    sizing = largest_batch(model.config, context_tokens, steps + 2, dtype_bytes, int(cap_gib * GiB))
    result: dict[str, Any] = {"variant": variant, "context_tokens": context_tokens, "cap_gib": cap_gib, **sizing}
    if sizing["batch"] < 1:
        result["error"] = f"the weights ({sizing['weights_bytes'] / GiB:.1f} GiB) leave no room for one sequence"
        return result
    batch = sizing["batch"]
    with _out_of_memory_recorded(result, device):
        decoder = StaticDecoder(model, batch, context_tokens + steps + 2, device)
        prompt = torch.randint(3, lm.config.vocab_size, (batch, 16), device=device)
        token = decoder.prefill(prompt).argmax(-1)
        for layer in decoder.cache.layers:
            if not isinstance(layer, LinearAttentionCacheLayerMixin):
                layer.keys[:, :, :context_tokens].normal_()
                layer.values[:, :, :context_tokens].normal_()
                layer.cumulative_length.fill_(context_tokens)
        decoder.visible[..., :context_tokens] = True
        decoder.slot.fill_(context_tokens)
        decoder.length = context_tokens
        for _ in range(2):
            token = decoder.step(token).argmax(-1)
        _synchronize(device)
        began = time.perf_counter()
        for _ in range(steps):
            token = decoder.step(token).argmax(-1)
        _synchronize(device)
        seconds = time.perf_counter() - began
        result.update(tokens_per_s=batch * steps / seconds, ms_per_step=1000 * seconds / steps, decode_path=decoder.path)
    return result


@contextmanager
def _out_of_memory_recorded(result: dict[str, Any], device: str) -> Iterator[None]:
    """An out-of-memory error becomes ``result["error"]`` (as the paper records OOM entries)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        result["error"] = f"out of memory: {str(error).splitlines()[0]}"
    finally:
        _release_freed_memory(device)


def packed_lora_training_step(model, tokens: int, samples: int, device: str) -> dict[str, Any]:
    """Tokens/s of one LoRA training step (forward + backward, gradient checkpointing) over one row
    of ``tokens`` tokens packed with ``samples`` samples (position ids restarting at 0), after an
    untimed step. Adds LoRA adapters to ``model`` in place: run it last."""
    from peft import LoraConfig, get_peft_model

    lm = model.language_model
    lm.activation_checkpointing_enable()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "in_proj", "x_proj", "dt_proj", "out_proj"]
    peft_lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    ids = torch.randint(3, lm.config.vocab_size, (1, tokens), device=device)
    positions = torch.cat([torch.arange(len(part)) for part in torch.arange(tokens).chunk(samples)])[None].to(device)
    result: dict[str, Any] = {"tokens": tokens, "samples": samples, "dtype": str(lm.dtype).removeprefix("torch.")}
    with _out_of_memory_recorded(result, device):
        for timed in (False, True):
            _synchronize(device)
            began = time.perf_counter()
            loss = peft_lm(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
            loss.backward()
            _synchronize(device)
            if timed:
                result.update(seconds=time.perf_counter() - began, loss=float(loss.detach()))
                result["tokens_per_s"] = tokens / result["seconds"]
            peft_lm.zero_grad(set_to_none=True)
            loss = None
    return result


# -- report ---------------------------------------------------------------------------------------
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
    applicable = results["preset"] == "tiny" and results["device"] == "cpu"
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


# Settings that change what a measurement means: a resumed run must share them.
MEASUREMENT_SETTINGS = ("preset", "chunk_size", "max_new_tokens", "unchunked_max_images", "device", "dtype", "threads", "seed")


def earlier_rows(settings: ModelBenchConfig, results: dict[str, Any]) -> dict[tuple[str, int], Row]:
    """Measured rows of an earlier run in ``settings.out`` (``--resume``); its vision breakdown is
    copied into ``results``. Skipped rows and rows that ran out of memory are measured again."""
    path = settings.out / "results.json"
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
        saved = earlier["settings"]
        rows = [Row(**row) for row in earlier["rows"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"--resume: {path} is not a results file of this benchmark ({error}); use another --out") from error
    different = [key for key in MEASUREMENT_SETTINGS if saved.get(key) != getattr(settings, key)]
    if different:
        details = ", ".join(f"{key}: {saved.get(key)!r} there, {getattr(settings, key)!r} now" for key in different)
        raise InputError(f"--resume: {path} was measured with other settings ({details}); use the same options or another --out")
    if "vision_per_image" in earlier:
        results["vision_per_image"] = earlier["vision_per_image"]
    return {(row.variant, row.images): row for row in rows if row.error is None}


def _write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))


def run_model_bench(settings: ModelBenchConfig) -> dict[str, Any]:
    """Run the benchmark, writing ``results.json`` (after every measurement, so a long run that is
    stopped keeps what it measured), ``results.md`` and ``bench_model.png`` into ``settings.out``."""
    settings = settings.resolve()
    with _torch_threads(settings.threads):
        return _run(settings)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run(settings: ModelBenchConfig) -> dict[str, Any]:
    config = preset_config(PRESETS[settings.preset])
    dtype = getattr(torch, settings.dtype)
    dtype_bytes = torch.empty(0, dtype=dtype).element_size()
    analytic_only = settings.preset != "tiny" and not settings.device.startswith("cuda")
    variants = {v: variant_summary(variant_config(config, v), dtype_bytes) for v in settings.variants}
    results: dict[str, Any] = {
        "preset": settings.preset,
        "mode": "analytic" if analytic_only else "measured",
        "device": settings.device,
        "dtype": settings.dtype,
        "hardware": hardware_label(settings.device),
        "images": list(settings.images),
        "tokens_per_image": config.image_seq_length,
        "question": QUESTION,
        "variants": variants,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "rows": [],
        "ratios": [],
    }
    out = settings.out
    if analytic_only:
        # Tokens at N images as the protocol renders them (markers and question included).
        processor = prompt_processor(config)
        tokens = [prompt_ids(processor, n).shape[1] for n in settings.images]
        results["tokens"] = tokens
        for name in settings.variants:
            text = variant_config(config, name).text_config
            variants[name]["analytic_cache_bytes"] = [analytic_cache_bytes(text, t, dtype_bytes) for t in tokens]
        results["note"] = "no CUDA device: analytic memory model only, no weights materialised"
    else:
        chunk_size = settings.chunk_size or config.prefill_chunk_size
        results["chunk_size"] = chunk_size
        results["decode_tokens"] = settings.max_new_tokens
        results["mamba_kernels"] = settings.device.startswith("cuda") and mamba_kernels_available()
        results["mamba_kernel_setting"] = selective_scan.KERNELS
        results["max_batch"] = []
        KERNELS_RUN.clear()
        DECODE_PATHS.clear()
        earlier = earlier_rows(settings, results) if settings.resume else {}
        rows: list[Row] = []
        steps = tqdm(total=len(settings.variants) * len(settings.images), desc="bench model", unit="run")
        started = time.monotonic()

        def over_budget() -> bool:
            return settings.time_budget_s is not None and time.monotonic() - started > settings.time_budget_s

        for name in settings.variants:
            processor = prompt_processor(config)
            model = None
            for n in settings.images:
                steps.set_postfix_str(f"{name} N={n}")
                if (name, n) in earlier:
                    rows.append(earlier[(name, n)])
                elif over_budget():
                    skipped = f"skipped: --time-budget {settings.time_budget_s:g} s spent"
                    rows.append(Row(name, n, prompt_ids(processor, n).shape[1], error=skipped))
                else:
                    if model is None:
                        model = build_variant(config, name, settings.device, dtype, settings.seed)
                        warm_up(model, settings.device)
                    if "vision_per_image" not in results:
                        batch = random_pixels(config.image_encode_batch_size, config, settings.device, settings.seed)
                        results["vision_per_image"] = {**vision_breakdown(model, batch), "batch": batch.shape[0]}
                        del batch
                    rows.append(measure(model, processor, name, n, settings, chunk_size))
                results["rows"] = [asdict(r) for r in rows]
                results["ratios"] = ratios(rows)
                _write(results, out)
                steps.update()
            if settings.device.startswith("cuda") and not over_budget():
                model = model or build_variant(config, name, settings.device, dtype, settings.seed)
                results["max_batch"].append(max_batch_throughput(
                    model, name, settings.context_tokens, settings.max_batch_memory_gib, settings.throughput_steps, settings.device
                ))
                if name == "hybrid" and settings.training_tokens:
                    results["training"] = packed_lora_training_step(model, settings.training_tokens, 4, settings.device)
                _write(results, out)
            results["kernels"] = {"decode": sorted(DECODE_PATHS), **dict(KERNELS_RUN)}
            model = None
            _release_freed_memory(settings.device)
        steps.close()
        results["targets"] = check_targets(results)
    _write(results, out)
    (out / "results.md").write_text(markdown_table(results) + "\n")
    plot(results, out / "bench_model.png")
    return results


def prompt_processor(config: LongLlavaConfig) -> LongLlavaProcessor:
    """The tiny tokenizer for every preset (no hub access here); its ids fit every preset's vocabulary."""
    return LongLlavaProcessor(
        load_tiny_tokenizer(),
        image_token_id=config.image_token_id,
        image_seq_length=config.image_seq_length,
        max_length=config.max_sequence_length,
        image_size=config.vision_config.image_size,
    )


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


def parse_counts(text: str, option: str = "--images") -> tuple[int, ...]:
    """A comma-separated list of positive integers given to ``option`` (image counts, token counts)."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise InputError(f"{option} must be comma-separated integers like 1,8,64, got {text!r}") from error
    if not values or min(values) < 1:
        raise InputError(f"{option} must list positive counts, got {text!r}")
    return values
