"""Checkpoint I/O: presets, our own checkpoints, and the released LongLLaVA checkpoints.

* :func:`load_model` resolves ``tiny-random`` / ``longllava-9b`` / ``longllava-a13b`` (random
  weights, seeded) or a checkpoint directory. Loading never unpickles unless ``allow_pickle``.
* :func:`save_model` writes safetensors shards + config + tokenizer.
* :func:`atomic_directory`: every command that writes a model directory (``convert``,
  ``downcycle``) writes into a temporary sibling and renames it on success.

The released checkpoints' converter is in :mod:`longllava.core.convert`.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

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


@contextmanager
def atomic_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to write into; on success it becomes ``out``.

    A non-empty ``out`` is refused unless ``overwrite`` (then it is replaced only once the new
    output is complete). On any failure, Ctrl-C included, the temporary folder is removed and
    ``out`` is left exactly as it was."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty; choose a new folder, or pass --overwrite to replace its contents")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.previous-", dir=out.parent))
            out.rename(previous / out.name)
            try:
                staging.rename(out)
            except BaseException:
                (previous / out.name).rename(out)
                previous.rmdir()
                raise
            shutil.rmtree(previous)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
