"""Exact attention for a prefill chunk that follows a KV cache, without a (chunk x KV) mask.

A chunk of ``q`` queries after ``P`` cached tokens sees every cached key and, causally, the
chunk's own keys: a causal mask aligned to the *end* of the keys (lower right). PyTorch's
``is_causal`` aligns to the start (upper left), so transformers' ``sdpa`` path materialises that
mask for every chunk but the first: at 1000 images (154K tokens, chunks of 8192) a 1.2 GB boolean
mask per attention layer, made a 5 GB float bias inside PyTorch's CPU kernel, which also runs
~2.6x slower per FLOP with a mask than without.

``chunked_sdpa`` (registered below as :data:`CHUNKED_SDPA` with transformers' attention and mask
interfaces) splits the keys instead: the cached prefix with no mask (all visible) and the chunk's
own keys with ``is_causal`` (square, so both alignments agree). On CPU the two partial results are
merged by their log-sum-exps, which PyTorch's CPU flash kernel returns; elsewhere PyTorch's
lower-right :func:`~torch.nn.attention.bias.causal_lower_right` bias is used (fused kernels on CUDA).
Whenever a mask is needed (padding in the batch, packed training samples, sliding windows) or the
queries and keys have equal length (training, one-pass prefill) or one query (decoding), both
interfaces defer to transformers' ``sdpa`` unchanged: those calls are exactly the ``sdpa`` ones.

A ``None`` mask means "causal, aligned to the end of the keys" here. transformers' ``sdpa_mask``
also returns ``None`` for an empty static cache (more keys than queries, aligned to the start); the
mask function below materialises that case instead, so the two meanings never meet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, prepare_padding_mask, sdpa_mask

CHUNKED_SDPA = "longllava_chunked_sdpa"  # contains "sdpa": transformers checks SDPA support for it


def chunked_sdpa_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function=causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    **kwargs,
) -> torch.Tensor | None:
    """``None`` when the mask is plain causal with the queries ending where the keys end and no
    padding (the chunked-prefill case); transformers' ``sdpa_mask`` otherwise."""
    if _plain_end_aligned_causal(
        q_length, kv_length, q_offset, kv_offset, attention_mask, local_size, allow_is_causal_skip
    ):
        return None
    arguments = dict(
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset, kv_offset=kv_offset,
        mask_function=mask_function, attention_mask=attention_mask, local_size=local_size, **kwargs,
    )
    mask = sdpa_mask(allow_is_causal_skip=allow_is_causal_skip, **arguments)
    if mask is None and q_length not in (1, kv_length):
        mask = sdpa_mask(allow_is_causal_skip=False, **arguments)  # start-aligned: see the module docstring
    return mask


def _plain_end_aligned_causal(q_length, kv_length, q_offset, kv_offset, attention_mask, local_size, allowed) -> bool:
    if not allowed or local_size is not None or torch.compiler.is_compiling():
        return False
    if isinstance(q_offset, torch.Tensor) or q_offset + q_length != kv_offset + kv_length:
        return False  # static caches (tensor offsets, keys beyond the queries)
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    return padding is None or bool(padding[:, kv_offset : kv_offset + kv_length].all())


def chunked_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: (B, H, q, d) queries, (B, Hkv, kv, d) keys and values ->
    ((B, q, H, d), None). Queries after a cache without a mask take :func:`attention_after_prefix`."""
    q_length, kv_length = query.shape[2], key.shape[2]
    after_prefix = (
        attention_mask is None
        and 1 < q_length < kv_length
        and getattr(module, "is_causal", True)
        and kwargs.get("is_causal") is not False
        and kwargs.get("position_bias") is None
        and dropout == 0.0
    )
    if not after_prefix:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    output = attention_after_prefix(query, key, value, scaling)
    return output.transpose(1, 2).contiguous(), None


def attention_after_prefix(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Softmax attention of ``q`` queries over ``kv >= q`` keys where query i sees keys
    ``0 .. kv - q + i`` (the last q keys are the queries' own). (B, H, q, d) x (B, Hkv, kv, d) ->
    (B, H, q, d); Hkv divides H (grouped-query attention)."""
    if query.device.type == "cpu":
        return merged_attention_cpu(query, key, value, scale)
    return lower_right_attention(query, key, value, scale)


def lower_right_attention(query, key, value, scale=None):
    """PyTorch's lower-right causal bias: fused kernels on CUDA, a materialised mask elsewhere."""
    groups = query.shape[1] // key.shape[1]
    bias = causal_lower_right(query.shape[2], key.shape[2])
    return F.scaled_dot_product_attention(query, repeat_kv(key, groups), repeat_kv(value, groups), attn_mask=bias, scale=scale)


def merged_attention_cpu(query, key, value, scale=None):
    """Prefix (no mask) and diagonal block (``is_causal``) by PyTorch's CPU flash kernel, which
    also returns each row's log-sum-exp; the two softmaxes are merged exactly by those weights."""
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    batch, heads, q_length, dim = query.shape
    kv_heads, prefix = key.shape[1], key.shape[2] - q_length
    groups = heads // kv_heads
    # Query heads sharing a K/V head are stacked as extra query rows: no copy of the (long) prefix.
    stacked = query.reshape(batch, kv_heads, groups * q_length, dim)
    past, past_lse = flash(stacked, key[:, :, :prefix], value[:, :, :prefix], 0.0, False, scale=scale)
    past, past_lse = past.reshape(batch, heads, q_length, -1), past_lse.reshape(batch, heads, q_length)
    own_key, own_value = repeat_kv(key[:, :, prefix:], groups), repeat_kv(value[:, :, prefix:], groups)
    own, own_lse = flash(query, own_key, own_value, 0.0, True, scale=scale)
    lse = torch.logaddexp(past_lse, own_lse)
    merged = past.float() * torch.exp(past_lse - lse)[..., None] + own.float() * torch.exp(own_lse - lse)[..., None]
    return merged.to(query.dtype)


AttentionInterface.register(CHUNKED_SDPA, chunked_sdpa_attention_forward)
AttentionMaskInterface.register(CHUNKED_SDPA, chunked_sdpa_mask)
