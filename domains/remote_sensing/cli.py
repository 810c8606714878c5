"""CLI for remote sensing: ``scene-tiles`` and the ``--scene`` input of ``ask``."""

from __future__ import annotations

import argparse
import json

from longllava.core.cli import ask_inputs
from longllava.errors import InputError

DEFAULT_GDAL_CACHE_MB = 256  # bounds GDAL's block cache (default: 5% of RAM), and so the peak RSS


def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--bands takes 1-based band indexes like 4,3,2, got {text!r}") from error


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    tiles = commands.add_parser(
        "scene-tiles", help="cut a large raster scene into geo-referenced tiles (PNGs, thumbnail, grid.geojson)")
    tiles.add_argument("path", help="GeoTIFF / COG or any GDAL raster")
    tiles.add_argument("--out", required=True, help="output folder")
    tiles.add_argument("--tile", type=int, default=336, help="tile size in pixels (336, 168, 512, ...)")
    tiles.add_argument("--overlap", type=int, default=0, help="overlap between neighbouring tiles in pixels")
    tiles.add_argument("--max-tiles", type=int, default=None,
                       help="read at a coarser level when the full-resolution grid has more tiles")
    tiles.add_argument("--bands", type=_bands, default=None, help="bands shown as R,G,B (1-based), e.g. 4,3,2")
    tiles.add_argument("--drop-empty", action="store_true", help="leave out all-nodata tiles")
    tiles.add_argument("--gdal-cache-mb", type=int, default=DEFAULT_GDAL_CACHE_MB)
    tiles.add_argument("--json", action="store_true", help="print the summary as JSON only")
    tiles.set_defaults(func=_scene_tiles)

    scenes = ask_inputs(commands, "scenes", ("--scene",), scene_visuals)
    if scenes is not None:
        scenes.add_argument("--scene", metavar="PATH", help="a GeoTIFF / raster scene as global view + tile grid (tiles of --tile px)")
        scenes.add_argument("--max-tiles", type=int, default=64, help="scene tiles at most (coarser level beyond)")


def scene_visuals(args: argparse.Namespace) -> list:
    """``ask --scene``: the scene as global view + tile grid."""
    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene
    from longllava.domains.remote_sensing.visuals import scene_input

    with open_scene(args.scene) as scene:
        return [scene_input(tile_scene(scene, tile=args.tile, max_tiles=args.max_tiles))]


def _scene_tiles(args: argparse.Namespace) -> int:
    from pathlib import Path

    import rasterio

    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_CACHEMAX=args.gdal_cache_mb * 1024 * 1024):
        with open_scene(args.path, bands=args.bands) as scene:
            grid = tile_scene(scene, tile=args.tile, overlap=args.overlap, max_tiles=args.max_tiles,
                              drop_empty=args.drop_empty)
            for tile in grid.tiles:
                tile.image().save(out / f"tile_r{tile.row:03d}_c{tile.col:03d}.png")
            grid.thumbnail.save(out / "thumbnail.png")
            (out / "grid.geojson").write_text(json.dumps(grid.to_geojson()))
            summary = {**grid.summary(), "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['path']}: {summary['rows']} x {summary['cols']} tiles of {summary['tile']} px "
              f"({summary['num_tiles']} written, {summary['num_dropped']} dropped), downsample "
              f"{summary['downsample']}, gsd {summary['gsd']} m, crs {summary['crs']}")
        print(f"bounds {summary['bounds']}  lon/lat {summary['lonlat_bounds']}")
        print(f"wrote tiles, thumbnail.png, grid.geojson and summary.json to {out}")
    return 0
