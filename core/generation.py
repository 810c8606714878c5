"""Decoding after a chunked prefill: the reference's settings by default, sampling and streaming.

The reference's chat code generates greedily with ``max_new_tokens=768`` and
``min_new_tokens=1`` (an end of text as the very first token is not allowed); those are
:class:`GenerationSettings`' defaults. Sampling uses transformers' logits processors.

The loop is split into the prompt's chunked prefill and one decode step per token. The step runs
over one of two caches: the dynamic cache (:func:`decode_step`, the model's ``cached_step``), or
preallocated buffers whose step is replayed as a CUDA graph
(:class:`~longllava.core.decode.StaticDecoder`), the default on CUDA; both give the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from transformers import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from longllava.core.decode import StaticDecoder
from longllava.errors import InputError

GIB = 1024**3


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated. Defaults: the reference's (greedy, up to 768 new tokens, at least 1).

    Args:
        max_new_tokens: stop after this many new tokens (or at the end of text).
        min_new_tokens: the end of text is masked until this many tokens were generated.
        do_sample: sample from the (temperature, top-p) distribution instead of taking the argmax.
        temperature: divides the logits before sampling (lower: closer to greedy).
        top_p: sample only from the smallest set of tokens whose probability reaches ``top_p``.
        seed: seeds the sampler, for repeatable samples; ``None``: torch's global generator.
    """

    max_new_tokens: int = 768
    min_new_tokens: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InputError(f"min_new_tokens must lie in 0..max_new_tokens={self.max_new_tokens}, got {self.min_new_tokens}")
        if self.temperature <= 0:
            raise InputError(f"temperature must be positive, got {self.temperature}; for deterministic answers "
                             "leave sampling off (greedy)")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must lie in (0, 1], got {self.top_p}")

    def logits_processors(self, eos_token_id: int, device: torch.device | str = "cpu") -> LogitsProcessorList:
        """Applied to the scores of each step, given the tokens generated so far (no prompt)."""
        processors = LogitsProcessorList()
        if self.min_new_tokens:
            processors.append(MinNewTokensLengthLogitsProcessor(0, self.min_new_tokens, eos_token_id, device=device))
        if self.do_sample:
            if self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
        return processors


def prompt_memory_bytes(config, num_tokens: int, batch_size: int = 1, itemsize: int = 2) -> int:
    """A lower bound on the memory one prompt needs beyond the weights: the prompt's embeddings
    (all positions, before the chunked prefill), the attention layers' KV cache, and one prefill
    chunk's widest activations (the MLP's or Mamba's inner width, x4 for its projections)."""
    text = config.text_config
    attention_layers = sum(kind == "attention" for kind in text.layers_block_type)
    head_dim = text.hidden_size // text.num_attention_heads
    kv_cache = num_tokens * attention_layers * 2 * text.num_key_value_heads * head_dim
    embeddings = num_tokens * text.hidden_size
    chunk = min(num_tokens, config.prefill_chunk_size)
    activations = chunk * 4 * max(text.intermediate_size, text.mamba_expand * text.hidden_size)
    return batch_size * itemsize * (kv_cache + embeddings + activations)


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def check_prompt_memory(model, input_ids: torch.Tensor) -> None:
    """Refuse, with the figures, a prompt whose estimated memory exceeds what the device has free.
    This is the practical limit on images per prompt (the model has no positional embeddings)."""
    device = input_ids.device
    batch, tokens = input_ids.shape
    needed = prompt_memory_bytes(model.config, tokens, batch, model.dtype.itemsize)
    free = available_memory_bytes(device)
    if needed > free:
        images = int((input_ids == model.config.image_token_id).sum()) // model.config.image_seq_length
        raise InputError(
            f"a prompt of {tokens} tokens x {batch} ({images} images) needs about {needed / GIB:.1f} GiB beyond the "
            f"weights (KV cache, embeddings, one prefill chunk), but {device} has {free / GIB:.1f} GiB free; use "
            "fewer images / slices / tiles, a smaller batch, or a device with more memory"
        )


def decode_step(model, token: torch.Tensor, attention_mask: torch.Tensor, cache) -> torch.Tensor:
    """Logits (B, V) for the next position after feeding ``token`` (B,) through the cached LM."""
    return model.cached_step(cache, attention_mask, input_ids=token[:, None])


def _choose(scores: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None) -> torch.Tensor:
    if not settings.do_sample:
        return scores.argmax(-1)
    probabilities = torch.softmax(scores.float(), dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


@torch.no_grad()
def iter_tokens(
    model,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    settings: GenerationSettings = GenerationSettings(),
    eos_token_id: int | None = None,
    chunk_size: int | None = None,
    static_cache: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each step's new tokens (B,); rows that ended are filled with the pad id. Stops when
    every row has produced the end of text or after ``settings.max_new_tokens`` steps. Batches must
    be left-padded. ``static_cache``: decode over preallocated buffers, the step a CUDA graph on
    CUDA (:class:`~longllava.core.decode.StaticDecoder`); default: on CUDA."""
    eos = model.config.text_config.eos_token_id if eos_token_id is None else eos_token_id
    pad = model.config.text_config.pad_token_id or 0
    if attention_mask is None:
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
    check_prompt_memory(model, input_ids)
    processors = settings.logits_processors(eos, input_ids.device)
    generator = None
    if settings.do_sample and settings.seed is not None:
        generator = torch.Generator(input_ids.device).manual_seed(settings.seed)
    decoder = None
    if input_ids.is_cuda if static_cache is None else static_cache:
        decoder = StaticDecoder(model, input_ids.shape[0], input_ids.shape[1] + settings.max_new_tokens, input_ids.device)
        logits = decoder.prefill(input_ids, pixel_values, attention_mask, chunk_size)
    else:
        cache, logits = model.prefill(input_ids, pixel_values, attention_mask, chunk_size)
    generated = input_ids.new_zeros((input_ids.shape[0], 0))
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for step in range(settings.max_new_tokens):
        token = _choose(processors(generated, logits.float()), settings, generator).masked_fill(finished, pad)
        yield token
        generated = torch.cat([generated, token[:, None]], dim=1)
        finished |= token == eos
        if bool(finished.all()) or step + 1 == settings.max_new_tokens:
            return
        if decoder is not None:  # its mask opens the new slot for every row; finished rows are ignored
            logits = decoder.step(token)
            continue
        attention_mask = torch.cat([attention_mask, (~finished).long()[:, None]], dim=1)
        logits = decode_step(model, token, attention_mask, cache)


def generate(
    model,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    settings: GenerationSettings = GenerationSettings(),
    on_token: Callable[[torch.Tensor], None] | None = None,
    eos_token_id: int | None = None,
    chunk_size: int | None = None,
    static_cache: bool | None = None,
) -> torch.Tensor:
    """New tokens (B, <= max_new_tokens) after the prompt; ``on_token`` receives each step's (B,)
    tokens as they are produced (streaming)."""
    steps = []
    for token in iter_tokens(model, input_ids, pixel_values, attention_mask, settings, eos_token_id, chunk_size,
                             static_cache):
        if on_token is not None:
            on_token(token)
        steps.append(token)
    return torch.stack(steps, dim=1)
