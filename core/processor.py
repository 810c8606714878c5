"""Images -> pixel tensors and (protocol text, images) -> model inputs.

* ``pad_to_square`` with the CLIP mean colour, resize to 336, normalise (the released models'
  ``image_aspect_ratio="pad"``);
* ``partition_highres``: pad with white to a multiple of the tile size (336 or 168), centred, and
  cut into tiles in raster order, in memory;
* :class:`LongLlavaProcessor` expands every ``<image>`` placeholder to the model's per-image token
  count (``image_token_id`` positions), checks placeholders against images and the length limit,
  and pads batches (left for generation, right for training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from longllava.core.records import IMAGE_PLACEHOLDER
from longllava.errors import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IGNORE_INDEX = -100


def open_image(image: Any) -> Image.Image:
    """A PIL image, a path or a uint8 array -> RGB PIL image, with a clear error for bad files."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image {path}: {error}") from error


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def image_to_tensor(image: Any, size: int = 336) -> torch.Tensor:
    """(3, size, size) float tensor: pad to square with the CLIP mean colour, bicubic resize, normalise."""
    mean_colour = tuple(int(round(m * 255)) for m in CLIP_MEAN)
    square = pad_to_square(open_image(image), mean_colour).resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(square, dtype=np.float32) / 255.0
    array = (array - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@dataclass
class HighResPartition:
    global_view: Image.Image
    tiles: list[Image.Image]  # raster order
    rows: int
    cols: int
    tile_size: int


def partition_highres(image: Any, tile_size: int = 336) -> HighResPartition:
    """Pad with white to a multiple of ``tile_size`` (centred) and cut into tiles in raster order.
    Each tile is later resized to the encoder's 336 px, whatever ``tile_size`` is."""
    if tile_size <= 0:
        raise InputError(f"tile size must be positive, got {tile_size}")
    image = open_image(image)
    width, height = image.size
    cols, rows = math.ceil(width / tile_size), math.ceil(height / tile_size)
    canvas = Image.new("RGB", (cols * tile_size, rows * tile_size), (255, 255, 255))
    canvas.paste(image, ((cols * tile_size - width) // 2, (rows * tile_size - height) // 2))
    tiles = [
        canvas.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]
    return HighResPartition(image, tiles, rows, cols, tile_size)


class LongLlavaProcessor:
    """Tokenizer + image preprocessing for one model config."""

    def __init__(self, tokenizer, image_token_id: int, image_seq_length: int, max_length: int, image_size: int = 336):
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.image_seq_length = image_seq_length
        self.max_length = max_length
        self.image_size = image_size

    @classmethod
    def for_model(cls, model, tokenizer) -> "LongLlavaProcessor":
        config = model.config
        return cls(
            tokenizer,
            image_token_id=config.image_token_id,
            image_seq_length=config.image_seq_length,
            max_length=config.max_sequence_length,
            image_size=config.vision_config.image_size,
        )

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def tokenize(self, text: str) -> list[int]:
        """Text with ``<image>`` placeholders -> ids, each placeholder expanded to the image's tokens."""
        ids: list[int] = []
        for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if i:
                ids.extend([self.image_token_id] * self.image_seq_length)
            if chunk:
                ids.extend(self.tokenizer(chunk, add_special_tokens=False).input_ids)
        return ids

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        if not images:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([image_to_tensor(image, self.image_size) for image in images])

    def _check(self, ids: list[int], num_images: int, where: str) -> None:
        placeholders = ids.count(self.image_token_id) // self.image_seq_length
        if placeholders != num_images:
            raise InputError(
                f"{where}: {placeholders} <image> placeholders but {num_images} images; every "
                "placeholder needs exactly one image and vice versa"
            )
        if len(ids) > self.max_length:
            raise InputError(
                f"{where}: {len(ids)} tokens exceed the model's max_sequence_length={self.max_length} "
                f"({num_images} images of {self.image_seq_length} tokens); use fewer images"
            )

    def __call__(self, prompts: Sequence[str], images: Sequence[Sequence[Any]], padding_side: str = "left") -> dict:
        """Batch of generation prompts (with ``<image>`` placeholders) and their images -> model inputs.
        Rows may hold different numbers of images; ``pixel_values`` stacks all images in row order."""
        if len(prompts) != len(images):
            raise InputError(f"{len(prompts)} prompts but {len(images)} image lists")
        rows = []
        for i, (prompt, row_images) in enumerate(zip(prompts, images)):
            ids = self.tokenize(prompt)
            self._check(ids, len(row_images), f"prompt {i}")
            rows.append(ids)
        input_ids, attention_mask = self._pad(rows, padding_side)
        all_images = [image for row_images in images for image in row_images]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": self.pixel_values(all_images)}

    def encode_training(self, segments: Sequence[tuple[str, bool]], num_images: int) -> tuple[list[int], list[int]]:
        """(text, supervised) segments -> (input_ids, labels) with labels only on supervised text."""
        ids: list[int] = []
        labels: list[int] = []
        for text, supervised in segments:
            piece = self.tokenize(text)
            ids.extend(piece)
            labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))
        labels = [IGNORE_INDEX if t == self.image_token_id else label for t, label in zip(ids, labels)]
        self._check(ids, num_images, "training sample")
        return ids, labels

    def _pad(self, rows: list[list[int]], padding_side: str) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, span] = 1
        return input_ids, attention_mask
