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
  Mamba conv and SSM states), next to the analytic model :func:`~longllava.bench.memory.analytic_cache_bytes`.

``--preset longllava-9b`` without CUDA reports the analytic memory model only (parameters counted
on the meta device, KV bytes per token, Mamba state bytes, cache + state at each N).

Long runs: ``results.json`` is rewritten after every measurement and ``resume`` keeps the rows of
an earlier run made with the same settings; ``time_budget_s`` starts no measurement after that
many seconds; ``prefill_budget_s`` stops a chunked prefill that runs longer (after at least 3
chunks) and extrapolates its time from the measured chunks; such rows are labelled everywhere
(``~`` time, ``>=`` peak, a note in the ratios) and carry no cache or decode figures.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from longllava.bench.memory import (
    PeakMemory,
    analytic_cache_bytes,
    measured_cache_bytes,
    release_freed_memory,
    synchronize,
    variant_summary,
)
from longllava.bench.report import Row, check_targets, hardware_label, markdown_table, plot, ratios
from longllava.bench.settings import CPU_PRESET, QUESTION, ModelBenchConfig, mamba_kernels_available, variant_config
from longllava.bench.throughput import max_batch_throughput, packed_lora_training_step
from longllava.core import protocol, selective_scan
from longllava.core.decode import StaticDecoder
from longllava.core.checkpoint import preset_config
from longllava.core.configuration import LongLlavaConfig
from longllava.core.modeling import LongLlavaForConditionalGeneration, pool_image_features
from longllava.core.processor import LongLlavaProcessor
from longllava.core.tokenizer import load_tiny_tokenizer
from longllava.errors import InputError

# Short prefills are repeated (best of up to REPEATS while their total stays under REPEAT_BELOW_S):
# one-off costs such as oneDNN primitive creation for a new shape would otherwise dominate them.
REPEATS, REPEAT_BELOW_S = 3, 2.0
DECODE_PATHS: set[str] = set()  # which decode paths ran (results.json "kernels")


# -- inputs ---------------------------------------------------------------------------------------
def prompt_ids(processor: LongLlavaProcessor, num_images: int) -> torch.Tensor:
    """(1, T) ids of a chat prompt with one ordered stack of ``num_images`` frames and the question."""
    message = protocol.user_message([protocol.StackInput([None] * num_images)], QUESTION)
    return torch.tensor([processor.tokenize(protocol.chat_prompt(message.text))])


def random_pixels(num_images: int, config: LongLlavaConfig, device: str, seed: int) -> torch.Tensor:
    size = config.vision_config.image_size
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(num_images, 3, size, size, generator=generator, device=device)


def prompt_processor(config: LongLlavaConfig) -> LongLlavaProcessor:
    """The tiny tokenizer for every preset (no hub access here); its ids fit every preset's vocabulary."""
    return LongLlavaProcessor(
        load_tiny_tokenizer(),
        image_token_id=config.image_token_id,
        image_seq_length=config.image_seq_length,
        max_length=config.max_sequence_length,
        image_size=config.vision_config.image_size,
    )


# -- measurement ----------------------------------------------------------------------------------
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
    model: LongLlavaForConditionalGeneration,
    inputs_embeds: torch.Tensor,
    chunk_size: int,
    device: str,
    progress: bool = False,
    budget_s: float | None = None,
) -> PrefillTiming:
    """The model's chunked prefill (:meth:`~LongLlavaForConditionalGeneration.prefill_chunks`), timed: the lowest time and peak over up to ``REPEATS`` runs while the
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
            chunks = model.prefill_chunks(inputs_embeds, chunk_size=chunk_size)
            show = progress and total_chunks > 1
            for cache, logits, done in tqdm(chunks, "prefill chunks", total_chunks, leave=False, unit="chunk", disable=not show):
                synchronize(device)
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


def warm_up(model: LongLlavaForConditionalGeneration, device: str) -> None:
    """A short untimed prefill + decode: lazy initialisation must not land in the first measurement."""
    lm = model.language_model
    embeds = torch.randn(1, 64, lm.config.hidden_size, device=device, dtype=lm.dtype)
    cache, logits = model.prefill(inputs_embeds=embeds, chunk_size=32)
    decode_seconds(model, cache, logits, embeds.shape[1], 4)


@torch.no_grad()
def decode_seconds(model: LongLlavaForConditionalGeneration, cache: DynamicCache, logits: torch.Tensor,
                   prompt_tokens: int, new_tokens: int) -> float:
    """Seconds from token 1 (taken from the prefill logits) to token ``new_tokens``: t_n - t_1.
    On CUDA the decode runs as generation does there: static buffers, the step a CUDA graph
    (:class:`~longllava.core.decode.StaticDecoder`); elsewhere over the dynamic cache."""
    device = str(logits.device)
    token = logits.argmax(-1)
    decoder = None
    if device.startswith("cuda"):
        decoder = StaticDecoder(model, token.shape[0], prompt_tokens + new_tokens, device)
        decoder.adopt(cache, torch.ones(token.shape[0], prompt_tokens, dtype=torch.long, device=device))
        cache = None
    synchronize(device)
    began = time.perf_counter()
    for _ in range(new_tokens - 1):
        if decoder is not None:
            token = decoder.step(token).argmax(-1)
        else:
            token = model.cached_step(cache, input_ids=token[:, None]).argmax(-1)
    synchronize(device)
    DECODE_PATHS.add("dynamic-eager" if decoder is None else decoder.path)
    return time.perf_counter() - began


@torch.no_grad()
def vision_breakdown(model: LongLlavaForConditionalGeneration, pixel_values: torch.Tensor) -> dict[str, float]:
    """Seconds per image of each stage of ``get_image_features`` on one micro-batch."""
    config, device = model.config, str(pixel_values.device)
    seconds = {}

    def timed(name, fn):
        synchronize(device)
        began = time.perf_counter()
        result = fn()
        synchronize(device)
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


def measure(model, processor, variant: str, num_images: int, settings: ModelBenchConfig, chunk_size: int) -> Row:
    """One (variant, N) measurement; see the module docstring for what each field means."""
    device = settings.device
    ids = prompt_ids(processor, num_images).to(device)
    lm = model.language_model
    dtype_bytes = lm.dtype.itemsize
    row = Row(variant, num_images, ids.shape[1], analytic_cache_bytes=analytic_cache_bytes(lm.config, ids.shape[1], dtype_bytes))
    try:
        pixels = random_pixels(num_images, model.config, device, settings.seed)
        synchronize(device)
        began = time.perf_counter()
        with torch.no_grad():
            embeds = model.embed_inputs(ids, pixels)
        synchronize(device)
        row.vision_s = time.perf_counter() - began
        del pixels
        if num_images <= settings.unchunked_max_images:
            one_pass = timed_prefill(model, embeds, row.tokens, device)
            row.unchunked_prefill_s, row.unchunked_peak_bytes = one_pass.seconds, one_pass.peak_bytes
            one_pass = None
        timing = timed_prefill(model, embeds, chunk_size, device, progress=True, budget_s=settings.prefill_budget_s)
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
        release_freed_memory(device)
    return row


# -- the run, resumable ---------------------------------------------------------------------------
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
    partial = out / "results.json.partial"  # renamed on success: a stopped run never leaves half a file
    partial.write_text(json.dumps(results, indent=2))
    partial.replace(out / "results.json")


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
    config = preset_config(settings.preset)
    dtype = getattr(torch, settings.dtype)
    dtype_bytes = torch.empty(0, dtype=dtype).element_size()
    analytic_only = settings.preset != CPU_PRESET and not settings.device.startswith("cuda")
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
        selective_scan.KERNELS_RUN.clear()
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
            results["kernels"] = {"decode": sorted(DECODE_PATHS), **dict(selective_scan.KERNELS_RUN)}
            model = None
            release_freed_memory(settings.device)
        steps.close()
        results["targets"] = check_targets(results)
    _write(results, out)
    (out / "results.md").write_text(markdown_table(results) + "\n")
    plot(results, out / "bench_model.png")
    return results
