"""Models shipped as package data.

``synthetic-default/`` is the default model (``--model default``): the tiny synthetic-task
LongLLaVA that ``longllava finetune --recipe synthetic-default`` builds (weights, config, tokenizer
and the build's ``report.json``, ~3.6 MB). The bottom layer: it imports nothing from the package.
"""

from pathlib import Path

SYNTHETIC_DEFAULT = Path(__file__).resolve().parent / "synthetic-default"
