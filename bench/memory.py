"""Memory of ``longllava bench model``: the analytic cache + state model, parameter counts, the
bytes a cache object holds, and the peak-memory sampler (CUDA allocator peak or process RSS)."""

from __future__ import annotations

import ctypes
import gc
import platform
import threading
from typing import Any

import psutil
import torch
from transformers import DynamicCache
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from longllava.core.configuration import LongLlavaConfig
from longllava.core.modeling import LongLlavaForConditionalGeneration

SAMPLE_INTERVAL_S = 0.005


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


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def return_freed_memory(device: str) -> None:
    """Hand freed allocator memory back so the next baseline is what is really in use."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif platform.system() == "Linux":
        # glibc keeps freed heap pages mapped; without this a later run could reuse them unseen.
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def release_freed_memory(device: str) -> None:
    """Also collect reference cycles (slow with transformers loaded: once per measurement, not per run)."""
    gc.collect()
    return_freed_memory(device)


class PeakMemory:
    """Peak memory above the level at entry: the CUDA allocator's peak, or the process RSS sampled
    by a background thread on CPU (torch ops release the GIL, so the sampler keeps running)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        return_freed_memory(self.device)
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
