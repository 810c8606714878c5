"""The CT volume that every medical reader returns: HU in the canonical orientation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longllava.domains.medical.orientation import CANONICAL_ORIENTATION


class CTSpacingWarning(UserWarning):
    """Missing slices or irregular slice spacing in a DICOM series."""


@dataclass
class CTVolume:
    """One CT volume in HU, canonical orientation (see the module docstring)."""

    hu: np.ndarray = field(repr=False)  # (z, y, x); int16 when the HU are integers that fit, else float32
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    slice_z_mm: np.ndarray = field(repr=False)  # (z,), patient superior coordinate of each slice, ascending
    affine_ras: np.ndarray = field(repr=False)  # 4x4: (z, y, x, 1) index -> RAS mm
    orientation: str = CANONICAL_ORIENTATION
    metadata: dict[str, Any] = field(default_factory=dict)  # non-identifying acquisition fields only
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def hu_range(self) -> tuple[float, float]:
        return float(self.hu.min()), float(self.hu.max())
