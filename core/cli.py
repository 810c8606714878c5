"""CLI for the core: ``ask``, ``convert``, ``info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_MODEL = "default"  # the embedded synthetic-task model, built on first use
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    ask = commands.add_parser("ask", help="answer a question about images, an image stack, a CT or a scene")
    _add_model_args(ask)
    ask.add_argument("--image", nargs="+", default=[], metavar="P", help="single images, one <img> block each")
    ask.add_argument("--stack", nargs="+", default=[], metavar="P", help="ordered images (or one directory) as <vid> frames")
    ask.add_argument("--highres", metavar="P", help="a large image as global view + grid of sub-images")
    ask.add_argument("--tile", type=int, default=336, help="sub-image size for --highres (168 or 336) and --scene")
    ask.add_argument("--ct", metavar="PATH", help="a CT volume (NIfTI, DICOM folder / files / .zip) as an ordered slice stack")
    ask.add_argument("--max-slices", type=int, default=256, help="CT slices sent to the model (evenly spaced)")
    ask.add_argument("--windows", default="lung,mediastinum,bone", help="CT windows as RGB channels, or one W/L")
    ask.add_argument("--scene", metavar="PATH", help="a GeoTIFF / raster scene as global view + tile grid")
    ask.add_argument("--max-tiles", type=int, default=64, help="scene tiles at most (coarser level beyond)")
    ask.add_argument("--question", required=True)
    add_generation_args(ask)
    ask.add_argument("--json", action="store_true", help="print a JSON summary")
    ask.set_defaults(func=_ask)

    convert = commands.add_parser("convert", help="convert a released LongLLaVA checkpoint to this project's layout")
    convert.add_argument("ref_dir", type=Path)
    convert.add_argument("--clip", type=Path, required=True, help="CLIP ViT-L/14-336 checkpoint directory")
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--max-shard-size", default="5GB")
    convert.add_argument("--allow-pickle", action="store_true", help="read .bin (pickled) weights")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the new output is complete)")
    convert.add_argument("--max-sequence-length", type=int, default=None, metavar="N",
                         help="refuse inputs longer than N tokens (default 262,144: about 1,700 images; the practical limit is memory, checked before each prompt)")
    convert.set_defaults(func=_convert)

    downcycle = commands.add_parser("downcycle", help="turn a converted MoE checkpoint into a dense one (the 9B layout)")
    downcycle.add_argument("moe_dir", type=Path, help="a converted MoE checkpoint (e.g. LongLLaVA-A13B or a fine-tune of it)")
    downcycle.add_argument("--method", required=True, metavar="M",
                           help="expert-0 ... expert-K (keep one expert), mean (arithmetic mean) or spherical (spherical mean)")
    downcycle.add_argument("--out", type=Path, required=True)
    downcycle.add_argument("--max-shard-size", default="5GB")
    downcycle.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (only once the new output is complete)")
    downcycle.set_defaults(func=_downcycle)

    info = commands.add_parser("info", help="config summary of a model (no weights materialised)")
    info.add_argument("--model", default=DEFAULT_MODEL)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """--max-new-tokens, --min-new-tokens, --temperature, --top-p, --seed, --stream; read them back
    with :func:`generation_settings`. Defaults: the reference's (greedy, 768 new tokens, at least 1)."""
    from longllava.core.generation import GenerationSettings

    defaults = GenerationSettings()
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, metavar="N",
                       help=f"at most N new tokens (default {defaults.max_new_tokens}, the reference's)")
    group.add_argument("--min-new-tokens", type=int, default=defaults.min_new_tokens, metavar="N",
                       help="no end of text before N tokens")
    group.add_argument("--temperature", type=float, default=None, metavar="T", help="sample at temperature T (default: greedy)")
    group.add_argument("--top-p", type=float, default=None, metavar="P", help="sample from the top-p nucleus (default: greedy)")
    group.add_argument("--seed", type=int, default=None, help="seed for sampling, for repeatable answers")
    group.add_argument("--stream", action="store_true", help="print the answer as it is generated")


def generation_settings(args: argparse.Namespace):
    from longllava.core.generation import GenerationSettings

    sample = args.temperature is not None or args.top_p is not None
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, do_sample=sample,
        temperature=1.0 if args.temperature is None else args.temperature,
        top_p=1.0 if args.top_p is None else args.top_p, seed=args.seed,
    )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="tiny-random, longllava-9b, longllava-a13b or a checkpoint dir")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--int8", action="store_true", help="8-bit weights via bitsandbytes (CUDA only)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .bin weights")


def load_from_args(args: argparse.Namespace):
    import torch

    from longllava.core.pipeline import LongLlava

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return LongLlava.load(args.model, dtype=dtype, device=device, allow_pickle=args.allow_pickle, int8=args.int8)


def _stack_paths(items: list[str]) -> list[Path]:
    from longllava.errors import InputError

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"--stack directory {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise InputError(f"--stack item not found: {path}")
    return paths


def build_visuals(args: argparse.Namespace) -> list:
    from longllava.core import protocol
    from longllava.core.processor import open_image, partition_highres

    visuals: list = [protocol.ImageInput(open_image(p), {"path": str(p)}) for p in args.image]
    if args.stack:
        paths = _stack_paths(args.stack)
        visuals.append(protocol.StackInput([open_image(p) for p in paths], [{"path": str(p)} for p in paths]))
    if args.highres:
        if args.tile not in (168, 336):
            from longllava.errors import InputError

            raise InputError(f"--tile for --highres must be 168 or 336, got {args.tile}")
        part = partition_highres(args.highres, args.tile)
        visuals.append(protocol.HighResInput(part.global_view, part.tiles, part.rows, part.cols))
    if args.ct:
        from longllava.domains.medical.ct import load_ct
        from longllava.domains.medical.slices import ct_to_slices

        slices = list(ct_to_slices(load_ct(args.ct), windows=args.windows, max_slices=args.max_slices))
        visuals.append(protocol.StackInput([s.image for s in slices],
                                           [{"slice": s.index, "z_mm": round(s.z_mm, 2)} for s in slices]))
    if args.scene:
        from longllava.domains.remote_sensing.scene import open_scene
        from longllava.domains.remote_sensing.tiling import tile_scene

        with open_scene(args.scene) as scene:
            grid = tile_scene(scene, tile=args.tile, max_tiles=args.max_tiles)
            tiles = [tile.image() for tile in grid.tiles]
            traces = [{"lonlat_bounds": [round(v, 6) for v in tile.lonlat_bounds]} if tile.lonlat_bounds else {}
                      for tile in grid.tiles]
            visuals.append(protocol.HighResInput(grid.thumbnail, tiles, grid.rows, grid.cols, traces))
    return visuals


def _ask(args: argparse.Namespace) -> int:
    from longllava.errors import InputError

    visuals = build_visuals(args)
    if not visuals:
        raise InputError("give at least one visual input: --image, --stack, --highres, --ct or --scene")
    settings = generation_settings(args)
    llava = load_from_args(args)
    stream = args.stream and not args.json
    if not args.json:  # before the answer, which --stream prints as it comes
        if str(args.model) == "tiny-random":
            print("note: tiny-random has untrained random weights; its answer is meaningless")
        elif str(args.model) == "default":
            print("note: the default model is a tiny synthetic-task model (lesion / ship presence, counting, "
                  "needles); it is not a medical or remote-sensing model")
    answer = llava.ask(visuals, args.question, settings=settings,
                       on_text=(lambda text: print(text, end="", flush=True)) if stream else None)
    used = [t for t in answer.trace if t.get("kind") in ("frame", "tile")]
    if args.json:
        print(json.dumps({**answer.summary(), "model": str(args.model), "used": used}))
        return 0
    print("" if stream else answer.text)  # a streamed answer is printed already; end its line
    if args.ct:
        print(f"slices used: {', '.join(str(t['slice']) for t in used)}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from longllava.core.convert import convert_reference_checkpoint

    summary = convert_reference_checkpoint(
        args.ref_dir, args.clip, args.out, allow_pickle=args.allow_pickle, max_shard_size=args.max_shard_size,
        overwrite=args.overwrite, max_sequence_length=args.max_sequence_length,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _downcycle(args: argparse.Namespace) -> int:
    from longllava.core.downcycle import downcycle_checkpoint

    summary = downcycle_checkpoint(args.moe_dir, args.out, args.method, max_shard_size=args.max_shard_size,
                                   overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    from longllava.core.info import model_info

    info = model_info(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>26}: {value}")
    return 0
