"""The layers of docs/architecture.md, checked by import-linter's contract in pyproject.toml:
no module imports from a layer above its own, at the top of a file or inside a function."""

from pathlib import Path

import importlinter.api  # noqa: F401  (configures import-linter: contract types, readers)
from importlinter.application import use_cases

import longllava

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_imports_follow_the_layers(capsys):
    assert Path(longllava.__file__).resolve().parent == PYPROJECT.parent  # the tree under test
    kept = use_cases.lint_imports(str(PYPROJECT), cache_dir=None, no_logo=True)
    report = capsys.readouterr().out
    assert kept, f"imports against the layers (pyproject.toml [tool.importlinter]):\n{report}"
    assert "1 kept, 0 broken" in report
