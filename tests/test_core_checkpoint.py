import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText

from longllava.cli import main
from longllava.core.checkpoint import build_preset, load_model, save_model
from longllava.core.convert import convert_reference_checkpoint
from longllava.core.info import model_info
from longllava.errors import InputError

REFERENCE = Path(__file__).parent / "fixtures" / "reference"


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

@pytest.mark.parametrize("vision_inside,clip_hub_layout", [(False, False), (False, True), (True, False)])
def test_convert_reference_layout_round_trip_equal_logits(write_reference_checkpoint, tmp_path, model_and_ids, vision_inside, clip_hub_layout):
    model, tokenizer, ids, pixels, logits = model_and_ids
    ref = write_reference_checkpoint(model, tokenizer, tmp_path / "ref", tmp_path / "clip", vision_inside, clip_hub_layout)
    assert any(".moe.experts.3.up_proj" in k for k in ref) and any("pre_moe_layernorm" in k for k in ref)
    assert any(k.startswith("model.layers.0.moe.experts.0.gate_proj") for k in ref)  # dense layer as expert 0
    summary = convert_reference_checkpoint(tmp_path / "ref", tmp_path / "clip", tmp_path / "out", max_shard_size="500KB")
    assert summary["shards"] > 1 and summary["pooling"] == "2d"
    assert summary["vision_weights_from"] == ("checkpoint" if vision_inside else str(tmp_path / "clip"))
    converted, _ = load_model(tmp_path / "out")
    torch.testing.assert_close(logits_of(converted, ids, pixels), logits)


def test_convert_reports_leftover_and_missing_keys(write_reference_checkpoint, tmp_path, model_and_ids):
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


def test_convert_cli(write_reference_checkpoint, tmp_path, model_and_ids, capsys):
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


# --- convert: the released config, and never a partial or destroyed output -----------------------

@pytest.fixture
def reference_dirs(write_reference_checkpoint, tmp_path, model_and_ids):
    model, tokenizer, *_ = model_and_ids
    write_reference_checkpoint(model, tokenizer, tmp_path / "ref", tmp_path / "clip", clip_hub_layout=True)
    return tmp_path / "ref", tmp_path / "clip"


def edit_config(ref_dir, **changes):
    config = json.loads((ref_dir / "config.json").read_text())
    config.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del config[key]
    (ref_dir / "config.json").write_text(json.dumps(config))


def test_the_released_text_config_alone_names_the_missing_multimodal_field(tmp_path, reference_dirs):
    ref, clip = reference_dirs
    shutil.copy(REFERENCE / "config.json", ref / "config.json")  # Jamba's config as released, no mm_* fields
    with pytest.raises(InputError, match="'mm_projector_type' is missing"):
        convert_reference_checkpoint(ref, clip, tmp_path / "out")


@pytest.mark.parametrize("changes,message", [
    ({"resamplePooling": None}, "'resamplePooling' is missing.*\"2d\""),
    ({"mm_vision_select_layer": None}, "'mm_vision_select_layer' is missing"),
    ({"mm_hidden_size": None}, "'mm_hidden_size' is missing"),
    ({"num_experts": None, "mamba_dt_rank": None}, "Jamba fields num_experts, mamba_dt_rank are missing"),
    ({"mm_projector_type": "linear"}, "mm_projector_type='linear' is not supported"),
    ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio='anyres' is not supported"),
    ({"mm_hidden_size": 1024}, "mm_hidden_size=1024 but the CLIP checkpoint's hidden_size is 32"),
    ({"resamplePooling": "3d"}, "unknown resamplePooling '3d'"),
])
def test_config_errors_name_the_field(tmp_path, reference_dirs, changes, message):
    ref, clip = reference_dirs
    edit_config(ref, **changes)
    with pytest.raises(InputError, match=message):
        convert_reference_checkpoint(ref, clip, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_training_length_is_not_a_limit_and_a_flag_sets_one(tmp_path, reference_dirs):
    ref, clip = reference_dirs
    summary = convert_reference_checkpoint(ref, clip, tmp_path / "a")
    assert summary["max_sequence_length"] == 262144 > 1000 * 144  # not tokenizer_model_max_length=40960
    summary = convert_reference_checkpoint(ref, clip, tmp_path / "b", max_sequence_length=5000)
    converted, tokenizer = load_model(tmp_path / "b")
    assert converted.config.max_sequence_length == 5000


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_non_empty_out_needs_overwrite_and_is_replaced_only_on_success(tmp_path, reference_dirs, model_and_ids):
    model, tokenizer, ids, pixels, logits = model_and_ids
    ref, clip = reference_dirs
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty.*--overwrite"):
        convert_reference_checkpoint(ref, clip, out)
    assert snapshot(out) == {Path("notes.txt"): b"mine"}
    convert_reference_checkpoint(ref, clip, out, overwrite=True)
    assert not (out / "notes.txt").exists()
    torch.testing.assert_close(logits_of(load_model(out)[0], ids, pixels), logits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "out", "ref"]  # no temporary siblings left
    (tmp_path / "empty").mkdir()
    convert_reference_checkpoint(ref, clip, tmp_path / "empty")  # an empty folder is fine without --overwrite
    assert (tmp_path / "empty" / "config.json").is_file()


def unknown_key(ref, monkeypatch):
    from safetensors.torch import load_file

    shard = ref / "model-00002-of-00003.safetensors"
    tensors = load_file(str(shard)) | {"model.layers.0.mamba.mystery_proj.weight": torch.zeros(2)}
    save_file(tensors, str(shard))


def wrong_shape(ref, monkeypatch):
    from safetensors.torch import load_file

    shard = ref / "model-00003-of-00003.safetensors"
    tensors = load_file(str(shard))
    key = sorted(tensors)[-1]
    tensors[key] = torch.zeros(3, 3, 3)
    save_file(tensors, str(shard))


def interrupt_while_writing(ref, monkeypatch):
    from longllava.core.convert import ShardWriter

    original = ShardWriter._flush

    def flush_then_interrupt(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardWriter, "_flush", flush_then_interrupt)


def disk_full_on_the_tokenizer(ref, monkeypatch):
    from longllava.core import convert

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "save_tokenizer_files", full)


@pytest.mark.parametrize("failure,error", [
    (unknown_key, InputError), (wrong_shape, InputError), (interrupt_while_writing, KeyboardInterrupt),
    (disk_full_on_the_tokenizer, OSError),
])
def test_a_failed_conversion_leaves_everything_as_it_was(tmp_path, reference_dirs, monkeypatch, failure, error):
    ref, clip = reference_dirs
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "model.safetensors").write_bytes(b"an older model")
    before, siblings = snapshot(out), sorted(p.name for p in tmp_path.iterdir())
    failure(ref, monkeypatch)
    with pytest.raises(error):
        convert_reference_checkpoint(ref, clip, out, overwrite=True, max_shard_size="200KB")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings
    with pytest.raises(error):
        convert_reference_checkpoint(ref, clip, tmp_path / "new", max_shard_size="200KB")
    assert not (tmp_path / "new").exists()


def test_a_file_as_out_is_refused(tmp_path, reference_dirs):
    ref, clip = reference_dirs
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        convert_reference_checkpoint(ref, clip, tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "x"


def test_clip_position_ids_must_be_positions(tmp_path, reference_dirs):
    from safetensors.torch import load_file

    ref, clip = reference_dirs
    tensors = load_file(str(clip / "model.safetensors"))
    tensors["vision_model.embeddings.position_ids"] = tensors["vision_model.embeddings.position_ids"].flip(-1).contiguous()
    save_file(tensors, str(clip / "model.safetensors"))
    with pytest.raises(InputError, match="position_ids: expected the positions 0..576"):
        convert_reference_checkpoint(ref, clip, tmp_path / "out")


# --- the real tokenizer and config: convert, reload, generate, 1000 images -----------------------

def small_image_model(vocab_size: int):
    """The tiny architecture with 28 px images (a 2x2 patch grid -> 1 token per image after pooling),
    so that a 1000-image prompt runs on a CPU in seconds."""
    from longllava.core.configuration import tiny_config
    from longllava.core.modeling import LongLlavaForConditionalGeneration

    config = tiny_config(vocab_size)
    config.vision_config.image_size = 28
    torch.manual_seed(5)
    return LongLlavaForConditionalGeneration(config).eval()


def test_released_tokenizer_and_config_convert_reload_generate_and_take_1000_images(write_reference_checkpoint, tmp_path):
    import sentencepiece
    from PIL import Image

    from longllava.core import protocol
    from longllava.core.generation import GenerationSettings
    from longllava.core.pipeline import LongLlava

    model = small_image_model(65536)
    write_reference_checkpoint(model, None, tmp_path / "ref", tmp_path / "clip", tokenizer_files=REFERENCE)
    summary = convert_reference_checkpoint(tmp_path / "ref", tmp_path / "clip", tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.model").is_file()
    llava = LongLlava.load(str(tmp_path / "out"))
    spm = sentencepiece.SentencePieceProcessor(model_file=str(REFERENCE / "tokenizer.model"))
    for text in ["</img>", "Yes", "\n", " 12 slices\n", "<vid><t></vid>", "日本 🙂"]:
        assert llava.tokenizer(text, add_special_tokens=False).input_ids == spm.encode(text)
    ids = torch.tensor([[1] + spm.encode("<img>") + [model.config.image_token_id] + spm.encode("</img>\nIs it?")])
    pixels = torch.randn(1, 3, 28, 28)
    torch.testing.assert_close(logits_of(llava.model, ids, pixels), logits_of(model, ids, pixels))

    frames = [Image.new("RGB", (28, 28), (i % 256, 0, 0)) for i in range(1000)]
    streamed = []
    answer = llava.ask([protocol.StackInput(frames)], "How many frames?",
                       settings=GenerationSettings(max_new_tokens=4), on_text=streamed.append)
    assert answer.num_images == 1000 and answer.num_prompt_tokens > 1000 * (1 + len(spm.encode("<img></img><t>")))
    assert "".join(streamed).strip() == answer.text
    # The released geometry: 1000 images of 144 tokens fit the converted model's limit.
    assert summary["max_sequence_length"] > 1000 * (144 + len(spm.encode(protocol.IMAGE_BLOCK + "<t>")))
