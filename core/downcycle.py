"""MoE -> dense downcycling: a converted MoE checkpoint (LongLLaVA-A13B layout, or a fine-tune of
it) becomes a dense one that loads as the 9B layout.

The paper built LongLLaVA-9B from the MoE model by keeping expert 0 and compared (its Table 10)
four ways of merging each MoE layer's experts into one MLP:

* ``expert-K``: keep expert K (``expert-0`` is what the released 9B did);
* ``mean``: the arithmetic mean of the experts' weight matrices;
* ``spherical``: the spherical mean: each expert's matrix, flattened, is a vector; the result has
  the direction of the mean of the unit vectors and the mean of the experts' norms, so experts
  with larger weights do not dominate the direction and the result keeps a typical scale (the
  arithmetic mean of weakly aligned experts shrinks towards zero).

The router is dropped. Every other tensor is copied unchanged; the output is written atomically.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import safe_open

from longllava.core.checkpoint import atomic_directory
from longllava.core.configuration import LongLlavaConfig
from longllava.core.convert import ShardWriter, expected_shapes, parse_size, save_tokenizer_files
from longllava.core.tokenizer import load_tokenizer
from longllava.errors import InputError

_FFN = r"^(language_model\.model\.layers\.\d+\.feed_forward\.)"
_ROUTER = re.compile(_FFN + r"router\.weight$")
# transformers 5 keeps experts fused in memory (the converter writes them so) but saves them per expert.
_FUSED_EXPERTS = re.compile(_FFN + r"experts\.(gate_up_proj|down_proj)$")
_ONE_EXPERT = re.compile(_FFN + r"experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def arithmetic_mean(experts: torch.Tensor) -> torch.Tensor:
    """(E, ...) -> (...): the mean over experts, computed in float32."""
    return experts.float().mean(0).to(experts.dtype)


def spherical_mean(experts: torch.Tensor) -> torch.Tensor:
    """(E, ...) -> (...): direction of the mean unit vector, length of the mean norm (float32)."""
    flat = experts.float().flatten(1)
    norms = flat.norm(dim=1, keepdim=True)
    direction = (flat / norms).mean(0)
    merged = direction / direction.norm() * norms.mean()
    return merged.reshape(experts.shape[1:]).to(experts.dtype)


def _merge(method: str, num_experts: int):
    """The function (E, ...) -> (...) that ``method`` names, checked against the expert count."""
    if method == "mean":
        return arithmetic_mean
    if method == "spherical":
        return spherical_mean
    match = re.fullmatch(r"expert-(\d+)", method)
    if not match:
        raise InputError(f"unknown downcycling method {method!r}; use expert-0 ... expert-{num_experts - 1}, mean or spherical")
    index = int(match.group(1))
    if index >= num_experts:
        raise InputError(f"--method {method}: the checkpoint has {num_experts} experts per MoE layer (expert-0 ... "
                         f"expert-{num_experts - 1})")
    return lambda experts: experts[index]


def dense_config(config: LongLlavaConfig, method: str, source: Path) -> LongLlavaConfig:
    dense = LongLlavaConfig.from_dict(config.to_dict())
    dense.text_config.num_experts = 1
    dense.text_config.num_experts_per_tok = 1
    dense.downcycled_from = {"checkpoint": str(source), "method": method, "num_experts": config.text_config.num_experts}
    return dense


def downcycle_checkpoint(
    moe_dir: str | Path, out_dir: str | Path, method: str, *, max_shard_size: str = "5GB", overwrite: bool = False
) -> dict:
    """Write the dense downcycling of the MoE checkpoint ``moe_dir`` to ``out_dir``; returns a summary."""
    moe_dir, out = Path(moe_dir), Path(out_dir)
    if not (moe_dir / "config.json").is_file():
        raise InputError(f"{moe_dir} has no config.json: not a checkpoint directory (convert a released one first)")
    config = LongLlavaConfig.from_pretrained(moe_dir)
    num_experts = config.text_config.num_experts
    if num_experts < 2:
        raise InputError(f"{moe_dir} is already dense (num_experts={num_experts}); nothing to downcycle")
    files = sorted(moe_dir.glob("*.safetensors"))
    if not files:
        raise InputError(f"no *.safetensors weights in {moe_dir}; downcycling reads converted checkpoints")
    merge = _merge(method, num_experts)
    dense = dense_config(config, method, moe_dir)
    expected = expected_shapes(dense)
    tokenizer = load_tokenizer(moe_dir)
    merger = _ExpertMerger(merge, config)
    with atomic_directory(out, overwrite) as staging:
        writer = ShardWriter(staging, parse_size(max_shard_size))
        written = set()
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    for name, tensor in merger(key, handle.get_tensor(key)):
                        if expected.get(name) != tuple(tensor.shape):
                            raise InputError(f"{file.name}: {key} gives {name} of shape {tuple(tensor.shape)}, "
                                             f"the dense model expects {expected.get(name, 'no such key')}")
                        writer.add(name, tensor)
                        written.add(name)
        problems = [f"{key}: {len(pieces)} of {num_experts} experts" for key, pieces in merger.pending.items()]
        missing = sorted(set(expected) - written)
        if missing:
            problems.append(f"{len(missing)} weights not found: {', '.join(missing[:10])}")
        if problems:
            raise InputError(f"{moe_dir}: cannot build the dense model: " + "; ".join(problems))
        writer.close()
        dense.save_pretrained(staging)
        save_tokenizer_files(tokenizer, moe_dir, staging)
    moe_layers = [i for i, count in enumerate(config.text_config.layers_num_experts) if count > 1]
    return {"out": str(out), "method": method, "experts": num_experts, "moe_layers": moe_layers,
            "tensors": len(written), "shards": len(writer.shards)}


class _ExpertMerger:
    """Maps each checkpoint tensor to the dense model's tensors: experts merged, routers dropped,
    the rest unchanged. Experts saved one per key are collected until all of a layer's are in."""

    def __init__(self, merge, config: LongLlavaConfig):
        self.merge = merge
        self.num_experts = config.text_config.num_experts
        self.intermediate_size = config.text_config.intermediate_size
        self.pending: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)

    def __call__(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if _ROUTER.match(key):
            return []
        if match := _FUSED_EXPERTS.match(key):
            prefix, part = match.groups()
            if part == "down_proj":
                return [(prefix + "down_proj.weight", self.merge(tensor))]
            gate, up = tensor.split(self.intermediate_size, dim=1)  # (E, 2I, H): gate rows, then up rows
            return [(prefix + "gate_proj.weight", self.merge(gate)), (prefix + "up_proj.weight", self.merge(up))]
        if match := _ONE_EXPERT.match(key):
            prefix, index, part = match.group(1), int(match.group(2)), match.group(3)
            pieces = self.pending[prefix + part]
            pieces[index] = tensor
            if len(pieces) < self.num_experts:
                return []
            del self.pending[prefix + part]
            return [(f"{prefix}{part}.weight", self.merge(torch.stack([pieces[j] for j in range(self.num_experts)])))]
        return [(key, tensor)]
