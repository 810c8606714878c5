"""``longllava bench scene``: tiling throughput and peak memory on a large tiled GeoTIFF.

Generates (unless given a path) a ``size`` x ``size`` 3-band uint8 GeoTIFF (512 px blocks, deflate,
nodata 0 outside a rotated footprint, overviews), then runs two measurements, each in a fresh
process so its peak RSS is its own:

- floor: a raw ``rasterio`` windowed read of exactly the grid's windows (the I/O floor);
- tiling: ``open_scene`` + ``tile_scene`` + ``Tile.image()`` (RGB PIL tiles, valid fractions) for
  every tile.

Targets: tiling peak RSS < 1 GB and throughput >= 0.5x the floor.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = 512
OVERVIEW_FACTORS = (2, 4, 8, 16, 32, 64)


def generate_bench_scene(path: str | Path, size: int = 30000) -> float:
    """Write the synthetic scene strip by strip (bounded memory); returns seconds taken."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    # a block-sized texture (smooth field + mild noise) shifted per strip: compressible but not constant
    yy, xx = np.mgrid[0:BLOCK, 0:BLOCK].astype(np.float32)
    texture = np.stack([np.sin(xx / (17 + 9 * b)) * np.cos(yy / (23 + 5 * b)) for b in range(3)])
    texture = (120 + 90 * texture + rng.normal(0, 6, texture.shape)).clip(1, 255).astype(np.uint8)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "nodata": 0,
        "crs": "EPSG:32618", "transform": from_origin(300000.0, 4500000.0, 0.5, 0.5),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "zlevel": 1,
        "predictor": 2, "interleave": "pixel", "BIGTIFF": "IF_SAFER",
    }
    centre = size / 2
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), rasterio.open(path, "w", **profile) as dataset:
        reps = math.ceil(size / BLOCK)
        row_texture = np.tile(texture, (1, 1, reps))[:, :, :size]
        columns = np.arange(size, dtype=np.float32)
        for row_off in range(0, size, BLOCK):
            height = min(BLOCK, size - row_off)
            strip = np.roll(row_texture[:, :height], row_off // BLOCK * 37, axis=2)
            # valid inside a diamond (|x - c| + |y - c| <= c): the rotated footprint of a real scene
            rows = np.arange(row_off, row_off + height, dtype=np.float32)[:, None]
            outside = np.abs(columns[None, :] - centre) + np.abs(rows - centre) > centre
            strip = np.where(outside[None], np.uint8(0), strip)
            dataset.write(strip, window=rasterio.windows.Window(0, row_off, size, height))
        dataset.build_overviews([f for f in OVERVIEW_FACTORS if size // f >= 64] or [2], Resampling.nearest)
    return time.perf_counter() - start


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a
    spawned child would report its parent's peak (e.g. the scene generation)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux units: KiB


def _measure_floor(path: str, tile: int, limit: int | None, cache_bytes: int, queue) -> None:
    import rasterio

    from longllava.core.grid import plan_grid

    with rasterio.Env(GDAL_CACHEMAX=cache_bytes), rasterio.open(path) as dataset:
        plan = plan_grid(dataset.width, dataset.height, tile=tile)
        cells = [(r, c) for r in range(plan.rows) for c in range(plan.cols)][:limit]
        start = time.perf_counter()
        for row, col in cells:
            dataset.read([1, 2, 3], window=plan.window(row, col))
        seconds = time.perf_counter() - start
    queue.put({"tiles": len(cells), "seconds": seconds, "peak_rss_mb": _peak_rss_mb()})


def _measure_tiling(path: str, tile: int, limit: int | None, cache_bytes: int, queue) -> None:
    import rasterio

    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene

    with rasterio.Env(GDAL_CACHEMAX=cache_bytes):
        start = time.perf_counter()
        with open_scene(path) as scene:
            grid = tile_scene(scene, tile=tile)
            thumbnail = grid.thumbnail.size
            valid = area = 0
            for cell in grid.tiles[:limit]:
                image = cell.image()
                valid += cell.valid_fraction * cell.window.width * cell.window.height
                area += cell.window.width * cell.window.height
            seconds = time.perf_counter() - start
            count = len(grid.tiles[:limit])
            assert image.size == (tile, tile)
    queue.put({"tiles": count, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "rows": grid.rows,
               "cols": grid.cols, "thumbnail": list(thumbnail), "valid_fraction": valid / area})


def _in_fresh_process(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def run_scene_bench(*, path: str | None = None, size: int = 30000, tile: int = 336, workdir: str | None = None,
                    keep: bool = False, limit: int | None = None, gdal_cache_mb: int = 256,
                    repeat: int = 2) -> dict:
    report: dict = {}
    created = None
    if path is None:
        created = Path(tempfile.mkdtemp(prefix="scene-bench-", dir=workdir))
        path = str(created / f"bench_{size}.tif")
        report["generate_s"] = round(generate_bench_scene(path, size), 1)
    try:
        cache_bytes = gdal_cache_mb * 1024 * 1024
        # alternate the two, best of ``repeat`` each: the machine may be shared, noise only slows runs down
        floors, tilings = [], []
        for _ in range(repeat):
            floors.append(_in_fresh_process(_measure_floor, path, tile, limit, cache_bytes))
            tilings.append(_in_fresh_process(_measure_tiling, path, tile, limit, cache_bytes))
        floor = min(floors, key=lambda run: run["seconds"])
        tiling = min(tilings, key=lambda run: run["seconds"])
        floor_rate = floor["tiles"] / floor["seconds"]
        rate = tiling["tiles"] / tiling["seconds"]
        report.update({
            "scene": path, "file_mb": round(os.path.getsize(path) / 2**20, 1),
            "grid": f"{tiling['rows']} x {tiling['cols']} tiles of {tile} px", "tiles_read": tiling["tiles"],
            "gdal_cache_mb": gdal_cache_mb,
            "tiles_per_s": round(rate, 1), "floor_tiles_per_s": round(floor_rate, 1),
            "ratio_vs_floor": round(rate / floor_rate, 3),
            "peak_rss_mb": round(max(run["peak_rss_mb"] for run in tilings), 1),
            "floor_peak_rss_mb": round(max(run["peak_rss_mb"] for run in floors), 1),
            "tiling_s": round(tiling["seconds"], 2), "floor_s": round(floor["seconds"], 2),
            "thumbnail": tiling["thumbnail"], "valid_fraction": round(tiling["valid_fraction"], 4),
            "targets_met": max(run["peak_rss_mb"] for run in tilings) < 1024 and rate >= 0.5 * floor_rate,
        })
    finally:
        if created is not None and not keep:
            shutil.rmtree(created, ignore_errors=True)
    return report
