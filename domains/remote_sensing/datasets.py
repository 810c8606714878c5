"""Remote-sensing dataset readers: FIT-RS instructions, FIT-RSFG-Bench, STAR large-scene questions.

Each reader yields :class:`longllava.core.records.Record` objects with image paths (opened lazily by
the consumer) and LLaVA-style conversations holding one ``<image>`` placeholder per image. A
malformed record raises :class:`InputError` naming file, record and field; with ``skip_bad=True``
it is skipped and collected in ``errors`` (pass your own :class:`RecordErrors` to read the report).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from longllava.core.records import GPT, HUMAN, IMAGE_PLACEHOLDER, Record, RecordErrors
from longllava.core.grid import GridPlan, plan_grid
from longllava.errors import InputError

# DOTA devkit split naming: <scene>__<size>__<x>___<y>.png. FIT-RS writes the patch size (512) in
# the middle field; the DOTA devkit writes its scale rate there (e.g. "1" or "0.5").
DOTA_SPLIT_NAME = re.compile(r"^(?P<scene>.+?)__(?P<size>\d+(?:\.\d+)?)__(?P<x>-?\d+)___(?P<y>-?\d+)$")
DOTA_HEADER_PREFIXES = ("imagesource:", "gsd:")
STAR_IMAGE_DIRS = ("images", "img", "imgs")
STAR_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def parse_dota_split_name(name: str) -> dict | None:
    """``P0003__512__0___412.png`` -> {source_scene: "P0003", tile_size: 512, x_offset: 0, y_offset: 412}."""
    match = DOTA_SPLIT_NAME.match(Path(name).stem)
    if match is None:
        return None
    size = match["size"]
    return {
        "source_scene": match["scene"],
        "tile_size": int(size) if size.isdigit() else float(size),
        "x_offset": int(match["x"]),
        "y_offset": int(match["y"]),
    }


def _check_conversations(turns, errors: RecordErrors, source, index) -> bool:
    if not isinstance(turns, list) or not turns:
        errors.report(source, index, "conversations", f"expected a non-empty list of turns, got {turns!r:.80}")
        return False
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in (HUMAN, GPT) or not isinstance(turn.get("value"), str):
            errors.report(source, index, f"conversations[{number}]",
                          f"expected {{'from': 'human'|'gpt', 'value': str}}, got {turn!r:.80}")
            return False
    if turns[0]["from"] != HUMAN:
        errors.report(source, index, "conversations[0].from", "the first turn must be from 'human'")
        return False
    return True


def _load_json(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error


def read_fit_rs_instructions(json_path: str | Path, image_root: str | Path, *, skip_bad: bool = False,
                             errors: RecordErrors | None = None) -> Iterator[Record]:
    """FIT-RS instruction data (LLaVA / GeoChat format), e.g. ``FIT-RS-train-1415k.json``.

    ``image`` may be one string (made a one-element list) or a list. A human turn without
    ``<image>`` gets one prepended to the first turn (LLaVA's convention). Inline boxes such as
    ``{<12><34><5><6>|<45>}`` stay in the text untouched.
    """
    json_path, image_root = Path(json_path), Path(image_root)
    errors = errors if errors is not None else RecordErrors(skip_bad)
    data = _load_json(json_path)
    if not isinstance(data, list):
        raise InputError(f"{json_path}: expected a JSON list of records, got {type(data).__name__}")
    for index, item in enumerate(data):
        source = f"{json_path}#{index}"
        if not isinstance(item, dict):
            errors.report(json_path, index, "(record)", f"expected an object, got {type(item).__name__}")
            continue
        images = item.get("image")
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
            errors.report(json_path, index, "image", f"expected an image path or a list of them, got {item.get('image')!r:.80}")
            continue
        turns = item.get("conversations")
        if not _check_conversations(turns, errors, json_path, index):
            continue
        turns = [{"from": t["from"], "value": t["value"]} for t in turns]
        count = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
        if count == 0:
            turns[0]["value"] = "\n".join([IMAGE_PLACEHOLDER] * len(images) + [turns[0]["value"]])
        elif count != len(images):
            errors.report(json_path, index, "conversations",
                          f"{count} '{IMAGE_PLACEHOLDER}' placeholders for {len(images)} image(s)")
            continue
        yield Record(
            id=str(item.get("id", f"{json_path.stem}-{index}")),
            images=[image_root / name for name in images],
            conversations=turns,
            source=source,
            meta={"dataset": "FIT-RS", **({"task": item["task"]} if "task" in item else {})},
        )


def read_fit_rsfg_bench(jsonl_path: str | Path, image_root: str | Path, *, skip_bad: bool = False,
                        errors: RecordErrors | None = None) -> Iterator[Record]:
    """FIT-RSFG-Bench question files (``test_FITRS_vqa_eval.jsonl`` and siblings).

    One JSON object per line: ``{question_id, image, text, category, ground_truth}``. meta holds
    category, ground_truth, question_id and the DOTA split name parsed from the image name
    (source_scene, tile_size, x_offset, y_offset; all None when the name does not follow it).
    """
    jsonl_path, image_root = Path(jsonl_path), Path(image_root)
    errors = errors if errors is not None else RecordErrors(skip_bad)
    if not jsonl_path.is_file():
        raise InputError(f"{jsonl_path}: no such file")
    with jsonl_path.open(encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                errors.report(jsonl_path, index, "(line)", f"not valid JSON ({error})")
                continue
            if not isinstance(item, dict):
                errors.report(jsonl_path, index, "(line)", f"expected an object, got {type(item).__name__}")
                continue
            problem = next(((name, kind) for name, kind in
                            (("question_id", (str, int)), ("image", str), ("text", str), ("category", str),
                             ("ground_truth", str))
                            if not isinstance(item.get(name), kind) or item.get(name) == ""), None)
            if problem is not None:
                name, _ = problem
                errors.report(jsonl_path, index, name, f"missing or not a non-empty value: {item.get(name)!r:.80}")
                continue
            split = parse_dota_split_name(item["image"]) or dict.fromkeys(
                ("source_scene", "tile_size", "x_offset", "y_offset"))
            text = item["text"]
            if IMAGE_PLACEHOLDER not in text:
                text = f"{IMAGE_PLACEHOLDER}\n{text}"
            yield Record(
                id=str(item["question_id"]),
                images=[image_root / item["image"]],
                conversations=[{"from": HUMAN, "value": text}, {"from": GPT, "value": item["ground_truth"]}],
                source=f"{jsonl_path}#{index}",
                meta={"dataset": "FIT-RSFG-Bench", "question_id": item["question_id"], "category": item["category"],
                      "ground_truth": item["ground_truth"], **split},
            )


@dataclass(frozen=True)
class DotaObject:
    polygon: tuple[float, ...]  # x1 y1 ... x4 y4 in scene pixels
    label: str
    difficult: int

    @property
    def center(self) -> tuple[float, float]:
        xs, ys = self.polygon[0::2], self.polygon[1::2]
        return sum(xs) / 4, sum(ys) / 4


def read_dota_annfile(path: str | Path) -> list[DotaObject]:
    """One DOTA-style annotation file: ``x1 y1 ... x4 y4 class [difficulty]`` per line.

    Header lines (``imagesource:``, ``gsd:``) and blank lines are skipped; a malformed line raises
    :class:`InputError` naming the file and line.
    """
    path = Path(path)
    objects = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.lower().startswith(DOTA_HEADER_PREFIXES):
            continue
        parts = text.split()
        if len(parts) not in (9, 10):
            raise InputError(f"{path} line {number}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficulty]' "
                             f"(9 or 10 fields), got {len(parts)}: {text!r:.80}")
        try:
            polygon = tuple(float(v) for v in parts[:8])
        except ValueError as error:
            raise InputError(f"{path} line {number}: a corner coordinate is not a number ({error})") from error
        if len(parts) == 10 and parts[9] not in ("0", "1"):
            raise InputError(f"{path} line {number}: difficulty must be 0 or 1, got {parts[9]!r}")
        objects.append(DotaObject(polygon, parts[8], int(parts[9]) if len(parts) == 10 else 0))
    return objects


def _scene_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only (a 27,860 x 31,096 PNG is never decoded)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as dataset:
                return dataset.width, dataset.height
    except RasterioError as error:
        raise InputError(f"{path}: not a readable image ({error})") from error


def _format_cells(cells) -> str:
    return ", ".join(f"({row}, {col})" for row, col in cells)


def star_questions(scene_id: str, image: Path, objects: list[DotaObject], plan: GridPlan, source: str) -> list[Record]:
    """Scene-level questions with exact answers: per class present, its count and the tiles holding it.

    An object belongs to the one tile (of ``plan``, overlap 0) that holds its centre.
    """
    by_class: dict[str, list[DotaObject]] = {}
    for obj in objects:
        by_class.setdefault(obj.label, []).append(obj)
    grid = {"tile": plan.tile, "rows": plan.rows, "cols": plan.cols, "downsample": plan.downsample,
            "width": plan.width, "height": plan.height}
    records = []
    for label in sorted(by_class):
        members = by_class[label]
        count = len(members)
        cells = sorted(set(plan.cell_of(*obj.center) for obj in members))
        cell_counts = Counter(plan.cell_of(*obj.center) for obj in members)
        name = label.replace("_", " ").replace("-", " ")
        base = {"dataset": "STAR", "scene": scene_id, "class": label, **grid}
        records.append(Record(
            id=f"{scene_id}-count-{label}",
            images=[image],
            conversations=[
                {"from": HUMAN, "value": f"{IMAGE_PLACEHOLDER}\nHow many {name} objects are in this scene? "
                                         "Answer with a number."},
                {"from": GPT, "value": str(count)},
            ],
            source=source,
            meta={**base, "question_type": "count", "answer": count,
                  "num_difficult": sum(obj.difficult for obj in members)},
        ))
        records.append(Record(
            id=f"{scene_id}-tiles-{label}",
            images=[image],
            conversations=[
                {"from": HUMAN, "value": f"{IMAGE_PLACEHOLDER}\nThe scene is split into {plan.rows} rows and "
                                         f"{plan.cols} columns of tiles, numbered from 0 at the top left. Which "
                                         f"tiles contain {name} objects? Answer with (row, column) pairs."},
                {"from": GPT, "value": _format_cells(cells)},
            ],
            source=source,
            meta={**base, "question_type": "tiles", "answer": [list(c) for c in cells],
                  "rows_with_class": sorted({r for r, _ in cells}), "cols_with_class": sorted({c for _, c in cells}),
                  "count_per_tile": {f"{r},{c}": n for (r, c), n in sorted(cell_counts.items())}},
        ))
    return records


def _star_image(image_dirs: list[Path], stem: str) -> Path | None:
    for directory in image_dirs:
        for suffix in STAR_IMAGE_SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_star(root: str | Path, *, tile: int = 336, max_tiles: int | None = None, skip_bad: bool = False,
              errors: RecordErrors | None = None) -> Iterator[Record]:
    """STAR large scenes (``root/annfiles/*.txt`` + ``root/images/<same stem>.png``) as scene questions.

    For each scene and each class present: "how many" (exact count from the annotations) and "which
    tiles" ((row, col) of the grid ``tile_scene`` builds with the same ``tile`` / ``max_tiles``).
    A bad annotation file or a missing image makes the whole scene bad (its answers could not be
    exact): raised, or with ``skip_bad`` skipped and reported.
    """
    root = Path(root)
    errors = errors if errors is not None else RecordErrors(skip_bad)
    annfiles = root / "annfiles"
    if not annfiles.is_dir():
        raise InputError(f"{root}: no 'annfiles' folder; expected a STAR / DOTA layout root/annfiles/*.txt "
                         f"with images in root/{{{','.join(STAR_IMAGE_DIRS)}}}/")
    image_dirs = [root / name for name in STAR_IMAGE_DIRS if (root / name).is_dir()]
    if not image_dirs:
        raise InputError(f"{root}: no image folder (looked for {', '.join(STAR_IMAGE_DIRS)})")
    for annfile in sorted(annfiles.glob("*.txt")):
        image = _star_image(image_dirs, annfile.stem)
        if image is None:
            errors.report(annfile, annfile.stem, "image", f"no image {annfile.stem}.png (or .tif/.jpg) in "
                          f"{', '.join(str(d) for d in image_dirs)}")
            continue
        try:
            objects = read_dota_annfile(annfile)
            width, height = _scene_size(image)
        except InputError as error:
            errors.report(annfile, annfile.stem, "annotations", str(error))
            continue
        plan = plan_grid(width, height, tile=tile, max_tiles=max_tiles)
        yield from star_questions(annfile.stem, image, objects, plan, source=f"{annfile}#0")
