"""Model names: core knows presets and checkpoint folders; the top-level registry also knows
``default`` (the synthetic-task model shipped with the package)."""

import json

import pytest
import torch

from longllava.cli import main
from longllava.core.checkpoint import load_model
from longllava.core.pipeline import LongLlava
from longllava.errors import InputError
from longllava.models import SYNTHETIC_DEFAULT
from longllava.registry import load_llava, model_info, resolve_model


def test_default_resolves_to_the_shipped_model_and_loads():
    assert resolve_model("default") == SYNTHETIC_DEFAULT
    llava = load_llava("default")
    reference, _ = load_model(SYNTHETIC_DEFAULT)
    for (name, value), expected in zip(llava.model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(value, expected), name
    assert model_info("default")["model"] == "default"
    assert model_info("default")["num_layers"] == model_info(str(SYNTHETIC_DEFAULT))["num_layers"]


def test_a_missing_shipped_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("longllava.finetune.default_model.SYNTHETIC_DEFAULT", tmp_path / "synthetic-default")
    with pytest.raises(InputError, match="the default model is missing from this installation .* rebuild it with "
                                         "`longllava finetune --recipe synthetic-default --out DIR`"):
        resolve_model("default")


def test_info_and_ask_take_default(capsys, fixtures):
    assert main(["info", "--model", "default", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "default"
    assert main(["ask", "--image", str(fixtures / "pathology" / "ihc_colon.png"), "--question", "?",
                 "--max-new-tokens", "2"]) == 0  # --model default is the default
    assert "synthetic-task model" in capsys.readouterr().out


def test_presets_and_folders_pass_through_and_unknown_names_are_clear_errors(tmp_path):
    assert resolve_model("tiny-random") == "tiny-random"
    assert resolve_model(tmp_path) == tmp_path
    with pytest.raises(InputError, match="neither a preset .* 'default', nor a checkpoint directory"):
        resolve_model(tmp_path / "missing")


def test_core_does_not_know_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder named "default" here
    with pytest.raises(InputError, match="longllava.registry.load_model also knows 'default'"):
        load_model("default")
    with pytest.raises(InputError):
        LongLlava.load("default")
