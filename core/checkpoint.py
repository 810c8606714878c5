"""Checkpoint I/O: presets, our own checkpoints, and the released LongLLaVA checkpoints.

* :func:`load_model` resolves ``tiny-random`` / ``longllava-9b`` / ``longllava-a13b`` (random
  weights, seeded) or a checkpoint directory. Loading never unpickles unless ``allow_pickle``.
* :func:`save_model` writes safetensors shards + config + tokenizer.
* :func:`convert_reference_checkpoint` turns a released checkpoint (AI21's original Jamba key
  names inside FreedomIntelligence's ``LlavaJambaForCausalLM``) into this project's layout. Every
  source key must be consumed and every target key filled, or it fails listing the leftovers.
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

from longllava.core.configuration import PRESETS, LongLlavaConfig, released_config, tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration
from longllava.core.tokenizer import load_tiny_tokenizer, load_tokenizer
from longllava.errors import InputError

TINY_SEED = 0


def build_preset(name: str, dtype: torch.dtype | None = None) -> tuple[LongLlavaForConditionalGeneration, object]:
    """A preset with seeded random weights (the tiny tokenizer for all presets: no hub here)."""
    tokenizer = load_tiny_tokenizer()
    config = tiny_config(len(tokenizer)) if name == "tiny-random" else released_config(name)
    torch.manual_seed(TINY_SEED)
    model = LongLlavaForConditionalGeneration(config)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), tokenizer


def preset_config(name: str) -> LongLlavaConfig:
    if name == "tiny-random":
        return tiny_config(len(load_tiny_tokenizer()))
    if name in PRESETS:
        return released_config(name)
    raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or a checkpoint directory")


def _weight_files(directory: Path, allow_pickle: bool) -> list[Path]:
    safetensors = sorted(directory.glob("*.safetensors"))
    if safetensors:
        return safetensors
    pickled = sorted(directory.glob("*.bin"))
    if pickled and not allow_pickle:
        raise InputError(
            f"{directory} holds only pickled .bin weights ({', '.join(p.name for p in pickled[:3])}); "
            "unpickling can run arbitrary code, so it is off by default: pass --allow-pickle if you trust "
            "the source, or convert the weights to safetensors"
        )
    if not pickled:
        raise InputError(f"no weights (*.safetensors) found in {directory}")
    return pickled


def load_model(
    spec: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    int8: bool = False,
):
    """(model, tokenizer) for a preset name or a checkpoint directory (model names such as
    ``default`` are resolved above core, by :mod:`longllava.registry`)."""
    if str(spec) in PRESETS:
        if int8:
            raise InputError("int8 applies to loaded checkpoints, not to random presets")
        model, tokenizer = build_preset(str(spec), dtype)
        return model.to(device), tokenizer
    path = Path(spec)
    if not path.is_dir():
        raise InputError(
            f"model {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint directory "
            "(longllava.registry.load_model also knows 'default')"
        )
    if not (path / "config.json").is_file():
        raise InputError(f"{path} has no config.json: not a checkpoint directory")
    pickled = _weight_files(path, allow_pickle)[0].suffix == ".bin"
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if int8:
        kwargs.update(_int8_kwargs())
    model = LongLlavaForConditionalGeneration.from_pretrained(path, use_safetensors=not pickled, **kwargs)
    if not int8:
        model = model.to(device)
    return model.eval(), load_tokenizer(path)


def _int8_kwargs() -> dict:
    if not torch.cuda.is_available():
        raise InputError(
            "int8 loading needs a CUDA GPU and bitsandbytes (pip install 'longllava[gpu]'); on CPU load "
            "in float32 or bfloat16 instead (drop --int8)"
        )
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise InputError("int8 loading needs bitsandbytes: pip install 'longllava[gpu]'") from error
    # Mamba modules stay in bf16, as in the reference loader (their scan is precision-sensitive).
    skip = ["mamba", "vision_tower", "multi_modal_projector", "lm_head"]
    return {
        "quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip),
        "device_map": "auto",
        "dtype": torch.bfloat16,
    }


def save_model(model, tokenizer, out_dir: str | Path, max_shard_size: str = "5GB") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size=max_shard_size, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# Released checkpoints (reference layout) -> this project's layout
# ---------------------------------------------------------------------------------------------

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
_REF_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "attn_layer_period", "attn_layer_offset", "expert_layer_period",
    "expert_layer_offset", "num_experts", "num_experts_per_tok", "mamba_d_state", "mamba_d_conv",
    "mamba_expand", "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias", "rms_norm_eps",
    "hidden_act", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "router_aux_loss_coef", "initializer_range",
)
_CLIP_TEXT_PARTS = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
_REF_POOLING = {"2d": "2d", "1d": "1d", None: "none", "": "none", False: "none"}


def _vision_key(key: str) -> str:
    """CLIP tower key -> ours. transformers 4 checkpoints (the released ones, the hub's CLIP) nest
    the tower under ``vision_model.``; transformers 5's CLIPVisionModel is flat."""
    return "vision_tower." + key.removeprefix("vision_model.")


def config_from_reference(ref_config: dict, vision_config: CLIPVisionConfig) -> LongLlavaConfig:
    if ref_config.get("mamba_inner_layernorms") is False:
        raise InputError("reference config has mamba_inner_layernorms=false; transformers' Jamba always has them")
    text = JambaConfig(
        **{k: ref_config[k] for k in _REF_TEXT_KEYS if k in ref_config},
        max_position_embeddings=ref_config.get("n_ctx", 262144),
        use_mambapy=True,
    )
    pooling = ref_config.get("resamplePooling", "2d")
    if pooling not in _REF_POOLING:
        raise InputError(f"reference config: unknown resamplePooling {pooling!r}")
    return LongLlavaConfig(
        vision_config=vision_config,
        text_config=text,
        vision_feature_layer=ref_config.get("mm_vision_select_layer", -2),
        pooling=_REF_POOLING[pooling],
        max_sequence_length=ref_config.get("tokenizer_model_max_length") or text.max_position_embeddings,
    )


def _iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        else:
            yield from torch.load(file, map_location="cpu", weights_only=True).items()


class _ShardWriter:
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


def _parse_size(size: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?B)", size.strip().upper())
    if not match:
        raise InputError(f"bad shard size {size!r}; use e.g. 500MB or 5GB")
    return int(float(match.group(1)) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)])


def convert_reference_checkpoint(
    ref_dir: str | Path,
    clip_dir: str | Path,
    out_dir: str | Path,
    *,
    allow_pickle: bool = False,
    max_shard_size: str = "5GB",
) -> dict:
    """Convert a released LongLLaVA checkpoint into this project's layout; returns a summary."""
    ref_dir, clip_dir, out = Path(ref_dir), Path(clip_dir), Path(out_dir)
    if not (ref_dir / "config.json").is_file():
        raise InputError(f"{ref_dir} has no config.json: not a LongLLaVA checkpoint directory")
    if not (clip_dir / "config.json").is_file():
        raise InputError(f"{clip_dir} has no config.json: not a CLIP checkpoint directory")
    ref_config = json.loads((ref_dir / "config.json").read_text())
    config = config_from_reference(ref_config, CLIPVisionConfig.from_pretrained(clip_dir))
    layer_experts = config.text_config.layers_num_experts

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LongLlavaForConditionalGeneration(config).state_dict().items()}

    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, _parse_size(max_shard_size))
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
    for key, tensor in _iter_tensors(_weight_files(ref_dir, allow_pickle)):
        if key in _TOP:
            put(_TOP[key], tensor)
        elif key.startswith(_REF_VISION_PREFIX):
            vision_in_checkpoint = True
            put(_vision_key(key[len(_REF_VISION_PREFIX):]), tensor)
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
        for key, tensor in _iter_tensors(_weight_files(clip_dir, allow_pickle)):
            if not key.startswith(_CLIP_TEXT_PARTS):
                put(_vision_key(key), tensor)

    incomplete = [f"model.layers.{layer}.moe.experts.* ({len(p)} of {3 * layer_experts[layer]} tensors)" for layer, p in experts.items()]
    missing = sorted(set(expected) - written)
    if unknown or missing or incomplete:
        shutil.rmtree(out, ignore_errors=True)
        lines = []
        if unknown:
            lines.append(f"{len(unknown)} source keys have no place in the target: {', '.join(sorted(unknown)[:20])}")
        if incomplete:
            lines.append("incomplete experts: " + ", ".join(incomplete))
        if missing:
            lines.append(f"{len(missing)} target keys were not filled: {', '.join(missing[:20])}")
        raise InputError(f"cannot convert {ref_dir}:\n  " + "\n  ".join(lines))
    writer.close()
    config.save_pretrained(out)
    tokenizer = load_tokenizer(ref_dir)
    tokenizer.save_pretrained(out)
    return {
        "out": str(out),
        "tensors": len(written),
        "shards": len(writer.shards),
        "vision_weights_from": "checkpoint" if vision_in_checkpoint else str(clip_dir),
        "pooling": config.pooling,
        "num_experts": config.text_config.num_experts,
    }
