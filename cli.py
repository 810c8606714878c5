"""The ``longllava`` command line: a thin layer over the same functions the tests call.

Each subsystem contributes its sub-commands through a ``register(commands, bench)`` function in
its own ``cli`` module; handlers import their heavy dependencies lazily so ``longllava --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from longllava.errors import InputError
from longllava.registry import load_from_args

# Modules whose ``register(commands, bench)`` adds sub-commands (and ``bench`` targets).
# ``commands`` comes first: it registers ``ask``, to which the core and the domains add their inputs.
COMMAND_MODULES = [
    "longllava.commands",
    "longllava.core.cli",
    "longllava.domains.medical.cli",
    "longllava.eval.cli",
    "longllava.domains.remote_sensing.cli",
    "longllava.bench.cli",
    "longllava.eval.runner_cli",
    "longllava.apps.cli",
    "longllava.finetune.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longllava",
        description="LongLLaVA domain toolkit: long-context multimodal QA over CT volumes, "
        "pathology slides and large remote-sensing scenes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench_parser = commands.add_parser("bench", help="speed / memory benchmarks (print figures)")
    bench = bench_parser.add_subparsers(dest="bench_target", metavar="TARGET", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands, bench)
    # the model names (``default``...) are resolved up here; eval's commands load through this
    parser.set_defaults(load_model=load_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not sys.stderr.isatty():
        # Progress bars only on a terminal: in a log or a pipe they are pages of carriage returns.
        # tqdm (also under transformers' weight loading and the Trainer) reads its defaults from
        # TQDM_* variables once, when it is imported: so before the sub-commands are (an explicit
        # TQDM_DISABLE set to an empty value keeps the bars:
        # tqdm reads any other text as True).
        os.environ.setdefault("TQDM_DISABLE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
