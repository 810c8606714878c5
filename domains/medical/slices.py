"""Slice selection and lazy slice rendering: a CT volume -> RGB images with their index and z (mm).

Images are rendered on access from the volume's HU array (windowing + resizing need a few MB per
slice), so a whole scan never exists twice in memory. Iterating renders ahead in a small thread
pool (slices are independent, and the bulk of a render, numpy's matrix products and casts, runs
without the GIL), yielding in order with at most ``2 * workers`` slices rendered or rendering ahead of the
consumer; indexing renders the one slice asked for, in the caller's thread.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import overload

import numpy as np
from PIL import Image

from longllava.domains.medical.ct import CTVolume
from longllava.domains.medical.windowing import DEFAULT_WINDOWS, Window, parse_windows, render_slice
from longllava.errors import InputError

DEFAULT_MAX_SLICES = 256  # the paper evaluates 100-984 slices; 256 is the median CT-RATE depth
DEFAULT_SIZE = 336  # CLIP ViT-L/14-336 input side
MAX_DEFAULT_WORKERS = 4  # the Python between a render's numpy calls holds the GIL: returns shrink with more threads


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_render_workers() -> int:
    """Threads that render slices by default: the cores this process may use, at most 4."""
    return max(1, min(MAX_DEFAULT_WORKERS, usable_cores()))


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
    """The selected slices of a volume, rendered lazily: ``len``, indexing and iteration.

    Iteration (and slicing) render with ``workers`` threads, ``max_in_flight`` slices ahead at
    most; ``workers=1`` renders each slice when it is asked for, in the caller's thread.
    """

    def __init__(self, volume: CTVolume, indices: list[int], windows: tuple[Window, ...], size: int, workers: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"workers must be a whole number >= 1 (1 renders in the calling thread), got {workers!r}")
        self.volume = volume
        self.indices = indices
        self.windows = windows
        self.size = size
        self.workers = workers

    @property
    def max_in_flight(self) -> int:
        """Slices submitted to the pool and not yet yielded, at most: one rendering and one queued per worker."""
        return 2 * self.workers

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, item: int) -> CTSlice: ...
    @overload
    def __getitem__(self, item: slice) -> list[CTSlice]: ...
    def __getitem__(self, item: int | slice) -> CTSlice | list[CTSlice]:
        if isinstance(item, slice):
            return list(self._rendered(self.indices[item]))
        return self._render(self.indices[item])

    def __iter__(self) -> Iterator[CTSlice]:
        return self._rendered(self.indices)

    @property
    def z_mm(self) -> list[float]:
        return [float(self.volume.slice_z_mm[i]) for i in self.indices]

    def _rendered(self, indices: list[int]) -> Iterator[CTSlice]:
        """``indices`` rendered in order; a generator, so nothing starts before the first ``next``."""
        if self.workers == 1 or len(indices) < 2:
            yield from map(self._render, indices)
            return
        with ThreadPoolExecutor(min(self.workers, len(indices)), thread_name_prefix="ct-slices") as pool:
            pending: deque[Future[CTSlice]] = deque()
            try:
                for index in indices:
                    if len(pending) == self.max_in_flight:
                        # result() re-raises a worker's exception as it was raised there.
                        yield pending.popleft().result()
                    pending.append(pool.submit(self._render, index))
                while pending:
                    yield pending.popleft().result()
            finally:
                # Early stop (close, an error, the iterator dropped): drop the queued renders, so
                # leaving the pool waits for the at most ``workers`` running ones only.
                for future in pending:
                    future.cancel()

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
    workers: int | None = None,
) -> CTSliceSequence:
    """Axial slices of ``volume`` as RGB images (three windows as channels, or one window as gray).

    ``windows`` takes preset names (lung, mediastinum, abdomen, bone, brain), ``WIDTH/LEVEL``
    strings or :class:`Window` objects. See :func:`select_slice_indices` for the selection rules.
    ``workers``: threads that render while iterating (default :func:`default_render_workers`;
    1 renders serially in the caller's thread); the images are the same whatever the count.
    """
    if size < 1:
        raise InputError(f"size must be >= 1 pixel, got {size}")
    indices = select_slice_indices(
        volume.slice_z_mm, max_slices=max_slices, every=every, num_slices=num_slices, z_spacing_mm=z_spacing_mm
    )
    return CTSliceSequence(volume, indices, parse_windows(windows), size, default_render_workers() if workers is None else workers)
