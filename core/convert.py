"""Released LongLLaVA checkpoints (reference layout) -> this project's layout.

:func:`convert_reference_checkpoint` reads AI21's original Jamba key names inside
FreedomIntelligence's ``LlavaJambaForCausalLM`` and the released ``config.json`` (Jamba's text
config plus the multimodal fields the released checkpoints add). Every source key must be consumed
and every target key filled, or it fails listing the leftovers. The output is written into a
temporary sibling of ``--out`` and renamed on success (:func:`~longllava.core.checkpoint.atomic_directory`),
so no failure leaves a partial output or touches anything that was there before.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import torch
from transformers import CLIPVisionConfig, JambaConfig

from longllava.core.checkpoint import _weight_files, atomic_directory
from longllava.core.configuration import LongLlavaConfig
from longllava.core.modeling import LongLlavaForConditionalGeneration
from longllava.core.tokenizer import SENTENCEPIECE_MODEL, load_tokenizer
from longllava.errors import InputError

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^moe\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
_RENAMES = {  # reference sub-key -> transformers Jamba sub-key (per layer)
    "pre_moe_layernorm.weight": "pre_ff_layernorm.weight",
    "mamba.B_layernorm.weight": "mamba.b_layernorm.weight",
    "mamba.C_layernorm.weight": "mamba.c_layernorm.weight",
    "moe.router.weight": "feed_forward.router.weight",
}
_TOP = {
    "model.embed_tokens.weight": "language_model.model.embed_tokens.weight",
    "model.final_layernorm.weight": "language_model.model.final_layernorm.weight",
    "lm_head.weight": "language_model.lm_head.weight",
    "model.mm_projector.0.weight": "multi_modal_projector.linear_1.weight",
    "model.mm_projector.0.bias": "multi_modal_projector.linear_1.bias",
    "model.mm_projector.2.weight": "multi_modal_projector.linear_2.weight",
    "model.mm_projector.2.bias": "multi_modal_projector.linear_2.bias",
}
_REF_VISION_PREFIX = "model.vision_tower.vision_tower."
_CLIP_TEXT_PARTS = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
# A buffer that transformers 4 saved and transformers 5 no longer keeps in the state dict.
_CLIP_POSITION_IDS = "embeddings.position_ids"

# Jamba fields that fix the weights' shapes and the layer layout: the conversion needs each of them.
_REQUIRED_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "attn_layer_period", "attn_layer_offset", "expert_layer_period",
    "expert_layer_offset", "num_experts", "num_experts_per_tok", "mamba_d_state", "mamba_d_conv",
    "mamba_expand", "mamba_dt_rank",
)
_OPTIONAL_TEXT_KEYS = (
    "mamba_conv_bias", "mamba_proj_bias", "rms_norm_eps", "hidden_act", "pad_token_id", "bos_token_id",
    "eos_token_id", "tie_word_embeddings", "router_aux_loss_coef", "initializer_range", "attention_dropout",
)
# Multimodal fields of the released checkpoints: the supported value of each, and what the field means.
_POOLING = {"2d": "2d", "1d": "1d"}
_SUPPORTED_MULTIMODAL = {
    "mm_projector_type": ("mlp2x_gelu", "the projector (Linear, GELU, Linear)"),
    "image_aspect_ratio": ("pad", "image preprocessing (pad to square with the CLIP mean colour)"),
    "mm_vision_select_feature": ("patch", "CLIP features without the CLS token"),
    "mm_patch_merge_type": ("flat", "image tokens in raster order"),
}
_RELEASED_EXAMPLE = (
    '"mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 1024, "mm_vision_select_layer": -2, '
    '"resamplePooling": "2d", "image_aspect_ratio": "pad"'
)


def _need(ref_config: dict, key: str, where: Path, hint: str):
    if key not in ref_config:
        raise InputError(f"{where}: the field {key!r} is missing ({hint}); the released LongLLaVA configs carry "
                         f"{_RELEASED_EXAMPLE}")
    return ref_config[key]


def config_from_reference(
    ref_config: dict,
    vision_config: CLIPVisionConfig,
    where: Path = Path("config.json"),
    max_sequence_length: int | None = None,
) -> LongLlavaConfig:
    """``LongLlavaConfig`` from a released ``config.json`` (``where`` names it in errors).

    ``max_sequence_length`` is the user's limit on one input; by default the config's own (no
    trained-length field is copied: the training scripts' ``tokenizer_model_max_length`` is the
    length they trained at, not a limit of a model without positional embeddings)."""
    if ref_config.get("mamba_inner_layernorms") is False:
        raise InputError(f"{where}: mamba_inner_layernorms=false; transformers' Jamba always has them")
    missing = [key for key in _REQUIRED_TEXT_KEYS if key not in ref_config]
    if missing:
        raise InputError(f"{where}: the Jamba fields {', '.join(missing)} are missing; the conversion needs them "
                         "to place the weights (compare with the released config.json)")
    text = JambaConfig(
        **{k: ref_config[k] for k in _REQUIRED_TEXT_KEYS + _OPTIONAL_TEXT_KEYS if k in ref_config},
        max_position_embeddings=ref_config.get("n_ctx", 262144),
        use_mambapy=True,
    )
    for key, (supported, meaning) in _SUPPORTED_MULTIMODAL.items():
        value = _need(ref_config, key, where, meaning) if key == "mm_projector_type" else ref_config.get(key, supported)
        if value != supported:
            raise InputError(f"{where}: {key}={value!r} is not supported; this project implements {key}={supported!r} "
                             f"({meaning}), the released models' value")
    hidden = _need(ref_config, "mm_hidden_size", where, "the vision features' width")
    if hidden != vision_config.hidden_size:
        raise InputError(f"{where}: mm_hidden_size={hidden} but the CLIP checkpoint's hidden_size is "
                         f"{vision_config.hidden_size}; give the CLIP tower the model was trained with (--clip)")
    layer = _need(ref_config, "mm_vision_select_layer", where, "which CLIP hidden state feeds the projector")
    pooling = _need(ref_config, "resamplePooling", where, "the image-token pooling; the training code does not "
                    "write it, so check the model card: the released models use \"2d\"")
    if pooling not in _POOLING:
        raise InputError(f"{where}: unknown resamplePooling {pooling!r}; expected one of {', '.join(_POOLING)}")
    limit = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
    return LongLlavaConfig(
        vision_config=vision_config, text_config=text, vision_feature_layer=layer, pooling=_POOLING[pooling], **limit
    )


def _vision_key(key: str) -> str:
    """CLIP tower key -> ours. transformers 4 checkpoints (the released ones, the hub's CLIP) nest
    the tower under ``vision_model.``; transformers 5's CLIPVisionModel is flat."""
    return "vision_tower." + key.removeprefix("vision_model.")


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        else:
            yield from torch.load(file, map_location="cpu", weights_only=True).items()


class ShardWriter:
    """Writes tensors into safetensors shards of at most ``max_bytes`` plus the HF index file."""

    def __init__(self, out: Path, max_bytes: int):
        self.out, self.max_bytes = out, max_bytes
        self.current: dict[str, torch.Tensor] = {}
        self.size = 0
        self.shards: list[list[str]] = []

    def add(self, key: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.current and self.size + nbytes > self.max_bytes:
            self._flush()
        self.current[key] = tensor.contiguous()
        self.size += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        save_file(self.current, str(self.out / f"shard-{len(self.shards):05d}.tmp"), metadata={"format": "pt"})
        self.shards.append(list(self.current))
        self.current, self.size = {}, 0

    def close(self) -> None:
        if self.current:
            self._flush()
        total = len(self.shards)
        weight_map = {}
        for i, keys in enumerate(self.shards):
            name = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
            (self.out / f"shard-{i:05d}.tmp").rename(self.out / name)
            weight_map.update({key: name for key in keys})
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def parse_size(size: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?B)", size.strip().upper())
    if not match:
        raise InputError(f"bad shard size {size!r}; use e.g. 500MB or 5GB")
    return int(float(match.group(1)) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)])


def expected_shapes(config: LongLlavaConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the model's state dict and its shape, without materialising weights."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in LongLlavaForConditionalGeneration(config).state_dict().items()}


def save_tokenizer_files(tokenizer, source: Path, out: Path) -> None:
    """The tokenizer (fast, reloads to the same ids) plus the original sentencepiece model, if any."""
    tokenizer.save_pretrained(out)
    if (source / SENTENCEPIECE_MODEL).is_file():
        shutil.copy2(source / SENTENCEPIECE_MODEL, out / SENTENCEPIECE_MODEL)


def _check_position_ids(key: str, tensor: torch.Tensor) -> None:
    if not torch.equal(tensor.flatten().long(), torch.arange(tensor.numel())):
        raise InputError(f"{key}: expected the positions 0..{tensor.numel() - 1}, found other values")


def convert_reference_checkpoint(
    ref_dir: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path,
    *,
    allow_pickle: bool = False,
    max_shard_size: str = "5GB",
    overwrite: bool = False,
    max_sequence_length: int | None = None,
) -> dict:
    """Convert a released LongLLaVA checkpoint into this project's layout; returns a summary.
    A non-empty ``out_dir`` is refused unless ``overwrite``."""
    ref_dir, clip_dir, out = Path(ref_dir), Path(clip_dir), Path(out_dir)
    if not (ref_dir / "config.json").is_file():
        raise InputError(f"{ref_dir} has no config.json: not a LongLLaVA checkpoint directory")
    if not (clip_dir / "config.json").is_file():
        raise InputError(f"{clip_dir} has no config.json: not a CLIP checkpoint directory")
    ref_config = json.loads((ref_dir / "config.json").read_text())
    config = config_from_reference(
        ref_config, CLIPVisionConfig.from_pretrained(clip_dir), ref_dir / "config.json", max_sequence_length
    )
    tokenizer = load_tokenizer(ref_dir)
    layer_experts = config.text_config.layers_num_experts
    expected = expected_shapes(config)
    with atomic_directory(out, overwrite) as staging:
        summary = _convert_weights(ref_dir, clip_dir, staging, config, expected, layer_experts,
                                   allow_pickle, parse_size(max_shard_size))
        config.save_pretrained(staging)
        save_tokenizer_files(tokenizer, ref_dir, staging)
    return {"out": str(out), **summary, "pooling": config.pooling, "num_experts": config.text_config.num_experts,
            "max_sequence_length": config.max_sequence_length}


def _convert_weights(ref_dir, clip_dir, out, config, expected, layer_experts, allow_pickle, max_bytes) -> dict:
    writer = ShardWriter(out, max_bytes)
    written: set[str] = set()
    unknown: list[str] = []
    experts: dict[int, dict[tuple[int, str], torch.Tensor]] = defaultdict(dict)

    def put(key: str, tensor: torch.Tensor) -> None:
        if key not in expected:
            unknown.append(key)
            return
        if tuple(tensor.shape) != expected[key]:
            raise InputError(f"{key}: shape {tuple(tensor.shape)} in the checkpoint, {expected[key]} expected by its config")
        if key in written:
            raise InputError(f"{key} appears twice in the checkpoint")
        writer.add(key, tensor)
        written.add(key)

    def put_vision(key: str, tensor: torch.Tensor) -> None:
        if key.endswith(_CLIP_POSITION_IDS):
            _check_position_ids(key, tensor)
        else:
            put(_vision_key(key), tensor)

    def flush_layer_experts(layer: int) -> None:
        pieces, count = experts[layer], layer_experts[layer]
        if len(pieces) < 3 * count:
            return
        prefix = f"language_model.model.layers.{layer}.feed_forward."
        if count == 1:
            for name in ("gate", "up", "down"):
                put(f"{prefix}{name}_proj.weight", pieces[(0, name)])
        else:
            put(prefix + "experts.gate_up_proj",
                torch.stack([torch.cat([pieces[(j, "gate")], pieces[(j, "up")]]) for j in range(count)]))
            put(prefix + "experts.down_proj", torch.stack([pieces[(j, "down")] for j in range(count)]))
        del experts[layer]

    vision_in_checkpoint = False
    for key, tensor in iter_tensors(_weight_files(ref_dir, allow_pickle)):
        if key in _TOP:
            put(_TOP[key], tensor)
        elif key.startswith(_REF_VISION_PREFIX):
            vision_in_checkpoint = True
            put_vision(key[len(_REF_VISION_PREFIX):], tensor)
        elif match := _LAYER.match(key):
            layer, sub = int(match.group(1)), match.group(2)
            if expert := _EXPERT.match(sub):
                index = int(expert.group(1))
                if layer >= len(layer_experts) or index >= layer_experts[layer]:
                    unknown.append(key)
                    continue
                experts[layer][(index, expert.group(2))] = tensor
                flush_layer_experts(layer)
            else:
                put(f"language_model.model.layers.{layer}.{_RENAMES.get(sub, sub)}", tensor)
        else:
            unknown.append(key)

    if not vision_in_checkpoint:
        # A CLIPModel checkpoint's text tower and projections are not part of LongLLaVA.
        for key, tensor in iter_tensors(_weight_files(clip_dir, allow_pickle)):
            if not key.startswith(_CLIP_TEXT_PARTS):
                put_vision(key, tensor)

    incomplete = [f"model.layers.{layer}.moe.experts.* ({len(p)} of {3 * layer_experts[layer]} tensors)"
                  for layer, p in experts.items()]
    missing = sorted(set(expected) - written)
    if unknown or missing or incomplete:
        lines = []
        if unknown:
            lines.append(f"{len(unknown)} source keys have no place in the target: {', '.join(sorted(unknown)[:20])}")
        if incomplete:
            lines.append("incomplete experts: " + ", ".join(incomplete))
        if missing:
            lines.append(f"{len(missing)} target keys were not filled: {', '.join(missing[:20])}")
        raise InputError(f"cannot convert {ref_dir}:\n  " + "\n  ".join(lines))
    writer.close()
    return {
        "tensors": len(written),
        "shards": len(writer.shards),
        "vision_weights_from": "checkpoint" if vision_in_checkpoint else str(clip_dir),
    }
