"""The CUDA figures of ``longllava bench model`` beyond prefill and batch-1 decode: decode
throughput at the largest batch that fits a memory cap (the paper's "Max TP") and the tokens/s of
a packed LoRA training step. Both run on CPU too (the tests use the tiny preset there)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from longllava.bench.memory import largest_batch, release_freed_memory, synchronize
from longllava.core.decode import StaticDecoder

GiB = 2**30


@contextmanager
def out_of_memory_recorded(result: dict[str, Any], device: str) -> Iterator[None]:
    """An out-of-memory error becomes ``result["error"]`` (as the paper records OOM entries)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        result["error"] = f"out of memory: {str(error).splitlines()[0]}"
    finally:
        release_freed_memory(device)


@torch.no_grad()
def max_batch_throughput(model, variant: str, context_tokens: int, cap_gib: float, steps: int, device: str) -> dict[str, Any]:
    """Decode tokens/s of the largest batch within ``cap_gib`` at ``context_tokens`` of context.

    The context is synthesised, as a 100K-token prefill per sequence would take the whole budget:
    a short real prefill (Mamba states, which are fixed-size), then every attention layer's K/V
    buffer filled with random values over the full context, all of it visible. Two untimed steps
    (the eager one and, on CUDA, the graph capture), then ``steps`` timed ones."""
    lm = model.language_model
    sizing = largest_batch(model.config, context_tokens, steps + 2, lm.dtype.itemsize, int(cap_gib * GiB))
    result: dict[str, Any] = {"variant": variant, "context_tokens": context_tokens, "cap_gib": cap_gib, **sizing}
    if sizing["batch"] < 1:
        result["error"] = f"the weights ({sizing['weights_bytes'] / GiB:.1f} GiB) leave no room for one sequence"
        return result
    batch = sizing["batch"]
    with out_of_memory_recorded(result, device):
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
        synchronize(device)
        began = time.perf_counter()
        for _ in range(steps):
            token = decoder.step(token).argmax(-1)
        synchronize(device)
        seconds = time.perf_counter() - began
        result.update(tokens_per_s=batch * steps / seconds, ms_per_step=1000 * seconds / steps, decode_path=decoder.path)
    return result


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
    with out_of_memory_recorded(result, device):
        for timed in (False, True):
            synchronize(device)
            began = time.perf_counter()
            loss = peft_lm(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
            loss.backward()
            synchronize(device)
            if timed:
                result.update(seconds=time.perf_counter() - began, loss=float(loss.detach()))
                result["tokens_per_s"] = tokens / result["seconds"]
            peft_lm.zero_grad(set_to_none=True)
            loss = None
    return result
