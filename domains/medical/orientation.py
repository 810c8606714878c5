"""The canonical CT orientation, shared by the NIfTI and DICOM readers: (z, y, x) = S, P, L.

Both readers check the voxel-to-patient transform (:func:`check_affine`), flag oblique
acquisitions (:func:`is_oblique`) and reorient by flips and transposes only (:func:`to_canonical`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

from longllava.errors import InputError

CANONICAL_ORIENTATION = "LPS"
# nibabel orientation of the canonical array axes (z, y, x): (RAS world axis, +1 along / -1 against it).
CANONICAL_ORNT = np.array([[2, 1], [1, -1], [0, -1]])
# Axis-aligned within this angle (cosine) counts as not oblique.
OBLIQUE_COS = np.cos(np.deg2rad(0.5))


def check_affine(affine: np.ndarray, source: Any) -> None:
    """A clear error for a degenerate voxel-to-patient transform (zero / non-finite columns)."""
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(np.isfinite(affine)) or np.any(norms <= 1e-6) or abs(np.linalg.det(affine[:3, :3])) <= 1e-9:
        raise InputError(
            f"{source}: the voxel-to-patient transform is degenerate (zero or non-finite spacing / direction, "
            f"column lengths {np.round(norms, 4).tolist()} mm); fix the header spacing and orientation"
        )


def is_oblique(affine: np.ndarray) -> bool:
    """Whether some voxel axis is more than 0.5 degrees off every patient axis."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.any(np.abs(directions).max(axis=0) < OBLIQUE_COS))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flip / transpose ``data`` (axes as in ``affine``'s columns) to (z, y, x) = S, P, L; views only.

    Returns the reoriented array, its affine, the source orientation and the transform (nibabel
    ornt arrays: row i = (canonical axis of source axis i, -1 if flipped)).
    """
    source = io_orientation(affine)
    transform = ornt_transform(source, CANONICAL_ORNT)
    out = data
    for axis, flip in enumerate(transform[:, 1]):
        if flip == -1:
            out = np.flip(out, axis=axis)
    out = out.transpose(np.argsort(transform[:, 0]))
    return out, affine @ inv_ornt_aff(transform, data.shape), source, transform
