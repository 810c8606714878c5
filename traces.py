"""The one trace schema: which image of a prompt was which.

Every image sent to the model carries an :class:`ImageTrace`, so an answer can be traced back to
the data: a CT slice by its index in the volume and its z in mm, a scene tile by its grid row /
column, pixel window and bounds (scene CRS and lon/lat), a video frame by its time, a dated scene
by its date, a dataset image by its record. The protocol adds the image's place in the prompt
(``kind``: image / frame / global / tile, and the frame or tile position); prediction files,
``ask --json``, V-NIAH and the demos all read the same keys.

This module sits at the bottom of the layers (beside :mod:`longllava.errors`): it imports nothing
from the package, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

@dataclass(frozen=True)
class ImageTrace:
    """Where one image came from. Unset fields are left out of :meth:`to_dict`."""

    path: str | None = None  # the file the image was read from
    record: str | None = None  # dataset record id
    index: int | None = None  # position among the record's images
    slice_index: int | None = None  # CT: slice index along z in the canonical volume
    z_mm: float | None = None  # CT: slice position in mm (patient z, inferior -> superior)
    row: int | None = None  # tile grid row (0 at the top)
    col: int | None = None  # tile grid column (0 at the left)
    window: tuple[int, int, int, int] | None = None  # pixel window: col_off, row_off, width, height
    bounds: tuple[float, float, float, float] | None = None  # left, bottom, right, top in the scene CRS
    crs: str | None = None  # the scene CRS, e.g. "EPSG:32618"
    lonlat_bounds: tuple[float, float, float, float] | None = None  # west, south, east, north in degrees
    time_s: float | None = None  # video / cine frame: presentation time in seconds
    date: str | None = None  # dated scene: acquisition date, ISO 8601
    needle: str | None = None  # V-NIAH: the needle's colour on the image that holds it

    def to_dict(self) -> dict[str, Any]:
        return {key: (list(value) if isinstance(value, tuple) else value)
                for key, value in asdict(self).items() if value is not None}


def trace_dict(trace: ImageTrace | dict[str, Any] | None) -> dict[str, Any]:
    """A trace as the plain dict the protocol and the prediction files carry."""
    if trace is None:
        return {}
    if isinstance(trace, ImageTrace):
        return trace.to_dict()
    return dict(trace)
