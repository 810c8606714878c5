"""CLI for the core: ``ask``, ``convert``, ``info`` and ``bench model``."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="config summary of a model (no weights materialised)")
    info.add_argument("--model", default="tiny-random")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    raise SystemExit("not yet wired")
