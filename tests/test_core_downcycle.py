"""MoE -> dense downcycling of a converted checkpoint (the paper's Table 10 methods)."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from longllava.cli import main
from longllava.core.checkpoint import build_preset, load_model, save_model
from longllava.core.convert import convert_reference_checkpoint
from longllava.core.downcycle import downcycle_checkpoint, spherical_mean
from longllava.core.pipeline import LongLlava
from longllava.core import protocol
from longllava.errors import InputError

EXPERT_KEY = re.compile(r"^(model\.layers\.\d+\.moe\.experts\.)(\d+)(\..+)$")


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """The tiny MoE preset (4 experts, top-2 on odd layers), saved in this project's layout."""
    model, tokenizer = build_preset("tiny-random")
    folder = tmp_path_factory.mktemp("moe")
    save_model(model, tokenizer, folder)
    return model, tokenizer, folder


def test_expert_k_equals_the_converters_dense_mapping_of_that_expert(write_reference_checkpoint, tmp_path, moe):
    model, tokenizer, moe_dir = moe
    k = 2
    ref = write_reference_checkpoint(model, tokenizer, tmp_path / "ref", tmp_path / "clip")
    # The released 9B layout: one MLP per layer, stored as expert 0, no router.
    layer_experts = model.config.text_config.layers_num_experts
    dense = {}
    for key, value in ref.items():
        match = EXPERT_KEY.match(key)
        if match and int(match.group(2)) == (k if layer_experts[int(match.group(1).split(".")[2])] > 1 else 0):
            dense[match.group(1) + "0" + match.group(3)] = value
        elif not match and not key.endswith("moe.router.weight"):
            dense[key] = value
    dense_dir = tmp_path / "ref-dense"
    dense_dir.mkdir()
    save_file({key: value.contiguous() for key, value in dense.items()}, str(dense_dir / "model.safetensors"))
    config = json.loads((tmp_path / "ref" / "config.json").read_text()) | {"num_experts": 1, "num_experts_per_tok": 1}
    (dense_dir / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(dense_dir)
    convert_reference_checkpoint(dense_dir, tmp_path / "clip", tmp_path / "converted")

    # Both on-disk layouts of a MoE checkpoint: transformers' (one key per expert, as save_model
    # writes) and the converter's (experts fused, as transformers 5 holds them in memory).
    convert_reference_checkpoint(tmp_path / "ref", tmp_path / "clip", tmp_path / "moe-converted")
    expected = load_model(tmp_path / "converted")[0].state_dict()
    for source in (moe_dir, tmp_path / "moe-converted"):
        out = tmp_path / f"down-{source.name}"
        summary = downcycle_checkpoint(source, out, f"expert-{k}", max_shard_size="300KB")
        assert summary["moe_layers"] == [1, 3, 5, 7] and summary["shards"] > 1
        got = load_model(out)[0].state_dict()
        assert sorted(got) == sorted(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_mean_and_spherical_mean_by_hand(tmp_path, moe):
    model, tokenizer, moe_dir = moe
    state = model.state_dict()
    size = model.config.text_config.intermediate_size
    downcycle_checkpoint(moe_dir, tmp_path / "mean", "mean")
    downcycle_checkpoint(moe_dir, tmp_path / "spherical", "spherical")
    mean = load_model(tmp_path / "mean")[0].state_dict()
    spherical = load_model(tmp_path / "spherical")[0].state_dict()
    for layer in (1, 3, 5, 7):
        prefix = f"language_model.model.layers.{layer}.feed_forward."
        gate_up, down = state[prefix + "experts.gate_up_proj"], state[prefix + "experts.down_proj"]
        experts = {"gate_proj": gate_up[:, :size], "up_proj": gate_up[:, size:], "down_proj": down}
        for name, stacked in experts.items():
            count = stacked.shape[0]
            by_hand = sum(stacked[j] for j in range(count)) / count
            torch.testing.assert_close(mean[f"{prefix}{name}.weight"], by_hand)
            norms = [float(stacked[j].pow(2).sum().sqrt()) for j in range(count)]
            unit_sum = sum(stacked[j] / norms[j] for j in range(count))
            by_hand = unit_sum / float(unit_sum.pow(2).sum().sqrt()) * (sum(norms) / count)
            torch.testing.assert_close(spherical[f"{prefix}{name}.weight"], by_hand)
        assert prefix + "router.weight" not in mean
    unchanged = "language_model.model.layers.0.feed_forward.gate_proj.weight"
    assert torch.equal(mean[unchanged], state[unchanged])


def test_spherical_mean_of_two_orthogonal_experts():
    experts = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    # direction (1, 1)/sqrt(2), length (3 + 4) / 2
    torch.testing.assert_close(spherical_mean(experts), torch.tensor([3.5, 3.5]) / 2**0.5)


@pytest.mark.parametrize("method", ["expert-0", "spherical"])
def test_the_dense_output_loads_as_the_9b_layout_and_generates(tmp_path, moe, method):
    _, _, moe_dir = moe
    downcycle_checkpoint(moe_dir, tmp_path / "dense", method)
    model, tokenizer = load_model(tmp_path / "dense")
    assert set(model.config.text_config.layers_num_experts) == {1}
    assert model.config.downcycled_from["method"] == method
    assert not any("experts" in key or "router" in key for key in model.state_dict())
    llava = LongLlava(model, tokenizer)
    image = protocol.ImageInput(torch.rand(336, 336, 3).mul(255).byte().numpy())
    answer = llava.ask([image], "Is there a lesion?", max_new_tokens=3)
    ids = llava.processor(["<img><image></img>"], [[image.image]])
    tokens = model.greedy_generate(ids["input_ids"], ids["pixel_values"], ids["attention_mask"], max_new_tokens=3)
    assert tokens.shape == (1, 3) and answer.num_images == 1


def test_downcycle_cli_and_its_errors(tmp_path, moe, capsys):
    _, _, moe_dir = moe
    assert main(["downcycle", str(moe_dir), "--method", "expert-3", "--out", str(tmp_path / "d")]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "expert-3"
    assert main(["downcycle", str(moe_dir), "--method", "expert-4", "--out", str(tmp_path / "e")]) == 2
    assert "4 experts per MoE layer (expert-0 ... expert-3)" in capsys.readouterr().err
    assert main(["downcycle", str(moe_dir), "--method", "median", "--out", str(tmp_path / "e")]) == 2
    assert "unknown downcycling method 'median'" in capsys.readouterr().err
    assert main(["downcycle", str(moe_dir), "--method", "mean", "--out", str(tmp_path / "d")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["downcycle", str(tmp_path / "d"), "--method", "mean", "--out", str(tmp_path / "f")]) == 2
    assert "already dense" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()
    with pytest.raises(InputError, match="no config.json"):
        downcycle_checkpoint(tmp_path / "missing", tmp_path / "g", "mean")
