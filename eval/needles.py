"""Needles: a coloured square drawn on one image of a haystack, and the question that asks for
its colour (answerable only from that image). V-NIAH (:mod:`longllava.eval.vniah`) asks it at
every depth; the synthetic task set of the default model (:mod:`longllava.finetune.synthetic`)
trains on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

NEEDLE_COLOURS = {"red": (230, 25, 25), "green": (25, 200, 40), "blue": (30, 60, 235), "yellow": (240, 220, 20)}
NEEDLE_QUESTION = "What colour is the square mark in one of the images? Answer with one word."


def draw_mark(image: Image.Image, colour: str, rng: np.random.Generator, fraction: float = 0.3) -> Image.Image:
    """A copy of ``image`` with a filled square of ``colour`` (side = ``fraction`` of the short side)."""
    marked = image.convert("RGB").copy()
    width, height = marked.size
    side = max(2, int(min(width, height) * fraction))
    x = int(rng.integers(0, width - side + 1))
    y = int(rng.integers(0, height - side + 1))
    ImageDraw.Draw(marked).rectangle([x, y, x + side - 1, y + side - 1], fill=NEEDLE_COLOURS[colour])
    return marked


@dataclass
class NeedleSample:
    images: list[Any]
    needle_index: int
    colour: str
    question: str = NEEDLE_QUESTION

    @property
    def answer(self) -> str:
        return self.colour


def insert_needle(
    haystack: Sequence[Any],
    depth: float,
    rng: np.random.Generator,
    colour: str | None = None,
) -> NeedleSample:
    """Mark the image at relative ``depth`` (0 = first, 1 = last) of ``haystack`` with a coloured
    square; the question asks for the colour, answerable only from that image."""
    if not haystack:
        raise ValueError("a needle needs at least one haystack image")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    colour = colour or str(rng.choice(sorted(NEEDLE_COLOURS)))
    index = int(round(depth * (len(haystack) - 1)))
    images = list(haystack)
    base = images[index]
    images[index] = draw_mark(base if isinstance(base, Image.Image) else Image.open(base), colour, rng)
    return NeedleSample(images, index, colour)
