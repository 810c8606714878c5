"""Training data: records -> protocol -> tokenised samples (labels on answers only) -> packs -> batches.

* :class:`SampleEncoder` renders a record's conversation through the protocol and tokenises it.
* :func:`pack_samples` groups samples into rows of at most ``max_length`` tokens, in order, never
  dropping the sample that overflows (it opens the next row). Inside a row, ``position_ids``
  restart at 0 for every sample: the model then isolates samples (block-diagonal attention, Mamba
  state and conv reset), so packing never leaks one sample into another.
* :class:`PackedDataset` decodes images lazily in ``__getitem__`` (i.e. in dataloader workers).
* :class:`LengthGroupedSampler` batches rows of similar length; deterministic per (seed, epoch) so
  a resumed run sees the same order.
* :func:`collate` pads rows to a common length with a separate pad segment (its own positions,
  labels ignored), so no attention mask is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from longllava.core import protocol
from longllava.core.processor import IGNORE_INDEX, LongLlavaProcessor, image_to_tensor
from longllava.core.records import Record
from longllava.errors import InputError


@dataclass
class TokenizedSample:
    id: str
    input_ids: list[int]
    labels: list[int]
    images: list[Any]  # references (path / PIL image), decoded lazily

    def __len__(self) -> int:
        return len(self.input_ids)


class SampleEncoder:
    def __init__(self, processor: LongLlavaProcessor):
        self.processor = processor

    def __call__(self, record: Record) -> TokenizedSample:
        try:
            turns = protocol.record_turns(record)
        except ValueError as error:
            raise InputError(str(error)) from error
        if not turns:
            raise InputError(f"record {record.id} ({record.source}): no (human, gpt) turn pair to train on")
        ids, labels = self.processor.encode_training(protocol.training_segments(turns), len(record.images))
        return TokenizedSample(record.id, ids, labels, list(record.images))


def pack_samples(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Groups of sample indices, in order, each group's total length <= ``max_length``."""
    packs: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        if length > max_length:
            raise InputError(
                f"sample {index} has {length} tokens, more than max_length={max_length}; raise "
                "max_length or use fewer images for that sample (samples are never truncated)"
            )
        if current and used + length > max_length:
            packs.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        packs.append(current)
    return packs


class PackedDataset(Dataset):
    def __init__(self, samples: Sequence[TokenizedSample], max_length: int, packing: bool, image_size: int = 336):
        self.samples = list(samples)
        self.image_size = image_size
        packs = pack_samples([len(s) for s in self.samples], max_length)  # also rejects over-long samples
        self.groups = packs if packing else [[i] for i in range(len(self.samples))]

    def __len__(self) -> int:
        return len(self.groups)

    def lengths(self) -> list[int]:
        return [sum(len(self.samples[i]) for i in group) for group in self.groups]

    def __getitem__(self, index: int) -> dict[str, Any]:
        input_ids, labels, positions, images = [], [], [], []
        for i in self.groups[index]:
            sample = self.samples[i]
            input_ids.extend(sample.input_ids)
            labels.extend(sample.labels)
            positions.extend(range(len(sample)))
            images.extend(sample.images)
        pixel_values = (
            torch.stack([image_to_tensor(image, self.image_size) for image in images])
            if images
            else torch.zeros(0, 3, self.image_size, self.image_size)
        )
        return {
            "input_ids": torch.tensor(input_ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(positions),
            "pixel_values": pixel_values,
        }


class LengthGroupedSampler(Sampler[int]):
    """Batches of similar length, in random order.

    Shuffle; cut into mega-batches of ``batch_size * mega`` rows; sort each by length and cut it into
    batches (little padding); then shuffle the batches. Without that last shuffle, consecutive steps
    would walk a mega-batch from its longest to its shortest rows, and when length correlates with
    the task (it usually does) the model would see one task for dozens of steps, then the next.
    Deterministic per (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.mega
        for start in range(0, len(order), size):
            block = sorted(order[start : start + size], key=lambda i: -self.lengths[i])
            batches = [block[i : i + self.batch_size] for i in range(0, len(block), self.batch_size)]
            for b in torch.randperm(len(batches), generator=generator).tolist():
                yield from batches[b]


def make_collate(pad_token_id: int):
    def collate(rows: Iterable[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = list(rows)
        width = max(len(row["input_ids"]) for row in rows)
        batch = {
            "input_ids": torch.full((len(rows), width), pad_token_id, dtype=torch.long),
            "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
            "position_ids": torch.zeros((len(rows), width), dtype=torch.long),
        }
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            batch["input_ids"][i, :n] = row["input_ids"]
            batch["labels"][i, :n] = row["labels"]
            batch["position_ids"][i, :n] = row["position_ids"]
            batch["position_ids"][i, n:] = torch.arange(width - n)  # the pad run is a sample of its own
        batch["pixel_values"] = torch.cat([row["pixel_values"] for row in rows])
        return batch

    return collate


def mix_with_replay(
    main: Sequence[Record],
    replay: dict[str, Sequence[Record]],
    ratios: dict[str, float],
    seed: int = 0,
) -> list[Record]:
    """Stage III data: the main (multi-image) records plus, for each replay source, a share of
    ``ratio * len(main)`` records drawn without replacement (cycling when the source is small),
    interleaved deterministically."""
    generator = torch.Generator().manual_seed(seed)
    mixed = list(main)
    for name, records in replay.items():
        if not records:
            raise InputError(f"replay source {name!r} is empty")
        want = int(math.ceil(ratios.get(name, 0.0) * len(main)))
        order = torch.randperm(len(records), generator=generator).tolist()
        mixed.extend(records[order[i % len(order)]] for i in range(want))
    shuffle = torch.randperm(len(mixed), generator=generator).tolist()
    return [mixed[i] for i in shuffle]


def read_llava_json(path, image_root=None, *, skip_bad: bool = False, errors=None) -> list[Record]:
    """The reference training format: a JSON list of ``{"id"?, "image"?: str | [str], "conversations":
    [{"from": "human"|"gpt", "value"}], "layout"?: "images"|"stack"|"highres", "grid"?: [rows, cols]}``.
    Image paths are resolved against ``image_root`` (default: the JSON file's folder); text-only
    records (no ``image``) are allowed. Bad records raise naming file, record and field, or are
    collected when ``skip_bad``."""
    import json
    from pathlib import Path

    from longllava.core.records import RecordErrors

    path = Path(path)
    errors = errors or RecordErrors(skip_bad)
    root = Path(image_root) if image_root else path.parent
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read LLaVA-format JSON {path}: {error}") from error
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    records = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            errors.report(path, index, "<record>", f"expected an object, got {type(item).__name__}")
            continue
        conversations = item.get("conversations")
        if not isinstance(conversations, list) or not all(
            isinstance(t, dict) and t.get("from") in ("human", "gpt") and isinstance(t.get("value"), str) for t in conversations
        ):
            errors.report(path, index, "conversations", "must be a list of {from: human|gpt, value: str}")
            continue
        images = item.get("image", [])
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            errors.report(path, index, "image", "must be a path or a list of paths")
            continue
        resolved = [root / image for image in images]
        missing = [str(p) for p in resolved if not p.is_file()]
        if missing:
            errors.report(path, index, "image", f"file not found: {missing[0]}")
            continue
        meta = {k: item[k] for k in ("layout", "grid", "type") if k in item}
        record = Record(str(item.get("id", index)), resolved, conversations, f"{path}#{index}", meta)
        try:
            protocol.record_turns(record)
        except ValueError as error:
            errors.report(path, index, "conversations", str(error))
            continue
        records.append(record)
    return records


def write_llava_json(records, path) -> None:
    """Records -> the reference training format (paths as strings, layout fields kept)."""
    import json
    from pathlib import Path

    rows = []
    for record in records:
        row = {"id": record.id, "image": [str(i) for i in record.images], "conversations": record.conversations}
        row.update({k: record.meta[k] for k in ("layout", "grid", "type") if k in record.meta})
        rows.append(row)
    Path(path).write_text(json.dumps(rows, indent=1))
