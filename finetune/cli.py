"""CLI: ``longllava finetune``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    from longllava.finetune.recipes import RECIPES

    parser = commands.add_parser("finetune", help="train with a recipe (paper stages, domain recipes, the default model)")
    parser.add_argument("--recipe", required=True, help=f"{', '.join(RECIPES)} or a recipe .json file")
    parser.add_argument("--model", default=None, help="start model: tiny-random, longllava-9b, a checkpoint dir (default: tiny-random)")
    parser.add_argument("--data", type=Path, help="training data (LLaVA JSON; PubMedVision / FIT-RS JSON for the domain recipes)")
    parser.add_argument("--image-root", type=Path, help="folder the data's image paths are relative to")
    parser.add_argument("--replay", action="append", default=[], metavar="NAME=PATH", help="stage III replay data (LLaVA JSON)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of full weights")
    parser.add_argument("--merge", action="store_true", help="with --lora: write a merged model that loads without peft")
    parser.add_argument("--deepspeed", help="zero2, zero3 (shipped configs) or a DeepSpeed JSON config")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--max-length", type=int, help="override the recipe's max sequence length")
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--skip-bad", action="store_true", help="collect malformed records into a report instead of failing")
    parser.add_argument("--num-workers", type=int, default=0, help="dataloader workers (images are decoded there)")
    parser.add_argument("--tensorboard", action="store_true")
    parser.add_argument("--keep-build-files", action="store_true",
                        help="synthetic-default: keep the generated task data (~830 MB) and the intermediate "
                        "checkpoints, which a successful build removes")
    parser.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from longllava.errors import InputError
    from longllava.finetune.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    if args.epochs is not None:
        recipe = replace(recipe, num_epochs=args.epochs)
    if args.max_length is not None:
        recipe = replace(recipe, max_length=args.max_length)
    if args.merge and not args.lora:
        raise InputError("--merge only applies with --lora")
    if recipe.data_format == "synthetic":
        from longllava.finetune.default_model import build_default_model

        report = build_default_model(args.out, max_steps=args.max_steps, resume=args.resume, epochs=args.epochs,
                                     keep_intermediate=args.keep_build_files)
        print(json.dumps(report, indent=2))
        print(f"the model and its report.json: {args.out / 'final'} (--model {args.out / 'final'})", file=sys.stderr)
        return 0

    from longllava.finetune.train import TrainOptions, train

    if args.data is None:
        raise InputError(f"recipe {recipe.name} needs --data")
    records, report = load_training_records(recipe, args.data, args.image_root, args.replay, args.skip_bad)
    if report["num_bad"]:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bad_records.json").write_text(json.dumps(report, indent=2))
        print(f"skipped {report['num_bad']} malformed records (see {args.out / 'bad_records.json'})")
    options = TrainOptions(
        recipe=recipe, model=args.model or "tiny-random", out=args.out, max_steps=args.max_steps, resume=args.resume,
        lora=args.lora, merge=args.merge, deepspeed=args.deepspeed, save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        num_workers=args.num_workers, tensorboard=args.tensorboard, learning_rate=args.lr,
    )
    print(json.dumps(train(options, records), indent=2))
    return 0


def load_training_records(recipe, data: Path, image_root, replay: list[str], skip_bad: bool):
    from longllava.core.records import RecordErrors
    from longllava.errors import InputError
    from longllava.finetune.data import mix_with_replay, read_llava_json

    errors = RecordErrors(skip_bad)
    if recipe.data_format == "pubmedvision":
        from longllava.domains.medical.datasets import read_pubmedvision

        stream = read_pubmedvision(data, image_root or data.parent, skip_bad=skip_bad)
        records = list(stream)
        errors.bad.extend(stream.errors.bad)
    elif recipe.data_format == "fit-rs":
        from longllava.domains.remote_sensing.datasets import read_fit_rs_instructions

        records = list(read_fit_rs_instructions(data, image_root or data.parent, skip_bad=skip_bad, errors=errors))
    else:
        records = read_llava_json(data, image_root, errors=errors)
    if replay:
        sources = {}
        for item in replay:
            name, _, path = item.partition("=")
            if not path:
                raise InputError(f"--replay expects NAME=PATH, got {item!r}")
            sources[name] = read_llava_json(Path(path), errors=errors)
        unknown = set(sources) - set(recipe.replay_ratios)
        if unknown:
            raise InputError(f"recipe {recipe.name} has no replay ratio for {sorted(unknown)}; ratios: {recipe.replay_ratios}")
        records = mix_with_replay(records, sources, recipe.replay_ratios, recipe.seed)
    return records, errors.summary()
