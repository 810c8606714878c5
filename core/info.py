"""Config summary and parameter counts without materialising weights (meta device)."""

from __future__ import annotations

from pathlib import Path

import torch

from longllava.core.configuration import PRESETS, LongLlavaConfig
from longllava.core.modeling import LongLlavaForConditionalGeneration
from longllava.errors import InputError


def resolve_config(spec: str) -> LongLlavaConfig:
    from longllava.core.checkpoint import preset_config

    if spec in PRESETS:
        return preset_config(spec)
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise InputError(f"model {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint directory")
    return LongLlavaConfig.from_pretrained(path)


def model_info(spec: str) -> dict:
    config = resolve_config(str(spec))
    text = config.text_config
    with torch.device("meta"):
        model = LongLlavaForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.vision_tower.parameters())
    projector = sum(p.numel() for p in model.multi_modal_projector.parameters())
    inactive = 0
    for layer in model.language_model.model.layers:
        experts = getattr(layer.feed_forward, "experts", None)
        if experts is not None:
            per_expert = sum(p.numel() for p in experts.parameters()) / text.num_experts
            inactive += per_expert * (text.num_experts - text.num_experts_per_tok)
    kinds = text.layers_block_type
    head_dim = text.hidden_size // text.num_attention_heads
    inner = text.mamba_expand * text.hidden_size
    return {
        "model": str(spec),
        "num_layers": text.num_hidden_layers,
        "hidden_size": text.hidden_size,
        "attention_layers": [i for i, k in enumerate(kinds) if k == "attention"],
        "mamba_layers": [i for i, k in enumerate(kinds) if k == "mamba"],
        "moe_layers": [i for i, n in enumerate(text.layers_num_experts) if n > 1],
        "experts_per_moe_layer": text.num_experts,
        "experts_per_token": text.num_experts_per_tok,
        "kv_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size,
        "vision_layers": config.vision_config.num_hidden_layers,
        "vision_feature_layer": config.vision_feature_layer,
        "pooling": config.pooling,
        "tokens_per_image": config.image_seq_length,
        "max_sequence_length": config.max_sequence_length,
        "total_params": total,
        "active_params": int(total - inactive),
        "vision_params": vision,
        "projector_params": projector,
        # bf16 cache growth: K and V per attention layer per token; fixed Mamba state per sequence
        "kv_cache_bytes_per_token_bf16": 2 * 2 * text.num_key_value_heads * head_dim * kinds.count("attention"),
        "mamba_state_bytes_bf16": 2 * kinds.count("mamba") * inner * (text.mamba_d_state + text.mamba_d_conv),
    }
