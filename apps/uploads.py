"""Uploaded files -> the session's own folder, within the upload size limit.

Gradio first writes uploads to its shared cache; they are moved (not copied) from there into the
session's folder, so a patient's files sit in one place that is removed with the session. The
limit applies to the whole upload and, for zip archives, to what they expand to (a small zip can
expand to many GB). Member paths of archives (absolute or ``..``: zip-slip) are rejected by the
loader that reads the archive (``load_ct``), which never extracts to disk.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from longllava.errors import InputError

MB = 1 << 20


def format_mb(num_bytes: float) -> str:
    return f"{num_bytes / MB:,.1f} MB"


def check_upload_size(paths: Sequence[Path], max_bytes: int) -> None:
    """InputError when the files together, or a zip's expanded members, exceed ``max_bytes``."""
    total = sum(path.stat().st_size for path in paths)
    if total > max_bytes:
        raise InputError(
            f"the upload is {format_mb(total)}, above the {format_mb(max_bytes)} limit of this demo; "
            "upload fewer or smaller files, or restart the demo with a larger --max-upload-mb"
        )
    for path in paths:
        if not zipfile.is_zipfile(path):
            continue
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
        if expanded > max_bytes:
            raise InputError(
                f"{path.name}: the zip expands to {format_mb(expanded)}, above the {format_mb(max_bytes)} limit "
                "of this demo; upload a smaller series, or restart the demo with a larger --max-upload-mb"
            )


def accept_upload(paths: Sequence[str | PathLike[str]], folder: Path, max_bytes: int) -> list[Path]:
    """Check the upload against the limit, then move it into ``folder`` (emptied first). Returns
    the files' new paths, original names kept."""
    sources = [Path(p) for p in paths]
    if not sources:
        raise InputError("no file was uploaded; choose a file first")
    missing = [p.name for p in sources if not p.is_file()]
    if missing:
        raise InputError(f"uploaded file(s) {', '.join(missing[:3])} are no longer on the server; upload them again")
    check_upload_size(sources, max_bytes)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    moved: list[Path] = []
    for number, source in enumerate(sources):
        target = folder / Path(source.name).name
        if target.exists():  # same name from two folders: keep both
            target = folder / f"{number:05d}_{target.name}"
        moved.append(Path(shutil.move(source, target)))
    return moved
