"""``ask`` and ``info``: the commands that take any model name, so they live above ``finetune``
(the registry resolves model names such as ``default``).

``ask`` is registered first; the layers below add their inputs to it in their own ``register()``
(:func:`longllava.core.cli.ask_inputs`): images, stacks and high-res images from the core,
CT volumes from the medical domain, scenes from remote sensing.
"""

from __future__ import annotations

import argparse
import json

from longllava.core.cli import add_generation_args, add_model_args
from longllava.registry import DEFAULT_MODEL


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    ask = commands.add_parser("ask", help="answer a question about images, an image stack, a CT or a scene")
    add_model_args(ask)
    ask.add_argument("--question", required=True)
    add_generation_args(ask)
    ask.add_argument("--json", action="store_true", help="print a JSON summary")
    ask.set_defaults(func=_ask, visual_sources=())

    info = commands.add_parser("info", help="config summary of a model (no weights materialised)")
    info.add_argument("--model", default=DEFAULT_MODEL)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)


def _or_list(flags: list[str]) -> str:
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} or {flags[-1]}"


def _ask(args: argparse.Namespace) -> int:
    from longllava.core.cli import ask_visuals, generation_settings, visual_flags
    from longllava.errors import InputError
    from longllava.registry import load_from_args

    visuals = ask_visuals(args)
    if not visuals:
        raise InputError(f"give at least one visual input: {_or_list(visual_flags(args))}")
    settings = generation_settings(args)
    llava = load_from_args(args)
    stream = args.stream and not args.json
    if not args.json:  # before the answer, which --stream prints as it comes
        if str(args.model) == "tiny-random":
            print("note: tiny-random has untrained random weights; its answer is meaningless")
        elif str(args.model) == DEFAULT_MODEL:
            print("note: the default model is a tiny synthetic-task model (lesion / ship presence, counting, "
                  "needles); it is not a medical or remote-sensing model")
    answer = llava.ask(visuals, args.question, settings=settings,
                       on_text=(lambda text: print(text, end="", flush=True)) if stream else None)
    used = [t for t in answer.trace if t.get("kind") in ("frame", "tile")]
    if args.json:
        print(json.dumps({**answer.summary(), "model": str(args.model), "used": used}))
        return 0
    print("" if stream else answer.text)  # a streamed answer is printed already; end its line
    slices = [str(t["slice_index"]) for t in used if "slice_index" in t]
    if slices:
        print(f"slices used: {', '.join(slices)}")
    times = [f"{t['time_s']:g}" for t in used if "time_s" in t]
    if times:
        print(f"frames used at (s): {', '.join(times)}")
    dates = sorted({t["date"] for t in used if "date" in t})
    if dates:
        print(f"dates used: {', '.join(dates)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from longllava.registry import model_info

    info = model_info(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>26}: {value}")
    return 0
