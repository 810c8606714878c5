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
        scenes.add_argument("--scene", nargs="+", action="extend", metavar="PATH",  # repeated: more rasters
                            help="a GeoTIFF / raster scene as global view + tile grid (tiles of --tile px); with "
                            "--time-series, rasters of one area on several dates (files or a folder)")
        scenes.add_argument("--max-tiles", type=int, default=64, help="scene tiles at most (coarser level beyond)")
        scenes.add_argument("--time-series", action="store_true",
                            help="the --scene rasters are dates of one area: put them on the first one's grid and "
                            "send them as <vid> stacks of dates")
        scenes.add_argument("--time-series-mode", choices=("tiles", "global"), default="tiles",
                            help="tiles: a stack of the global views, then one stack of dates per tile position "
                            "(default); global: the global views only")
        scenes.add_argument("--dates", type=_dates, default=None, metavar="D,D,...",
                            help="the rasters' dates (YYYY-MM-DD, in --scene order; default: from tags or file names)")
        scenes.add_argument("--bounds", type=_bounds, default=None, metavar="L,B,R,T",
                            help="the common grid's bounds (default: the first raster's), in its CRS or --bounds-crs")
        scenes.add_argument("--bounds-crs", default=None, metavar="CRS", help="the CRS of --bounds, e.g. EPSG:4326")


def _dates(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _bounds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--bounds takes left,bottom,right,top numbers, got {text!r}") from error
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--bounds takes 4 numbers (left,bottom,right,top), got {text!r}")
    return values


def scene_visuals(args: argparse.Namespace) -> list:
    """``ask --scene``: the scene as global view + tile grid; with ``--time-series`` the dated
    rasters as time stacks."""
    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene
    from longllava.domains.remote_sensing.visuals import scene_input

    if args.time_series:
        return _time_series_visuals(args)
    time_options = [flag for flag, value in (("--dates", args.dates), ("--bounds", args.bounds),
                                             ("--bounds-crs", args.bounds_crs)) if value is not None]
    if len(args.scene) > 1 or time_options:
        raise InputError(f"{' '.join(time_options) or f'{len(args.scene)} --scene rasters'}: several dates of one "
                         "area are read with --time-series; without it --scene takes one raster")
    with open_scene(args.scene[0]) as scene:
        return [scene_input(tile_scene(scene, tile=args.tile, max_tiles=args.max_tiles))]


def _time_series_visuals(args: argparse.Namespace) -> list:
    from longllava.domains.remote_sensing.timeseries import open_time_series
    from longllava.domains.remote_sensing.visuals import time_series_visuals

    with open_time_series(args.scene, dates=args.dates, bounds=args.bounds, bounds_crs=args.bounds_crs) as series:
        return time_series_visuals(series, args.time_series_mode, tile=args.tile, max_tiles=args.max_tiles)


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
