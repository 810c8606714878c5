"""Model names: core knows presets and checkpoint folders; the top-level registry also knows
``default`` (the embedded model, built by finetune on first use; here an already-built one)."""

import json

import pytest
import torch

from longllava.cli import main
from longllava.core.checkpoint import build_preset, load_model, save_model
from longllava.core.pipeline import LongLlava
from longllava.errors import InputError
from longllava.registry import load_llava, model_info, resolve_model


@pytest.fixture
def built_default(tmp_path, monkeypatch):
    """A LONGLLAVA_HOME whose default model is already built (the tiny-random weights)."""
    monkeypatch.setenv("LONGLLAVA_HOME", str(tmp_path / "home"))
    final = tmp_path / "home" / "models" / "synthetic-default" / "final"
    save_model(*build_preset("tiny-random"), final)
    return final


def test_default_resolves_to_the_built_model_and_loads(built_default):
    assert resolve_model("default") == built_default
    llava = load_llava("default")
    reference, _ = build_preset("tiny-random")
    for (name, value), expected in zip(llava.model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(value, expected), name
    assert model_info("default")["model"] == "default"
    assert model_info("default")["num_layers"] == model_info("tiny-random")["num_layers"]


def test_info_and_ask_take_default(built_default, capsys, fixtures):
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
