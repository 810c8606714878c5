"""Fine-tuning: stages, LoRA, packing, resume, recipes on real-format fixtures, DeepSpeed, default model."""

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from longllava.core.checkpoint import build_preset, load_model
from longllava.core.processor import LongLlavaProcessor
from longllava.core.records import Record
from longllava.errors import InputError
from longllava.finetune.data import (
    LengthGroupedSampler,
    PackedDataset,
    SampleEncoder,
    make_collate,
    mix_with_replay,
    pack_samples,
    read_llava_json,
)
from longllava.finetune.recipes import RECIPES, LoraSettings
from longllava.finetune.train import TrainOptions, apply_lora, set_trainable, train


def small_records(fixtures, n=6):
    image = fixtures / "pathology" / "ihc_colon.png"
    answers = ["brown DAB stain", "blue hematoxylin", "glands"]
    return [
        Record(f"r{i}", [image], [{"from": "human", "value": "<image>\nWhat is shown?"},
                                  {"from": "gpt", "value": answers[i % 3]}], source=f"test#{i}")
        for i in range(n)
    ]


def write_llava_data(fixtures, folder: Path, n=6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixtures / "pathology" / "ihc_colon.png", folder / "ihc.png")
    rows = [{"id": f"s{i}", "image": "ihc.png",
             "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": ["glands", "stain"][i % 2]}]}
            for i in range(n)]
    (folder / "train.json").write_text(json.dumps(rows))
    return folder / "train.json"


def weights(path: Path) -> dict:
    """The state dict of the model saved in ``path`` (in the model's own parameter layout)."""
    return load_model(path)[0].state_dict()


def stored_keys(path: Path) -> set:
    keys = set()
    for file in sorted(path.glob("*.safetensors")):
        keys |= set(load_file(str(file)))
    return keys


def fast(recipe_name, **changes):
    return replace(RECIPES[recipe_name], max_length=2048, batch_size=2, gradient_checkpointing=False, **changes)


@pytest.mark.parametrize("recipe_name,trained", [
    ("stage1", {"multi_modal_projector"}),
    ("stage2", {"multi_modal_projector", "language_model"}),
])
def test_one_step_changes_exactly_the_stage_parameters(tmp_path, fixtures, recipe_name, trained):
    initial = build_preset("tiny-random")[0].state_dict()
    recipe = fast(recipe_name, learning_rate=1e-2, warmup_ratio=0.0)
    train(TrainOptions(recipe=recipe, model="tiny-random", out=tmp_path, max_steps=1, progress=False), small_records(fixtures, 2))
    final = weights(tmp_path / "final")
    changed = {key.split(".")[0] for key, value in final.items() if not torch.equal(value, initial[key])}
    assert changed == trained
    # within a trained part, every trainable tensor that got a gradient moved
    assert not torch.equal(final["multi_modal_projector.linear_1.weight"], initial["multi_modal_projector.linear_1.weight"])


def test_label_smoothed_loss_matches_transformers_and_the_definition(tiny):
    """Without smoothing the recipe's loss is transformers' causal-LM loss; with it, (1 - e) x the
    answer tokens' NLL + e x their mean NLL over the vocabulary. Set as the language model's loss
    function it is what the model's forward returns; a smoothing of 1 or more is refused."""
    import functools

    from transformers.loss.loss_utils import ForCausalLMLoss

    from longllava.finetune.recipes import Recipe
    from longllava.finetune.train import causal_lm_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[0, :3] = -100  # prompt tokens
    assert torch.allclose(causal_lm_loss(logits, labels, 11), ForCausalLMLoss(logits, labels, 11))
    assert torch.allclose(causal_lm_loss(logits, labels, 11, num_items_in_batch=torch.tensor(5)),
                          ForCausalLMLoss(logits, labels, 11, num_items_in_batch=torch.tensor(5)))
    log_p = logits[:, :-1].log_softmax(-1)
    target = labels[:, 1:]
    kept = target != -100
    nll = -log_p.gather(-1, target.clamp(min=0)[..., None])[..., 0][kept]
    uniform = -log_p.mean(-1)[kept]
    assert torch.allclose(causal_lm_loss(logits, labels, 11, label_smoothing=0.2), (0.8 * nll + 0.2 * uniform).mean())

    model, tokenizer = tiny
    ids = torch.tensor([tokenizer("the lesion is in slice three").input_ids])
    lm = copy.deepcopy(model.language_model).eval()
    lm.loss_function = functools.partial(causal_lm_loss, label_smoothing=0.3)
    out = lm(input_ids=ids, labels=ids)
    assert torch.allclose(out.loss, causal_lm_loss(out.logits, ids, out.logits.shape[-1], label_smoothing=0.3))
    assert not torch.allclose(out.loss, ForCausalLMLoss(out.logits, ids, out.logits.shape[-1]))
    with pytest.raises(InputError, match="label_smoothing"):
        Recipe("x", "x", label_smoothing=1.0)


def test_set_trainable_freezes_vision_for_instruction_stages():
    model, _ = build_preset("tiny-random")
    set_trainable(model, "language_model+projector")
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert all(p.requires_grad for p in model.language_model.parameters())
    set_trainable(model, "projector")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.bias",
        "multi_modal_projector.linear_2.weight", "multi_modal_projector.linear_2.bias"]


def test_lora_targets_are_anchored_to_the_language_model_and_reach_fused_experts():
    model, _ = build_preset("tiny-random")
    peft_model = apply_lora(model, LoraSettings())
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and not any("vision_tower" in n for n in lora_names)
    for part in ("self_attn.q_proj", "mamba.in_proj", "mamba.x_proj", "mamba.dt_proj", "mamba.out_proj", "feed_forward.gate_proj"):
        assert any(part in n for n in lora_names), part
    assert any("experts" in n for n in lora_names)  # fused 3-D expert tensors via target_parameters


def test_lora_train_merge_reload_gives_the_same_outputs(tmp_path, fixtures):
    records = small_records(fixtures, 4)
    recipe = fast("stage2", learning_rate=5e-2, warmup_ratio=0.0)
    summary = train(TrainOptions(recipe=recipe, model="tiny-random", out=tmp_path, max_steps=2, lora=True, merge=True,
                                 progress=False), records)
    assert summary["merged"]
    assert not any("lora_" in k or "base_layer" in k for k in stored_keys(tmp_path / "final"))
    merged, tokenizer = load_model(tmp_path / "final")
    base, _ = build_preset("tiny-random")
    processor = LongLlavaProcessor.for_model(merged, tokenizer)
    inputs = processor(["<img><image></img>\nWhat is shown?"], [[fixtures / "pathology" / "ihc_colon.png"]])
    with torch.no_grad():
        out_merged = merged(**{k: v for k, v in inputs.items() if k != "attention_mask"}).logits
        out_base = base(**{k: v for k, v in inputs.items() if k != "attention_mask"}).logits
    assert (out_merged - out_base).abs().max() > 1e-4  # the adapters did learn something
    # the adapted (unmerged) model from the last checkpoint gives the merged model's outputs
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(build_preset("tiny-random")[0], str(sorted(tmp_path.glob("checkpoint-*"))[-1]))
    with torch.no_grad():
        out_adapted = adapted(**{k: v for k, v in inputs.items() if k != "attention_mask"}).logits
    torch.testing.assert_close(out_adapted, out_merged, atol=1e-4, rtol=1e-4)


def test_packing_keeps_every_sample_in_order_and_opens_a_new_row_on_overflow():
    assert pack_samples([5, 4, 3, 6, 1], 9) == [[0, 1], [2, 3], [4]]
    assert pack_samples([9, 9], 9) == [[0], [1]]
    with pytest.raises(InputError, match="sample 1 has 10 tokens, more than max_length=9"):
        pack_samples([3, 10], 9)


def test_packed_rows_isolate_their_samples(tiny, fixtures):
    model, tokenizer = tiny
    processor = LongLlavaProcessor.for_model(model, tokenizer)
    samples = [SampleEncoder(processor)(r) for r in small_records(fixtures, 3)]
    dataset = PackedDataset(samples, max_length=4096, packing=True)
    assert dataset.groups == [[0, 1, 2]]
    batch = make_collate(0)([dataset[0]])
    assert batch["pixel_values"].shape[0] == 3
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [0, len(samples[0]), len(samples[0]) + len(samples[1])]
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], position_ids=batch["position_ids"]).logits
        alone = make_collate(0)([PackedDataset(samples[1:2], 4096, packing=True)[0]])
        single = model(input_ids=alone["input_ids"], pixel_values=alone["pixel_values"]).logits
    offset = len(samples[0])
    torch.testing.assert_close(packed[:, offset : offset + len(samples[1])], single, atol=1e-4, rtol=1e-4)
    # labels: only the answers (and EOS) are supervised
    supervised = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert tokenizer.decode(supervised) == "brown DAB stain<|endoftext|>blue hematoxylin<|endoftext|>glands<|endoftext|>"


def test_collate_pads_as_a_separate_segment_and_sampler_groups_lengths():
    rows = [{"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7]), "position_ids": torch.arange(3),
             "pixel_values": torch.zeros(0, 3, 336, 336)},
            {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "position_ids": torch.arange(1),
             "pixel_values": torch.zeros(0, 3, 336, 336)}]
    batch = make_collate(0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    lengths = [1, 50, 2, 49, 3, 48, 10, 11]
    sampler = LengthGroupedSampler(lengths, batch_size=2, seed=0, mega=4)
    order = list(sampler)
    assert sorted(order) == list(range(8)) and order == list(sampler)  # deterministic per epoch
    batches = [sorted(lengths[i] for i in order[k : k + 2]) for k in range(0, 8, 2)]
    assert sorted(batches) == [[1, 2], [3, 10], [11, 48], [49, 50]]  # similar lengths batched together
    orders = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        orders.add(tuple(map(tuple, ([sorted(lengths[i] for i in list(sampler)[k : k + 2]) for k in range(0, 8, 2)]))))
    assert len(orders) > 1  # batch order is shuffled, not longest-first every time
    # mega=1 (recipes whose length gives the task away): plain shuffled batches that mix lengths
    task_lengths = [100, 200] * 16
    mixed = list(LengthGroupedSampler(task_lengths, batch_size=4, seed=0, mega=1))
    assert sorted(mixed) == list(range(32))
    assert sum(len({task_lengths[i] for i in mixed[k : k + 4]}) == 2 for k in range(0, 32, 4)) >= 4
    grouped = list(LengthGroupedSampler(task_lengths, batch_size=4, seed=0, mega=8))
    assert all(len({task_lengths[i] for i in grouped[k : k + 4]}) == 1 for k in range(0, 32, 4))


def test_replay_mix_draws_the_configured_shares():
    main = [Record(f"m{i}", [], [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]) for i in range(8)]
    text = [Record(f"t{i}", [], main[0].conversations) for i in range(3)]
    mixed = mix_with_replay(main, {"text": text}, {"text": 0.5}, seed=1)
    assert len(mixed) == 12 and sum(r.id.startswith("t") for r in mixed) == 4
    assert {r.id for r in mixed if r.id.startswith("m")} == {r.id for r in main}


def test_llava_reader_names_file_record_and_field(tmp_path, fixtures):
    path = write_llava_data(fixtures, tmp_path, n=2)
    assert [r.id for r in read_llava_json(path)] == ["s0", "s1"]
    rows = json.loads(path.read_text())
    rows.append({"id": "bad", "image": "missing.png", "conversations": rows[0]["conversations"]})
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match=r"train.json record 2: field 'image': file not found"):
        read_llava_json(path)
    from longllava.core.records import RecordErrors

    errors = RecordErrors(skip_bad=True)
    assert len(read_llava_json(path, errors=errors)) == 2 and errors.summary()["num_bad"] == 1


def run_cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "longllava", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, fixtures):
    data = write_llava_data(fixtures, tmp_path / "data", n=6)
    common = ["finetune", "--recipe", "stage2", "--data", str(data), "--max-steps", "6", "--save-steps", "2",
              "--logging-steps", "1", "--max-length", "400", "--lr", "1e-3"]
    reference = run_cli(*common, "--out", str(tmp_path / "straight"))
    assert reference.returncode == 0, reference.stderr[-2000:]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "longllava", *common, "--out", str(interrupted)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (interrupted / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "final").exists()
    again = run_cli(*common, "--out", str(interrupted))  # without --resume: refuses to overwrite
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run_cli(*common, "--out", str(interrupted), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(tmp_path / "straight" / "final"), weights(interrupted / "final")
    assert a.keys() == b.keys()
    for key in a:  # the experts too: they are stored per expert and fused back on load
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5, msg=key)
    log_a = [json.loads(l) for l in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(l) for l in (interrupted / "train_log.jsonl").read_text().splitlines()]
    final_loss = lambda log: [r["loss"] for r in log if r.get("step") == 6 and "loss" in r]
    assert final_loss(log_a) and final_loss(log_a) == pytest.approx(final_loss(log_b), rel=1e-5)


@pytest.mark.parametrize("recipe", ["stage1", "stage3", "medical", "remote-sensing"])
def test_each_recipe_runs_on_real_format_fixtures(tmp_path, fixtures, recipe):
    extra = []
    if recipe in ("stage1", "stage3"):
        data = write_llava_data(fixtures, tmp_path / "data", n=4)
        if recipe == "stage3":
            text_only = tmp_path / "data" / "text.json"
            text_only.write_text(json.dumps([{"id": "t0", "conversations": [
                {"from": "human", "value": "What is CT?"}, {"from": "gpt", "value": "computed tomography"}]}]))
            extra = ["--replay", f"single_image={data}", "--replay", f"text={text_only}"]
    elif recipe == "medical":
        data = fixtures / "medical" / "pubmedvision" / "PubMedVision_Alignment_VQA.json"
    else:
        data = tmp_path / "fit_rs.json"
        shutil.copy(fixtures / "remote_sensing" / "fit_rs_instructions.json", data)
        for row in json.loads(data.read_text()):
            Image.open(fixtures / "pathology" / "ihc_colon.png").resize((128, 128)).save(tmp_path / row["image"])
    result = run_cli("finetune", "--recipe", recipe, "--data", str(data), "--out", str(tmp_path / "run"),
                     "--max-steps", "2", "--max-length", "4096", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["recipe"] == recipe
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["name"] == recipe
    assert (tmp_path / "run" / "training_curve.png").is_file()
    load_model(tmp_path / "run" / "final")


@pytest.mark.slow
def test_two_process_cpu_deepspeed_zero3_run_completes_with_an_idle_expert(tmp_path, fixtures):
    """ZeRO-3 over gloo on 2 CPU processes. Expert 3's router row is pushed far down so that it
    receives no tokens: with per-expert modules (the reference) that hangs ZeRO-3; transformers'
    fused expert tensors are gathered whole on every rank, so the run must complete."""
    model, tokenizer = build_preset("tiny-random")
    with torch.no_grad():
        for layer in model.language_model.model.layers:
            router = getattr(layer.feed_forward, "router", None)
            if router is not None:
                router.weight[3] = -50.0 * router.weight[3].sign()
    from longllava.core.checkpoint import save_model

    save_model(model, tokenizer, tmp_path / "start")
    data = write_llava_data(fixtures, tmp_path / "data", n=4)
    with socket.socket() as probe:  # a free port: a fixed one fails while another run holds it
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    # DeepSpeed builds its CPU shm op per run: a shared extensions folder kept the lock file of a
    # killed build, and every later run waited on it forever.
    env = {"DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, "-m", "longllava",
         "finetune", "--recipe", "stage2", "--deepspeed", "zero3", "--model", str(tmp_path / "start"), "--data", str(data),
         "--out", str(tmp_path / "run"), "--max-steps", "2", "--max-length", "1024", "--lr", "1e-3"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][:1] == [1]
    trained, _ = load_model(tmp_path / "run" / "final")
    before = model.state_dict()
    moved = [k for k, v in trained.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("language_model.") for k in moved)
    assert not any(k.startswith("vision_tower.") for k in moved)


def test_synthetic_task_set_answers_match_the_written_files_and_do_not_depend_on_workers(tmp_path):
    """Every answer is checked against the files the generator wrote, read back independently:
    lesions = connected regions of calcified HU in the NIfTI / DICOM, ships = tiles holding near-white
    pixels, the needle = the image holding the named colour. Two threads write the same bytes as one."""
    import numpy as np
    from scipy import ndimage

    from longllava.domains.medical.ct import load_ct
    from longllava.eval.needles import NEEDLE_COLOURS
    from longllava.finetune.synthetic import (
        LESION_HU,
        SHIP_SIZE,
        SyntheticSpec,
        default_haystack,
        generate_task_set,
        single_image_records,
    )

    spec = SyntheticSpec(volumes=8, scenes=6, needles=4, seed=5)
    haystack = default_haystack()
    serial = generate_task_set(tmp_path / "serial", spec, haystack, False, workers=1)
    threaded = generate_task_set(tmp_path / "threaded", spec, haystack, False, workers=2)
    assert [(r.id, r.conversations) for r in serial] == [(r.id, r.conversations) for r in threaded]
    for a, b in zip(serial, threaded):
        assert [Path(p).read_bytes() for p in a.images] == [Path(p).read_bytes() for p in b.images]

    answers = {r.id: r.answer for r in serial}
    counts = {"ct": set(), "scene": set()}
    formats, lesion_sizes = set(), set()
    for r in serial:
        if r.meta["type"] == "ct_count":
            hu = load_ct(r.meta["file"]).hu
            in_plane = np.zeros((3, 3, 3), dtype=bool)
            in_plane[1] = ndimage.generate_binary_structure(2, 1)  # a lesion lies in one slice
            labels, lesions = ndimage.label(hu >= LESION_HU - 100, structure=in_plane)
            lesion_sizes.update(np.bincount(labels.ravel())[1:].tolist())
            assert r.answer == str(lesions) and answers[r.id.replace("ct_count", "ct_presence")] == ("yes" if lesions else "no")
            assert len(r.meta["lesion_frames"]) == lesions and len(r.images) == spec.ct_slices
            counts["ct"].add(lesions)
            formats.add("dicom" if Path(r.meta["file"]).is_dir() else "nifti")
        elif r.meta["type"] == "scene_count":
            tiles = [np.asarray(Image.open(p).convert("RGB")) for p in r.images[1:]]  # images[0]: global view
            ship_pixels = [int((t.min(axis=-1) >= 240).sum()) for t in tiles]
            assert set(ship_pixels) <= {0, SHIP_SIZE[0] * SHIP_SIZE[1]}  # one ship per tile, all of one size
            with_ship = [k for k, pixels in enumerate(ship_pixels) if pixels]
            cols = r.meta["grid"][1]
            assert with_ship == sorted(row * cols + col for row, col in r.meta["ship_tiles"])
            assert r.answer == str(len(with_ship))
            counts["scene"].add(len(with_ship))
        elif r.meta["type"] == "needle":
            colour = np.array(NEEDLE_COLOURS[r.answer])
            holding = [k for k, p in enumerate(r.images) if (np.asarray(Image.open(p).convert("RGB")) == colour).all(-1).sum() > 100]
            assert holding == [r.meta["needle_index"]]
    assert 0 in counts["ct"] and len(counts["ct"]) >= 2 and 0 in counts["scene"] and len(counts["scene"]) >= 2
    assert formats == {"dicom", "nifti"}  # volumes are written both ways and read back by load_ct
    assert len(lesion_sizes) == 1  # every lesion has the same area, so counting is well posed

    singles = single_image_records(serial)
    lesion_slices = sum(len(r.meta["lesion_frames"]) for r in serial if r.meta["type"] == "ct_presence")
    assert sum(r.answer == "yes" for r in singles if r.meta["type"] == "slice_lesion") == lesion_slices
    assert sum(r.meta["type"] == "mark_colour" for r in singles) == spec.needles
    with pytest.raises(ValueError, match="workers"):
        generate_task_set(tmp_path / "none", spec, haystack, False, workers=0)


def test_synthetic_objects_sharing_a_slice_or_tile_are_separate_and_of_one_size():
    """Several lesions in one slice, several ships in one tile: each stays a separate object of the
    fixed size (a count read off the image is the count asked about); no room left is an error."""
    import numpy as np
    from scipy import ndimage

    from longllava.finetune.synthetic import LESION_HU, SHIP_SIZE, make_ct_volume, make_scene

    for seed in range(5):
        volume, lesions = make_ct_volume(np.random.default_rng(seed), 3, 1, 64)
        labels, found = ndimage.label(volume[0] >= LESION_HU)
        assert found == len(lesions) == 3 and len(set(np.bincount(labels.ravel())[1:])) == 1
        raster, ships = make_scene(np.random.default_rng(seed), 3, 336)
        labels, found = ndimage.label(raster.min(axis=0) >= 240)
        assert found == len(ships) == 3 and set(np.bincount(labels.ravel())[1:]) == {SHIP_SIZE[0] * SHIP_SIZE[1]}
    with pytest.raises(ValueError, match="no room"):
        make_ct_volume(np.random.default_rng(0), 40, 1, 64)


def test_balanced_held_out_counts_defeat_a_fixed_number_and_are_tabulated(tmp_path):
    """Held-out sets draw no counts: they cycle 0, 0, 0, 1, 2, 3, so presence stays balanced and a
    model that answers "0" when empty and one fixed number otherwise scores exactly 2/3; the report's
    table shows each true count against the answers given."""
    import numpy as np

    from longllava.eval.predictions import Prediction
    from longllava.finetune.default_model import counting_answers, score_synthetic
    from longllava.finetune.synthetic import SyntheticSpec, generate_task_set, object_count

    rng = np.random.default_rng(0)
    assert [object_count(rng, 3, i) for i in range(12)] == [0, 0, 0, 1, 2, 3] * 2
    assert [object_count(rng, 2, i) for i in range(4)] == [0, 0, 1, 2]
    drawn = [object_count(rng, 3) for _ in range(3000)]
    assert abs(drawn.count(0) / 3000 - 0.5) < 0.03 and set(drawn) == {0, 1, 2, 3}

    spec = SyntheticSpec(volumes=6, scenes=6, needles=0, balanced_counts=True, seed=5)
    records = [r for r in generate_task_set(tmp_path / "ho", spec, [], False, workers=2) if r.meta["group"] in ("counting", "presence")]
    for kind in ("ct_count", "scene_count"):
        assert sorted(r.answer for r in records if r.meta["type"] == kind) == ["0", "0", "0", "1", "2", "3"]
    fixed = [Prediction(r.id, r.answer if r.answer in ("0", "yes", "no") else " 3", "test") for r in records]
    metrics = score_synthetic(records, fixed)
    assert metrics["group/counting"] == pytest.approx(2 / 3) and metrics["group/presence"] == 1.0
    assert counting_answers(records, fixed) == {kind: {"0": {"0": 3}, "1": {"3": 1}, "2": {"3": 1}, "3": {"3": 1}}
                                                for kind in ("ct_count", "scene_count")}


@pytest.mark.slow
def test_synthetic_default_reduced_build_learns(tmp_path):
    """The default model's two-stage recipe at a fraction of its size (16 volumes, 16 scenes, 8 needle
    sets). It asserts learning, not the full build's targets (those are in the build's report and the
    README): both stages' losses fall, and held-out presence and counting answers beat guessing
    uniformly among the answers (1/2, 1/4) and the untrained model. At this size the model learns the
    answer formats and their distribution; reading the images takes the full task set.

    The build succeeds, so it leaves only its final model (with report.json) and its logs: the task
    data, the initial weights, both stages' checkpoints and stage 1's model are removed."""
    from longllava.core.pipeline import LongLlava
    from longllava.finetune.default_model import build_default_model, evaluate_synthetic, initial_model
    from longllava.finetune.synthetic import SyntheticSpec, default_haystack, generate_task_set

    spec = SyntheticSpec(volumes=16, scenes=16, needles=8, multi_turn=True, seed=3)
    heldout = SyntheticSpec(volumes=8, scenes=8, needles=4, seed=77)
    out = tmp_path / "default"
    report = build_default_model(out, spec=spec, heldout=heldout, epochs=4, single_image_epochs=6, progress=False)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == ["final", *(f"final/{n}" for n in ("config.json", "model.safetensors", "report.json", "tokenizer.json",
                                                        "tokenizer_config.json")),
                    "recipe.json", "single-image", *(f"single-image/{n}" for n in ("recipe.json", "summary.json",
                                                                                   "train_log.jsonl", "training_curve.png")),
                    "summary.json", "train_log.jsonl", "training_curve.png"]
    assert json.loads((out / "final" / "report.json").read_text()) == report
    for log_path in (out / "single-image" / "train_log.jsonl", out / "train_log.jsonl"):
        losses = [json.loads(l)["loss"] for l in log_path.read_text().splitlines() if '"loss"' in l]
        assert losses[-1] < 0.6 * losses[0], log_path
    assert set(report["targets"]) == {"presence", "needle"}
    assert set(report["majority_answer_share"]) == {"presence", "needle", "counting", "localisation"}
    answered = report["counting_answers"]  # every held-out counting question, by true count
    assert sum(n for rows in answered.values() for row in rows.values() for n in row.values()) == heldout.volumes + heldout.scenes
    assert report["heldout"]["group/presence"] > 0.5 and report["heldout"]["group/counting"] > 0.25

    records = [r for r in generate_task_set(tmp_path / "again", heldout, default_haystack(), False)
               if r.meta["group"] in ("presence", "counting")]
    untrained = evaluate_synthetic(LongLlava(*load_model(initial_model(tmp_path))), records)  # its (seeded) initial weights
    assert untrained["group/presence"] < report["heldout"]["group/presence"]
    assert untrained["group/counting"] < report["heldout"]["group/counting"]
