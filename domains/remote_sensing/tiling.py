"""Cut a scene into a geo-referenced grid of fixed-size tiles, read lazily one window at a time.

The grid feeds the core protocol as a high-resolution image: a global view (``thumbnail``) plus rows
of sub-images in raster order. Every tile keeps its row/col, its pixel window in the full-resolution
scene and its bounds in the scene CRS and in lon/lat, so an answer naming a tile maps back to the map
(:func:`tile_to_geo`, :meth:`TileGrid.to_geojson`).

Dropped tiles: with ``drop_empty=True`` all-nodata tiles are left out of ``TileGrid.tiles`` but the
grid keeps its full ``rows`` x ``cols`` shape; their positions are listed in ``TileGrid.dropped``,
``TileGrid.tile_at(row, col)`` returns None for them, :func:`tile_to_geo` still locates them, and
the GeoJSON has a feature for every cell with a ``dropped`` property. A consumer can skip them or
stand in a blank image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image
from rasterio.windows import Window

from longllava.core.grid import GridPlan, plan_grid
from longllava.domains.remote_sensing.scene import Scene, footprint_bounds
from longllava.errors import InputError


@dataclass(eq=False)
class Tile:
    """One grid cell. ``window`` is in full-resolution scene pixels; ``image()`` reads it."""

    row: int
    col: int
    window: Window
    grid: TileGrid = field(repr=False)
    _valid_fraction: float | None = field(default=None, repr=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the scene CRS (pixel coordinates without a CRS)."""
        return footprint_bounds(self.footprint)

    @cached_property
    def footprint(self) -> list[tuple[float, float]]:
        """Closed CCW polygon ring in the scene CRS: exact for rotated / sheared transforms."""
        return self.grid.scene.footprint(self.window)

    @cached_property
    def lonlat_footprint(self) -> list[tuple[float, float]] | None:
        return self.grid.scene.lonlat_footprint(self.window)

    @property
    def lonlat_bounds(self) -> tuple[float, float, float, float] | None:
        ring = self.lonlat_footprint
        return None if ring is None else footprint_bounds(ring)

    @property
    def valid_fraction(self) -> float:
        """Share of the tile's in-scene pixels that hold data (read on first use, or by ``image()``)."""
        if self._valid_fraction is None:
            valid = self.grid.scene.read_valid(self.window, self.grid.plan.content_shape(self.window))
            self._valid_fraction = float(np.count_nonzero(valid)) / valid.size
        return self._valid_fraction

    def image(self) -> Image.Image:
        """The tile as a ``tile`` x ``tile`` RGB uint8 image; the part beyond the scene edge is black."""
        image, valid = self.grid.scene.read_image(self.window, self.grid.plan.content_shape(self.window),
                                                  pad_to=self.grid.tile)
        self._valid_fraction = float(np.count_nonzero(valid)) / valid.size
        return image

    def to_geo(self) -> dict:
        return tile_to_geo(self.grid, self.row, self.col)


@dataclass(eq=False)
class TileGrid:
    """A scene cut into ``rows`` x ``cols`` tiles; ``tiles`` in raster order (dropped ones left out)."""

    scene: Scene = field(repr=False)
    plan: GridPlan
    tiles: list[Tile] = field(default_factory=list, repr=False)
    dropped: list[tuple[int, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.plan.rows

    @property
    def cols(self) -> int:
        return self.plan.cols

    @property
    def tile(self) -> int:
        return self.plan.tile

    @property
    def overlap(self) -> int:
        return self.plan.overlap

    @property
    def downsample(self) -> int:
        return self.plan.downsample

    @property
    def num_dropped(self) -> int:
        return len(self.dropped)

    @property
    def crs(self):
        return self.scene.crs

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.scene.bounds

    @cached_property
    def lonlat_bounds(self) -> tuple[float, float, float, float] | None:
        return self.scene.lonlat_bounds(Window(0, 0, self.scene.width, self.scene.height))

    @property
    def gsd(self) -> float | None:
        """Ground sampling distance of the tiles in metres (native GSD x downsample); None without CRS."""
        return None if self.scene.gsd is None else self.scene.gsd * self.downsample

    @cached_property
    def thumbnail(self) -> Image.Image:
        """Global view of the whole scene (<= 1024 px a side) from the scene's decimated read."""
        return self.scene.preview()[0].copy()

    def tile_at(self, row: int, col: int) -> Tile | None:
        """The tile at (row, col); None if it was dropped as all-nodata."""
        self.plan.window(row, col)  # range check
        index = self._index.get((row, col))
        return None if index is None else self.tiles[index]

    @cached_property
    def _index(self) -> dict[tuple[int, int], int]:
        return {(t.row, t.col): i for i, t in enumerate(self.tiles)}

    def summary(self) -> dict:
        return {
            "path": str(self.scene.path), "rows": self.rows, "cols": self.cols, "tile": self.tile,
            "overlap": self.overlap, "crs": self.crs.to_string() if self.crs else None,
            "bounds": list(self.bounds), "lonlat_bounds": list(self.lonlat_bounds) if self.lonlat_bounds else None,
            "gsd": self.gsd, "downsample": self.downsample, "num_tiles": len(self.tiles),
            "num_dropped": self.num_dropped, "dropped": [list(p) for p in self.dropped],
            "bands": list(self.scene.bands), "dtype": self.scene.dtype,
            "stretch": self.scene.stretch.to_dict() if self.scene.stretch else None,
        }

    def to_geojson(self) -> dict:
        """RFC 7946 FeatureCollection, one Polygon feature per cell (lon/lat, CCW rings).

        Properties: row, col, window [col_off, row_off, width, height] (full-resolution pixels),
        bounds (scene CRS), valid_fraction (reads tiles not read yet), dropped. Without a CRS the
        geometries are null and only the pixel properties locate a cell.
        """
        features = []
        for row in range(self.rows):
            for col in range(self.cols):
                geo = tile_to_geo(self, row, col)
                tile = self.tile_at(row, col)
                ring = geo["lonlat_footprint"]
                features.append({
                    "type": "Feature",
                    "id": f"r{row}c{col}",
                    "geometry": None if ring is None else {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
                    "properties": {
                        "row": row, "col": col, "window": geo["window"], "bounds": geo["bounds"],
                        "valid_fraction": 0.0 if tile is None else tile.valid_fraction,
                        "dropped": tile is None,
                    },
                })
        collection = {"type": "FeatureCollection", "features": features}
        if self.lonlat_bounds is not None:
            collection["bbox"] = list(self.lonlat_bounds)
        return collection


def tile_scene(scene: Scene, *, tile: int = 336, overlap: int = 0, max_tiles: int | None = None,
               drop_empty: bool = False) -> TileGrid:
    """Grid of ``tile`` x ``tile`` tiles over ``scene`` (stride ``tile - overlap``), raster order.

    Nothing is read here except, with ``drop_empty``, each tile's valid mask (to drop all-nodata
    tiles). When the full-resolution grid would exceed ``max_tiles``, tiles are read at the smallest
    integer downsample that fits (GDAL serves such reads from overviews); ``grid.gsd`` reports it.
    A tile larger than the scene gives a 1 x 1 grid with a padded tile.
    """
    plan = plan_grid(scene.width, scene.height, tile=tile, overlap=overlap, max_tiles=max_tiles)
    grid = TileGrid(scene=scene, plan=plan)
    for row in range(plan.rows):
        for col in range(plan.cols):
            cell = Tile(row=row, col=col, window=plan.window(row, col), grid=grid)
            if drop_empty and cell.valid_fraction == 0.0:
                grid.dropped.append((row, col))
            else:
                grid.tiles.append(cell)
    if not grid.tiles:
        raise InputError(
            f"{scene.path}: every one of the {plan.rows}x{plan.cols} tiles is nodata (nodata={scene.nodata}); "
            "check the nodata value and mask, or tile without drop_empty"
        )
    return grid


def tile_to_geo(grid: TileGrid, row: int, col: int) -> dict:
    """Where tile (row, col) lies: pixel window, bounds and footprint in the scene CRS and in lon/lat.

    Works for dropped cells too. Lon/lat entries are None for scenes without a CRS.
    """
    window = grid.plan.window(row, col)
    scene = grid.scene
    ring = scene.footprint(window)
    lonlat_ring = scene.lonlat_footprint(window)
    return {
        "row": row, "col": col,
        "window": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
        "crs": scene.crs.to_string() if scene.crs else None,
        "bounds": list(footprint_bounds(ring)),
        "footprint": [list(p) for p in ring],
        "lonlat_bounds": None if lonlat_ring is None else list(footprint_bounds(lonlat_ring)),
        "lonlat_footprint": None if lonlat_ring is None else [list(p) for p in lonlat_ring],
        "gsd": grid.gsd, "downsample": grid.downsample,
    }


def grid_to_geojson(grid: TileGrid) -> dict:
    """The grid as a GeoJSON FeatureCollection (see :meth:`TileGrid.to_geojson`)."""
    return grid.to_geojson()
