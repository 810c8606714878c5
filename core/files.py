"""Input paths as users give them: files, or folders that stand for the files inside them."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from longllava.errors import InputError


def files_in(items: Iterable[str | PathLike[str]], suffixes: set[str], what: str) -> list[Path]:
    """The files given, in order; a folder stands for its files with one of ``suffixes`` (case
    ignored), in name order. ``what`` names the input in errors (e.g. ``--stack``, ``raster``)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"{what} folder {path} holds no files ending in {', '.join(sorted(suffixes))}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise InputError(f"{what} not found: {path}")
    return paths
