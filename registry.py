"""The model registry: what a ``--model`` name means.

A model is named by ``default`` (the synthetic-task model built by
:mod:`longllava.finetune.default_model`, shipped with the package), a preset (``tiny-random``,
``longllava-9b``, ``longllava-a13b``: seeded random weights) or a checkpoint folder. Core's
:func:`~longllava.core.checkpoint.load_model` knows presets and folders only; ``default`` is
resolved here, above ``finetune``, so that core never imports upward.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from longllava.errors import InputError

DEFAULT_MODEL = "default"  # the synthetic-task model shipped with the package


def resolve_model(spec: str | Path) -> str | Path:
    """The preset name or checkpoint folder that ``spec`` stands for (``default``: the shipped folder)."""
    from longllava.core.configuration import PRESETS  # lazily: transformers is slow to import

    if str(spec) == DEFAULT_MODEL:
        from longllava.finetune.default_model import ensure_default_model

        return ensure_default_model()
    if str(spec) in PRESETS or Path(spec).is_dir():
        return spec
    raise InputError(
        f"model {str(spec)!r} is neither a preset ({', '.join(PRESETS)}), '{DEFAULT_MODEL}', nor a checkpoint directory"
    )


def load_model(spec: str | Path, **kwargs):
    """(model, tokenizer) for any model name; keyword arguments as in core's ``load_model``."""
    from longllava.core.checkpoint import load_model as load_resolved

    return load_resolved(resolve_model(spec), **kwargs)


def load_llava(spec: str | Path, **kwargs):
    """A :class:`~longllava.core.pipeline.LongLlava` for any model name."""
    from longllava.core.pipeline import LongLlava

    return LongLlava(*load_model(spec, **kwargs))


def model_info(spec: str | Path) -> dict:
    """Config summary and parameter counts of any model name (no weights materialised)."""
    from longllava.core.info import model_info as resolved_info

    return {**resolved_info(str(resolve_model(spec))), "model": str(spec)}


def load_from_args(args: argparse.Namespace):
    """The model that the options of :func:`longllava.core.cli.add_model_args` name."""
    from longllava.core.cli import model_load_options

    return load_llava(args.model, **model_load_options(args))
