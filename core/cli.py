"""CLI for the core: ``convert``, the shared model options, and the image inputs of ``ask``.

``ask`` itself is registered by the top layer (:mod:`longllava.commands`, which resolves model
names); each layer below adds its own inputs to it with :func:`ask_inputs`: the core
``--image`` / ``--stack`` / ``--highres``, the medical domain ``--ct``, remote sensing ``--scene``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
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

    images = ask_inputs(commands, "images", ("--image", "--stack", "--highres"), image_visuals)
    if images is not None:
        # "extend": a repeated flag adds to the earlier ones (--image a.png --image b.png is two images)
        images.add_argument("--image", nargs="+", action="extend", default=[], metavar="P",
                            help="single images, one <img> block each")
        images.add_argument("--stack", nargs="+", action="extend", default=[], metavar="P",
                            help="ordered images (or one directory) as <vid> frames")
        images.add_argument("--highres", metavar="P", help="a large image as global view + grid of sub-images")
        images.add_argument("--tile", type=int, default=336, help="sub-image size for --highres (168 or 336) and --scene")


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


# --- the ``ask`` hook: every layer adds its inputs -----------------------------------------------

VisualSource = Callable[[argparse.Namespace], list]  # args -> the protocol visuals its options ask for


def ask_inputs(commands: argparse._SubParsersAction, title: str, flags: tuple[str, ...],
               build: VisualSource) -> argparse._ArgumentGroup | None:
    """An option group of ``ask`` for one kind of input, or None when the top layer did not
    register ``ask`` (it comes first). ``build(args)`` turns the options into protocol visuals;
    it runs, in registration order, when one of ``flags`` is given."""
    ask = commands.choices.get("ask")
    if ask is None:
        return None
    ask.set_defaults(visual_sources=(*(ask.get_default("visual_sources") or ()), (flags, build)))
    return ask.add_argument_group(title)


def _given(args: argparse.Namespace, flag: str) -> bool:
    return bool(getattr(args, flag.lstrip("-").replace("-", "_")))


def ask_visuals(args: argparse.Namespace) -> list:
    """The visuals of the sources whose options were given, in registration order."""
    return [visual for flags, build in args.visual_sources if any(_given(args, flag) for flag in flags)
            for visual in build(args)]


def visual_flags(args: argparse.Namespace) -> list[str]:
    return [flag for flags, _ in args.visual_sources for flag in flags]


# --- the model options shared by ask, eval and demo ----------------------------------------------


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="default, tiny-random, longllava-9b, longllava-a13b or a checkpoint dir")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--int8", action="store_true", help="8-bit weights via bitsandbytes (CUDA only)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .bin weights")


def model_load_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``load_model`` that the model options ask for."""
    import torch

    return {"dtype": getattr(torch, args.dtype) if args.dtype else None,
            "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            "allow_pickle": args.allow_pickle, "int8": args.int8}


# --- core inputs ---------------------------------------------------------------------------------


def image_visuals(args: argparse.Namespace) -> list:
    from longllava.core import protocol
    from longllava.core.files import files_in
    from longllava.core.processor import open_image, partition_highres
    from longllava.traces import ImageTrace

    visuals: list = [protocol.ImageInput(open_image(p), ImageTrace(path=str(p))) for p in args.image]
    if args.stack:
        paths = files_in(args.stack, IMAGE_SUFFIXES, "--stack")
        visuals.append(protocol.StackInput([open_image(p) for p in paths], [ImageTrace(path=str(p)) for p in paths]))
    if args.highres:
        if args.tile not in (168, 336):
            from longllava.errors import InputError

            raise InputError(f"--tile for --highres must be 168 or 336, got {args.tile}")
        part = partition_highres(args.highres, args.tile)
        visuals.append(protocol.HighResInput(part.global_view, part.tiles, part.rows, part.cols))
    return visuals


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
