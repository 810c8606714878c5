import json
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText

from longllava.cli import main
from longllava.core.checkpoint import build_preset, load_model, save_model
from longllava.core.convert import convert_reference_checkpoint
from longllava.core.info import model_info
from longllava.errors import InputError


@pytest.fixture(scope="module")
def model_and_ids():
    model, tokenizer = build_preset("tiny-random")
    torch.manual_seed(11)
    config = model.config
    ids = torch.tensor([[1, 50, 60] + [config.image_token_id] * 144 + [70, 80, 90]])
    pixels = torch.randn(1, 3, 336, 336)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits
    return model, tokenizer, ids, pixels, logits


def logits_of(model, ids, pixels):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


def test_save_and_load_round_trip_gives_equal_logits(tmp_path, model_and_ids):
    model, tokenizer, ids, pixels, logits = model_and_ids
    save_model(model, tokenizer, tmp_path, max_shard_size="1MB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1 and not list(tmp_path.glob("*.bin"))
    loaded, loaded_tokenizer = load_model(tmp_path)
    torch.testing.assert_close(logits_of(loaded, ids, pixels), logits)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(auto).__name__ == "LongLlavaForConditionalGeneration"
    torch.testing.assert_close(logits_of(auto, ids, pixels), logits)


def test_pickled_weights_need_an_explicit_flag(tmp_path, model_and_ids):
    model, tokenizer, ids, pixels, logits = model_and_ids
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match="only pickled .bin weights.*--allow-pickle"):
        load_model(tmp_path)
    loaded, _ = load_model(tmp_path, allow_pickle=True)
    torch.testing.assert_close(logits_of(loaded, ids, pixels), logits)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
def test_int8_on_cpu_gives_a_clear_message(tmp_path, model_and_ids):
    model, tokenizer, *_ = model_and_ids
    save_model(model, tokenizer, tmp_path)
    with pytest.raises(InputError, match="int8 loading needs a CUDA GPU"):
        load_model(tmp_path, int8=True)


# --- the released checkpoints' layout ------------------------------------------------------------

def write_reference_checkpoint(model, tokenizer, ref_dir, clip_dir, vision_inside=False, clip_hub_layout=False):
    """Write `model` the way FreedomIntelligence/LongLLaVA checkpoints store it: AI21 Jamba names
    (moe.experts.{j}.*, pre_moe_layernorm, B/C_layernorm), mm_projector.0/2, CLIP in its own dir.
    Spread over 3 safetensors shards so that one layer's experts straddle two shards."""
    config = model.config
    text = config.text_config
    ref = {}
    for key, value in model.state_dict().items():
        if key.startswith("vision_tower."):
            if vision_inside:
                # transformers 4 layout, as in the released checkpoints
                ref["model.vision_tower.vision_tower.vision_model." + key[len("vision_tower."):]] = value
            continue
        if key.startswith("multi_modal_projector."):
            ref[key.replace("multi_modal_projector.linear_1", "model.mm_projector.0")
                   .replace("multi_modal_projector.linear_2", "model.mm_projector.2")] = value
            continue
        key = key[len("language_model."):]
        m = re.match(r"model\.layers\.(\d+)\.(.*)", key)
        if not m:
            ref[key] = value
            continue
        prefix, sub = f"model.layers.{m.group(1)}.", m.group(2)
        if sub == "feed_forward.experts.gate_up_proj":
            for j in range(text.num_experts):
                gate, up = value[j].chunk(2)
                ref[f"{prefix}moe.experts.{j}.gate_proj.weight"] = gate
                ref[f"{prefix}moe.experts.{j}.up_proj.weight"] = up
        elif sub == "feed_forward.experts.down_proj":
            for j in range(text.num_experts):
                ref[f"{prefix}moe.experts.{j}.down_proj.weight"] = value[j]
        elif sub == "feed_forward.router.weight":
            ref[prefix + "moe.router.weight"] = value
        elif sub.startswith("feed_forward."):  # dense layer: the reference keeps it as expert 0
            ref[prefix + "moe.experts.0." + sub[len("feed_forward."):]] = value
        else:
            sub = (sub.replace("pre_ff_layernorm", "pre_moe_layernorm")
                      .replace("b_layernorm", "B_layernorm").replace("c_layernorm", "C_layernorm"))
            ref[prefix + sub] = value
    keys = sorted(ref)
    ref_dir.mkdir(parents=True)
    for i in range(3):
        part = {k: ref[k].clone().contiguous() for k in keys[i::3]}
        save_file(part, str(ref_dir / f"model-0000{i + 1}-of-00003.safetensors"))
    ref_config = {
        "architectures": ["LlavaJambaForCausalLM"], "model_type": "llava_jamba",
        **{k: getattr(text, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "attn_layer_period", "attn_layer_offset", "expert_layer_period",
            "expert_layer_offset", "num_experts", "num_experts_per_tok", "mamba_d_state", "mamba_d_conv",
            "mamba_expand", "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias", "rms_norm_eps",
            "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")},
        "hidden_act": "silu", "mamba_inner_layernorms": True, "n_ctx": 262144, "use_mamba_kernels": False,
        "resamplePooling": "2d", "mm_vision_select_layer": -2, "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": config.vision_config.hidden_size, "image_aspect_ratio": "pad",
        "mm_vision_tower": "/cluster/path/clip-vit-large-patch14-336",
    }
    (ref_dir / "config.json").write_text(json.dumps(ref_config))
    tokenizer.save_pretrained(ref_dir)
    if clip_hub_layout:  # openai/clip-vit-large-patch14-336: a whole CLIPModel, tower under vision_model.
        model.vision_tower.config.save_pretrained(clip_dir)
        tower = {"vision_model." + k: v.clone() for k, v in model.vision_tower.state_dict().items()}
        tower.update({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2), "logit_scale": torch.ones(())})
        save_file(tower, str(clip_dir / "model.safetensors"))
    else:
        model.vision_tower.save_pretrained(clip_dir)
    return ref


@pytest.mark.parametrize("vision_inside,clip_hub_layout", [(False, False), (False, True), (True, False)])
def test_convert_reference_layout_round_trip_equal_logits(tmp_path, model_and_ids, vision_inside, clip_hub_layout):
    model, tokenizer, ids, pixels, logits = model_and_ids
    ref = write_reference_checkpoint(model, tokenizer, tmp_path / "ref", tmp_path / "clip", vision_inside, clip_hub_layout)
    assert any(".moe.experts.3.up_proj" in k for k in ref) and any("pre_moe_layernorm" in k for k in ref)
    assert any(k.startswith("model.layers.0.moe.experts.0.gate_proj") for k in ref)  # dense layer as expert 0
    summary = convert_reference_checkpoint(tmp_path / "ref", tmp_path / "clip", tmp_path / "out", max_shard_size="500KB")
    assert summary["shards"] > 1 and summary["pooling"] == "2d"
    assert summary["vision_weights_from"] == ("checkpoint" if vision_inside else str(tmp_path / "clip"))
    converted, _ = load_model(tmp_path / "out")
    torch.testing.assert_close(logits_of(converted, ids, pixels), logits)


def test_convert_reports_leftover_and_missing_keys(tmp_path, model_and_ids):
    from safetensors.torch import load_file

    model, tokenizer, *_ = model_and_ids
    write_reference_checkpoint(model, tokenizer, tmp_path / "ref", tmp_path / "clip")
    shard = tmp_path / "ref" / "model-00001-of-00003.safetensors"
    tensors = load_file(str(shard))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["model.layers.0.mamba.mystery_proj.weight"] = torch.zeros(2)
    save_file(tensors, str(shard))
    with pytest.raises(InputError) as error:
        convert_reference_checkpoint(tmp_path / "ref", tmp_path / "clip", tmp_path / "out")
    message = str(error.value)
    assert "model.layers.0.mamba.mystery_proj.weight" in message
    assert "not filled" in message or "incomplete experts" in message
    assert not (tmp_path / "out").exists()


def test_convert_cli(tmp_path, model_and_ids, capsys):
    model, tokenizer, ids, pixels, logits = model_and_ids
    write_reference_checkpoint(model, tokenizer, tmp_path / "ref", tmp_path / "clip")
    assert main(["convert", str(tmp_path / "ref"), "--clip", str(tmp_path / "clip"), "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"] == len(model.state_dict())
    assert main(["convert", str(tmp_path / "nope"), "--clip", str(tmp_path / "clip"), "--out", str(tmp_path / "p")]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_info_of_released_presets_without_weights():
    a13b = model_info("longllava-a13b")
    assert a13b["attention_layers"] == [4, 12, 20, 28]
    assert len(a13b["mamba_layers"]) == 28
    assert a13b["moe_layers"] == list(range(1, 32, 2))
    assert a13b["experts_per_moe_layer"] == 16 and a13b["experts_per_token"] == 2
    assert 51e9 < a13b["total_params"] < 53e9 and 12e9 < a13b["active_params"] < 13e9
    nine_b = model_info("longllava-9b")
    assert nine_b["moe_layers"] == [] and nine_b["total_params"] == nine_b["active_params"]
    assert 9e9 < nine_b["total_params"] < 10e9
    assert nine_b["kv_cache_bytes_per_token_bf16"] == 2 * 2 * 8 * 128 * 4
    tiny = model_info("tiny-random")
    assert tiny["attention_layers"] == [4] and tiny["tokens_per_image"] == 144
