"""Synthetic tasks with known answers: needles among images (drawn by
:mod:`longllava.eval.needles`, which V-NIAH shares), CT-like volumes with lesions, and scene-like
rasters with objects. Used to train the embedded default model. Everything is generated from a seed, so a task set is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from longllava.eval.needles import insert_needle
from longllava.examples import EXAMPLE_CT, EXAMPLE_SCENE


# ---------------------------------------------------------------------------------------------
# The synthetic task set of the embedded default model
# ---------------------------------------------------------------------------------------------

CT_PRESENCE_Q = "Is there a lesion in this CT? Answer yes or no."
CT_SLICE_Q = "Which slice shows the lesion? Answer with the slice number."
CT_COUNT_Q = "How many lesions are there? Answer with a number."
SCENE_PRESENCE_Q = "Is there a ship in this scene? Answer yes or no."
SCENE_COUNT_Q = "How many ships are there? Answer with a number."
SCENE_TILE_Q = "Which tile contains the ship? Answer with the row and column."
SLICE_LESION_Q = "Is there a lesion in this slice? Answer yes or no."
TILE_SHIP_Q = "Is there a ship in this tile? Answer yes or no."
MARK_COLOUR_Q = "What colour is the square mark? Answer with one word."
TASK_GROUPS = {  # question type -> reported group (targets: presence and needle >= 90%)
    "ct_presence": "presence", "scene_presence": "presence",
    "ct_count": "counting", "scene_count": "counting",
    "ct_slice": "localisation", "scene_tile": "localisation",
    "needle": "needle",
    # one image of a volume / scene / needle set, asked alone (trained on; not a target)
    "slice_lesion": "single-image", "tile_ship": "single-image", "mark_colour": "single-image",
}
# Calcified-nodule density: bright in all three default windows (lung, mediastinum, bone), so a
# lesion differs in colour from the soft-tissue body around the lungs, not only in brightness.
LESION_HU = 500
CT_SPACING_MM = (5.0, 1.5, 1.5)  # z, y, x
# One lesion size and one ship size: the model counts by how much of the sequence shows lesion or
# ship, so with sizes varying ~2x one large lesion looked like two small ones. With a fixed size a
# tiny model learns to count objects in one slice (held-out 65% -> 100% in the same 240 steps).
LESION_RADIUS = 5 / 64  # of the slice width
SHIP_SIZE = (50, 16)  # pixels, length x width


@dataclass
class SyntheticSpec:
    """Sizes of one synthetic task set. Defaults: what the default model trains on."""

    volumes: int = 120
    scenes: int = 120
    needles: int = 240
    ct_slices: int = 4
    ct_size: int = 64
    scene_size: int = 672
    needle_min: int = 3
    needle_max: int = 6
    max_lesions: int = 3
    max_ships: int = 3
    seed: int = 0
    # Training sets ask all of a volume's / scene's questions in one shuffled multi-turn
    # conversation (one pass over the images supervises every answer); held-out sets ask one
    # question per record, as evaluation and users do.
    multi_turn: bool = False
    # Object counts in fixed shares instead of drawn (see ``object_count``): for held-out sets,
    # where a draw over ~50 volumes can skew the counts so far that a model answering "0" or one
    # fixed number (no counting at all) scores above the 70% target.
    balanced_counts: bool = False


def make_ct_volume(rng: np.random.Generator, num_lesions: int, slices: int, size: int):
    """HU volume (z, y, x): air, a soft-tissue body, two lungs, and ``num_lesions`` dense (calcified,
    ``LESION_HU``) round lesions of one size (``LESION_RADIUS``) in the lungs, each in one slice, at
    distinct slices where possible; lesions sharing a slice do not touch. Returns the volume and the
    lesions as (z, y, x, radius) in voxels."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    body = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.47 * size)) ** 2 <= 1
    left = ((yy - c) / (0.3 * size)) ** 2 + ((xx - 0.3 * size) / (0.14 * size)) ** 2 <= 1
    right = ((yy - c) / (0.3 * size)) ** 2 + ((xx - 0.7 * size) / (0.14 * size)) ** 2 <= 1
    plane = np.full((size, size), -1000, dtype=np.int16)
    plane[body] = 40
    plane[left | right] = -850
    volume = np.repeat(plane[None], slices, axis=0)
    volume = volume + rng.normal(0, 15, volume.shape).astype(np.int16)
    zs = rng.choice(slices, size=num_lesions, replace=num_lesions > slices)
    radius = max(2, round(size * LESION_RADIUS))
    lung_points = np.argwhere(left | right)
    taken = np.zeros(volume.shape, dtype=bool)
    lesions = []
    for z in zs:
        for _ in range(200):  # a centre whose disc stays inside a lung, clear of the slice's other lesions
            y, x = lung_points[rng.integers(len(lung_points))]
            distance2 = (yy - y) ** 2 + (xx - x) ** 2
            disc = distance2 <= radius**2
            if not (disc & ~(left | right)).any() and not (taken[z] & (distance2 <= (radius + 3) ** 2)).any():
                break
        else:
            raise ValueError(f"no room for {num_lesions} lesions of radius {radius} in a {size}x{size} slice")
        volume[z][disc] = LESION_HU
        taken[z] |= disc
        lesions.append((int(z), int(y), int(x), radius))
    return volume.astype(np.int16), lesions


def make_scene(rng: np.random.Generator, num_ships: int, size: int, tile: int = 336):
    """RGB uint8 (3, H, W) of textured land and water with ``num_ships`` bright ships of one size
    (``SHIP_SIZE``, either orientation); each ship lies fully inside one tile, ships sharing a tile do
    not touch. Returns the raster and the ships as (row, col, y, x)."""
    base = rng.normal(0, 12, (3, size, size))
    land = np.array([70, 95, 55])[:, None, None]
    raster = np.clip(land + base, 0, 255)
    water = np.zeros((size, size), dtype=bool)
    water[:, : size // 3] = True
    raster[:, water] = np.clip(np.array([30, 50, 90])[:, None] + rng.normal(0, 6, (3, int(water.sum()))), 0, 255)
    ships, grid = [], size // tile
    cells = rng.choice(grid * grid, size=num_ships, replace=num_ships > grid * grid)
    taken = np.zeros((size, size), dtype=bool)
    length, width = SHIP_SIZE
    for cell in cells:
        row, col = divmod(int(cell), grid)
        for _ in range(200):  # a place in the tile clear of the ships already there
            height, breadth = (length, width) if rng.random() < 0.5 else (width, length)
            y = row * tile + int(rng.integers(10, tile - length - 10))
            x = col * tile + int(rng.integers(10, tile - length - 10))
            if not taken[max(0, y - 8) : y + height + 8, max(0, x - 8) : x + breadth + 8].any():
                break
        else:
            raise ValueError(f"no room for {num_ships} ships in a {tile}-pixel tile")
        raster[:, y : y + height, x : x + breadth] = 245
        taken[y : y + height, x : x + breadth] = True
        ships.append((row, col, y, x))
    return raster.astype(np.uint8), ships


def write_geotiff(raster: np.ndarray, path, gsd_m: float = 1.0) -> None:
    import rasterio
    from rasterio.transform import from_origin

    _, height, width = raster.shape
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", crs="EPSG:32618",
                   transform=from_origin(500000.0, 4500000.0, gsd_m, gsd_m), photometric="RGB")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(raster)


def _records(rid, images, qas, rng, multi_turn, **meta) -> list:
    """Records over ``images`` for (question, answer, type) triples: one shuffled multi-turn record,
    or one single-question record per triple."""
    from longllava.core.records import Record

    def conversation(turns):
        convo = []
        for k, (question, answer, _) in enumerate(turns):
            convo += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + question}, {"from": "gpt", "value": answer}]
        return convo

    if multi_turn:
        order = rng.permutation(len(qas))
        turns = [qas[i] for i in order]
        qtype = turns[0][2]
        return [Record(rid, images, conversation(turns), source=f"synthetic:{rid}",
                       meta={"type": qtype, "group": TASK_GROUPS[qtype], **meta})]
    return [Record(f"{rid}-{qtype}", images, conversation([(q, a, qtype)]), source=f"synthetic:{rid}-{qtype}",
                   meta={"type": qtype, "group": TASK_GROUPS[qtype], **meta}) for q, a, qtype in qas]


def object_count(rng: np.random.Generator, maximum: int, balanced_index: int | None = None) -> int:
    """0 with probability 1/2, else uniform in 1..maximum: presence questions are balanced, so a
    model that always answers "yes" (or "no") scores 50%, and every count occurs. With
    ``balanced_index`` the same shares exactly, by cycling (for maximum 3) 0, 0, 0, 1, 2, 3 over the
    task index: on whole cycles, always "0" scores 50% and "0" when empty, one fixed number
    otherwise, scores 50% + 50%/maximum (66.7%)."""
    if balanced_index is not None:
        position = balanced_index % (2 * maximum)
        return 0 if position < maximum else position - maximum + 1
    return 0 if rng.random() < 0.5 else int(rng.integers(1, maximum + 1))


def _save(image: Image.Image, path, compress_level: int = 1) -> str:
    image.save(path, compress_level=compress_level)  # lossless either way
    return str(path)


def _volume_task(out, spec: SyntheticSpec, v: int, rng: np.random.Generator) -> list:
    from longllava.domains.medical.ct import load_ct
    from longllava.domains.medical.slices import ct_to_slices
    from longllava.domains.medical.write import write_ct_dicom, write_ct_nifti

    count = object_count(rng, spec.max_lesions, v if spec.balanced_counts else None)
    volume, lesions = make_ct_volume(rng, count, spec.ct_slices, spec.ct_size)
    # Every other volume is a DICOM series, the rest NIfTI: both read back through load_ct, as
    # real data would be.
    if v % 2:
        path = out / f"ct{v:04d}_dicom"
        write_ct_dicom(volume, path, CT_SPACING_MM, uid_seed=f"synthetic:{spec.seed}:{v}")
    else:
        path = write_ct_nifti(volume, out / f"ct{v:04d}.nii.gz", CT_SPACING_MM)
    ct = load_ct(path)
    slices = list(ct_to_slices(ct, workers=1))  # the task set is generated in parallel threads already
    frames = [_save(s.image, out / f"ct{v:04d}_s{k}.png") for k, s in enumerate(slices)]
    # frame numbers (1-based, in the loader's z-ascending order) read back from the loaded HU
    lesion_frames = [k + 1 for k, s in enumerate(slices) if (ct.hu[s.index] >= 150).any()]
    meta = {"layout": "stack", "file": str(path), "lesion_frames": lesion_frames}
    qas = [(CT_PRESENCE_Q, "yes" if lesions else "no", "ct_presence"), (CT_COUNT_Q, str(len(lesions)), "ct_count")]
    if len(lesions) == 1 and len(lesion_frames) == 1:
        qas.append((CT_SLICE_Q, str(lesion_frames[0]), "ct_slice"))
    return _records(f"ct{v}", frames, qas, rng, spec.multi_turn, **meta)


def _scene_task(out, spec: SyntheticSpec, s: int, rng: np.random.Generator) -> list:
    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene

    count = object_count(rng, spec.max_ships, s if spec.balanced_counts else None)
    raster, ships = make_scene(rng, count, spec.scene_size)
    tif = out / f"scene{s:04d}.tif"
    write_geotiff(raster, tif)
    with open_scene(tif) as scene:
        grid = tile_scene(scene, tile=336)
        # Textured land and water hardly compress: storing them uncompressed is 2.5x faster to write
        # and 3x faster to read back in training, for 25% more disk.
        thumb = _save(grid.thumbnail, out / f"scene{s:04d}_global.png", compress_level=0)
        tiles = [_save(t.image(), out / f"scene{s:04d}_r{t.row}c{t.col}.png", compress_level=0) for t in grid.tiles]
        meta = {"layout": "highres", "grid": [grid.rows, grid.cols], "file": str(tif),
                "ship_tiles": [list(ship[:2]) for ship in ships]}
    qas = [(SCENE_PRESENCE_Q, "yes" if ships else "no", "scene_presence"), (SCENE_COUNT_Q, str(len(ships)), "scene_count")]
    if len(ships) == 1:
        row, col = ships[0][:2]
        qas.append((SCENE_TILE_Q, f"row {row} column {col}", "scene_tile"))
    return _records(f"scene{s}", [thumb, *tiles], qas, rng, spec.multi_turn, **meta)


def _needle_task(out, spec: SyntheticSpec, n: int, rng: np.random.Generator, haystack: Sequence[Any]) -> list:
    size = int(rng.integers(spec.needle_min, spec.needle_max + 1))
    picks = rng.choice(len(haystack), size=size, replace=size > len(haystack))
    sample = insert_needle([haystack[i] for i in picks], float(rng.random()), rng)
    frames = [_save(img if isinstance(img, Image.Image) else Image.open(img), out / f"needle{n:04d}_{k}.png")
              for k, img in enumerate(sample.images)]
    return _records(f"needle{n}", frames, [(sample.question, sample.answer, "needle")], rng, False,
                    layout="stack", needle_index=sample.needle_index, haystack_size=size)


_TASK_KINDS = ("volume", "scene", "needle")


def _generate_task(job: tuple, haystack: Sequence[Any]) -> list:
    """The records of one volume / scene / needle set. Its random stream is derived from (seed,
    kind, index) alone, so a task set is the same whatever the number or order of workers."""
    out, spec, kind, index = job
    rng = np.random.default_rng([spec.seed, _TASK_KINDS.index(kind), index])
    if kind == "volume":
        return _volume_task(out, spec, index, rng)
    if kind == "scene":
        return _scene_task(out, spec, index, rng)
    return _needle_task(out, spec, index, rng, haystack)


def default_generation_workers() -> int:
    """Threads that generate a task set by default: the cores this process may use, at most 8."""
    from longllava.domains.medical.slices import usable_cores

    return max(1, min(8, usable_cores()))


def generate_task_set(
    out_dir, spec: SyntheticSpec, haystack: Sequence[Any], progress: bool = True, workers: int | None = None
) -> list:
    """Write the task set's files under ``out_dir`` (NIfTI and DICOM volumes, GeoTIFF scenes, PNG
    slices and tiles) and return its records. CT slices and scene tiles come through the domain loaders,
    exactly as real data would. ``workers`` threads share the work (default
    :func:`default_generation_workers`; 1: serial); the result does not depend on it. Threads, not
    processes: the heavy parts (random fields, gzip, GDAL writes, PNG encoding) run without the
    GIL, and threads need no ``__main__`` guard in the caller's script."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = ([(out, spec, "volume", v) for v in range(spec.volumes)] + [(out, spec, "scene", s) for s in range(spec.scenes)]
            + [(out, spec, "needle", n) for n in range(spec.needles)])
    workers = default_generation_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    haystack = list(haystack)
    records = []
    # results come back in job order whatever the number of threads (1: one at a time)
    with tqdm(total=len(jobs), desc=f"synthetic tasks ({out.name})", disable=not progress) as bar, \
            ThreadPoolExecutor(workers) as pool:
        for task_records in pool.map(lambda job: _generate_task(job, haystack), jobs):
            records += task_records
            bar.update()
    return records


def single_image_records(records: Sequence[Any]) -> list:
    """One record per image of the task set's volumes, scenes and needle sets, asking about that
    image alone: is there a lesion in this slice, a ship in this tile, what colour is the mark.

    These are the default model's single-image stage (the paper's stage II before multi-image
    stage III): short samples that teach the projector and the LM to read an image cheaply, which
    the multi-image questions (presence, counting, needle) then build on. (Also tried: asking each
    image's count, 0 or 1, and counting pairs of images here; neither raised held-out counting.)"""

    def record(rid, image, question, answer, qtype):
        return _records(rid, [image], [(question, answer, qtype)], None, False)[0]

    out, seen = [], set()
    for r in records:
        key = r.id.split("-")[0]
        if key in seen:
            continue
        seen.add(key)
        meta = r.meta
        if "lesion_frames" in meta:
            out += [record(f"{key}-s{k + 1}", image, SLICE_LESION_Q, "yes" if k + 1 in meta["lesion_frames"] else "no", "slice_lesion")
                    for k, image in enumerate(r.images)]
        elif "ship_tiles" in meta:
            cols = meta["grid"][1]
            out += [record(f"{key}-t{k}", image, TILE_SHIP_Q, "yes" if [k // cols, k % cols] in meta["ship_tiles"] else "no", "tile_ship")
                    for k, image in enumerate(r.images[1:])]
        elif "needle_index" in meta:
            out.append(record(f"{key}-mark", r.images[meta["needle_index"]], MARK_COLOUR_Q, r.answer, "mark_colour"))
    return out


def default_haystack(count: int = 48) -> list[Image.Image]:
    """Haystack images for needles: real CT slices (TotalSegmentator example volume) and real
    Landsat tiles (rasterio's RGB.byte.tif), both shipped as package data (``longllava.examples``)."""
    from longllava.domains.medical.ct import load_ct
    from longllava.domains.medical.slices import ct_to_slices
    from longllava.domains.remote_sensing.scene import open_scene
    from longllava.domains.remote_sensing.tiling import tile_scene

    ct = load_ct(EXAMPLE_CT)
    images = [s.image for s in ct_to_slices(ct, num_slices=count // 2)]
    with open_scene(EXAMPLE_SCENE) as scene:
        images += [t.image() for t in tile_scene(scene, tile=168).tiles[: count - len(images)]]
    return images
