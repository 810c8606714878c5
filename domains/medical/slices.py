"""Slice selection and lazy slice rendering: a CT volume -> RGB images with their index and z (mm).

Images are rendered on access, one at a time, from the volume's HU array (windowing + resizing
need a few MB per slice), so a whole scan never exists twice in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
from PIL import Image

from longllava.domains.medical.ct import CTVolume
from longllava.domains.medical.windowing import DEFAULT_WINDOWS, Window, parse_windows, render_slice
from longllava.errors import InputError

DEFAULT_MAX_SLICES = 256  # the paper evaluates 100-984 slices; 256 is the median CT-RATE depth
DEFAULT_SIZE = 336  # CLIP ViT-L/14-336 input side


@dataclass(frozen=True)
class CTSlice:
    image: Image.Image  # RGB uint8, longer side = size, physical in-plane aspect
    index: int  # z index in the (canonical) volume
    z_mm: float  # patient superior coordinate of the slice


def select_slice_indices(
    slice_z_mm: Sequence[float] | np.ndarray,
    *,
    max_slices: int | None = None,
    every: int | None = None,
    num_slices: int | None = None,
    z_spacing_mm: float | None = None,
) -> list[int]:
    """Indices (ascending) of the slices to keep; at most one rule, default ``max_slices=256``.

    - ``max_slices=N``: all slices if there are at most N, else N evenly spaced (first and last kept);
    - ``every=K``: every K-th slice from the first;
    - ``num_slices=N``: N evenly spaced slices (all if fewer);
    - ``z_spacing_mm=MM``: the slice nearest to each of z0, z0 + MM, ... (no duplicates).
    """
    rules = {k: v for k, v in dict(max_slices=max_slices, every=every, num_slices=num_slices, z_spacing_mm=z_spacing_mm).items() if v is not None}
    if len(rules) > 1:
        raise InputError(f"choose one slice selection rule, got {', '.join(rules)}")
    rule, value = next(iter(rules.items())) if rules else ("max_slices", DEFAULT_MAX_SLICES)
    if not value > 0:
        raise InputError(f"{rule} must be > 0, got {value}")
    z = np.asarray(slice_z_mm, dtype=np.float64)
    count = len(z)
    if rule == "every":
        if int(value) != value:
            raise InputError(f"every must be a whole number of slices, got {value}")
        return list(range(0, count, int(value)))
    if rule in ("max_slices", "num_slices"):
        if int(value) != value:
            raise InputError(f"{rule} must be a whole number, got {value}")
        if count <= value:
            return list(range(count))
        return sorted(set(np.rint(np.linspace(0, count - 1, int(value))).astype(int).tolist()))
    targets = np.arange(z[0], z[-1] + value / 2, value)
    right = np.clip(np.searchsorted(z, targets), 1, count - 1) if count > 1 else np.zeros(len(targets), dtype=int)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(z[left] - targets) <= np.abs(z[right] - targets), left, right)
    return sorted(set(nearest.tolist()))


class CTSliceSequence(Sequence[CTSlice]):
    """The selected slices of a volume, rendered lazily: ``len``, indexing and iteration."""

    def __init__(self, volume: CTVolume, indices: list[int], windows: tuple[Window, ...], size: int):
        self.volume = volume
        self.indices = indices
        self.windows = windows
        self.size = size

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, item: int) -> CTSlice: ...
    @overload
    def __getitem__(self, item: slice) -> list[CTSlice]: ...
    def __getitem__(self, item: int | slice) -> CTSlice | list[CTSlice]:
        if isinstance(item, slice):
            return [self._render(i) for i in self.indices[item]]
        return self._render(self.indices[item])

    def __iter__(self) -> Iterator[CTSlice]:
        return (self._render(i) for i in self.indices)

    @property
    def z_mm(self) -> list[float]:
        return [float(self.volume.slice_z_mm[i]) for i in self.indices]

    def _render(self, index: int) -> CTSlice:
        image = render_slice(self.volume.hu[index], self.windows, self.volume.spacing_mm[1:], self.size)
        return CTSlice(image, int(index), float(self.volume.slice_z_mm[index]))


def ct_to_slices(
    volume: CTVolume,
    *,
    windows: str | Window | Sequence[str | Window] = DEFAULT_WINDOWS,
    max_slices: int | None = None,
    every: int | None = None,
    num_slices: int | None = None,
    z_spacing_mm: float | None = None,
    size: int = DEFAULT_SIZE,
) -> CTSliceSequence:
    """Axial slices of ``volume`` as RGB images (three windows as channels, or one window as gray).

    ``windows`` takes preset names (lung, mediastinum, abdomen, bone, brain), ``WIDTH/LEVEL``
    strings or :class:`Window` objects. See :func:`select_slice_indices` for the selection rules.
    """
    if size < 1:
        raise InputError(f"size must be >= 1 pixel, got {size}")
    indices = select_slice_indices(
        volume.slice_z_mm, max_slices=max_slices, every=every, num_slices=num_slices, z_spacing_mm=z_spacing_mm
    )
    return CTSliceSequence(volume, indices, parse_windows(windows), size)
