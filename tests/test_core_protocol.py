import pytest
import torch
from PIL import Image

from longllava.core import protocol
from longllava.core.processor import (
    CLIP_MEAN,
    LongLlavaProcessor,
    image_to_tensor,
    partition_highres,
)
from longllava.core.records import Record
from longllava.core.tokenizer import SPECIAL_TOKENS, TINY_TOKENIZER_DIR, build_tiny_tokenizer, load_tiny_tokenizer
from longllava.errors import InputError


def test_single_and_multi_image_messages():
    a, b = Image.new("RGB", (4, 4)), Image.new("RGB", (5, 5))
    msg = protocol.user_message([protocol.ImageInput(a, {"path": "a.png"}), protocol.ImageInput(b)], "Same organ?")
    assert msg.text == "<img><image></img>\n<img><image></img>\nSame organ?"
    assert msg.images == [a, b]
    assert msg.trace == [{"kind": "image", "path": "a.png"}, {"kind": "image"}]


def test_stack_message_for_ct_slices_keeps_slice_trace():
    frames = [Image.new("RGB", (2, 2)) for _ in range(3)]
    traces = [{"slice_index": 10, "z_mm": -5.0}, {"slice_index": 20, "z_mm": 25.0}, {"slice_index": 30, "z_mm": 55.0}]
    msg = protocol.user_message([protocol.StackInput(frames, traces)], "Any nodule?")
    assert msg.text == (
        "<vid><img><image></img><t><img><image></img><t><img><image></img></vid>\nAny nodule?"
    )
    assert [t["slice_index"] for t in msg.trace] == [10, 20, 30]
    assert msg.trace[1] == {"kind": "frame", "frame": 1, "slice_index": 20, "z_mm": 25.0}


def test_highres_message_global_view_then_rows_of_tiles():
    tiles = [Image.new("RGB", (2, 2)) for _ in range(6)]
    g = Image.new("RGB", (3, 2))
    msg = protocol.user_message([protocol.HighResInput(g, tiles, rows=2, cols=3)], "Where is the ship?")
    row = "<img><image></img>" * 3
    assert msg.text == f"<img><image>\n{row}\n{row}</img>\nWhere is the ship?"
    assert msg.images[0] is g and msg.images[1:] == tiles
    assert msg.trace[0] == {"kind": "global"}
    assert [(t["row"], t["col"]) for t in msg.trace[1:]] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    with pytest.raises(ValueError, match="2x3 grid needs 6 tiles"):
        protocol.HighResInput(g, tiles[:5], rows=2, cols=3)


def test_chat_template_and_training_segments():
    assert protocol.chat_prompt("Hi") == "<|startoftext|><|User|>\nHi\n<|startoftext|><|Assistant|>\n"
    assert protocol.chat_prompt("Next?", [("Q1", "A1")]) == (
        "<|startoftext|><|User|>\nQ1\n<|startoftext|><|Assistant|>\nA1\n"
        "<|startoftext|><|User|>\nNext?\n<|startoftext|><|Assistant|>\n"
    )
    segments = protocol.training_segments([("Q1", "A1"), ("Q2", "A2")])
    assert [text for text, supervised in segments if supervised] == ["A1", "A2<|endoftext|>"]
    assert "".join(text for text, _ in segments) == (
        "<|startoftext|><|User|>\nQ1\n<|startoftext|><|Assistant|>\nA1\n"
        "<|startoftext|><|User|>\nQ2\n<|startoftext|><|Assistant|>\nA2<|endoftext|>"
    )


def test_record_message_wraps_placeholders_and_checks_counts():
    record = Record("r1", ["x.png"], [{"from": "human", "value": "<image>\nWhat modality?"}, {"from": "gpt", "value": "CT"}])
    msg = protocol.record_message(record)
    assert msg.text == "<img><image></img>\nWhat modality?" and msg.images == ["x.png"]
    assert protocol.record_turns(record) == [("<img><image></img>\nWhat modality?", "CT")]
    bad = Record("r2", ["x.png", "y.png"], record.conversations, source="data.json#2")
    with pytest.raises(ValueError, match="record r2 \\(data.json#2\\): 1 <image> placeholders but 2 images"):
        protocol.record_message(bad)


def test_tiny_tokenizer_conventions_and_shipped_copy_is_reproducible():
    tokenizer = load_tiny_tokenizer()
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == SPECIAL_TOKENS
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    # markers are plain text: several ordinary pieces, never one special token
    for marker in ("<img>", "</img>", "<vid>", "<t>", "<|User|>", "<|Assistant|>"):
        ids = tokenizer(marker, add_special_tokens=False).input_ids
        assert all(i > 3 for i in ids) and tokenizer.decode(ids) == marker
    prompt = protocol.chat_prompt("<img>x</img>\nIs there a lesion?")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert ids[0] == 1 and tokenizer.decode(ids) == prompt
    rebuilt = build_tiny_tokenizer()
    assert rebuilt.get_vocab() == tokenizer.get_vocab()
    assert (TINY_TOKENIZER_DIR / "tokenizer.json").is_file()


def test_pad_to_square_uses_clip_mean_and_normalises():
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    tensor = image_to_tensor(red, size=28)
    assert tensor.shape == (3, 28, 28)
    # top rows are padding: the CLIP mean colour normalises to ~0
    assert tensor[:, 0, :].abs().max() < 0.01
    # the middle row is red: channel 0 at its normalised max
    torch.testing.assert_close(tensor[0, 14, 14], torch.tensor((1.0 - CLIP_MEAN[0]) / 0.26862954), atol=1e-4, rtol=0)


def test_highres_partition_pads_white_centred_and_tiles_raster_order():
    image = Image.new("RGB", (700, 300), (0, 0, 0))
    image.putpixel((0, 0), (9, 9, 9))
    part = partition_highres(image, 336)
    assert (part.rows, part.cols) == (1, 3) and len(part.tiles) == 3
    assert all(t.size == (336, 336) for t in part.tiles)
    # width 700 -> 1008: 154 px white on the left; height 300 -> 336: 18 px on top
    first = part.tiles[0]
    assert first.getpixel((0, 0)) == (255, 255, 255)
    assert first.getpixel((154, 18)) == (9, 9, 9)
    assert first.getpixel((155, 18)) == (0, 0, 0)
    assert partition_highres(image, 168).tiles[0].size == (168, 168)
    assert (partition_highres(image, 168).rows, partition_highres(image, 168).cols) == (2, 5)


def test_processor_expands_placeholders_and_validates(tiny):
    model, tokenizer = tiny
    processor = LongLlavaProcessor.for_model(model, tokenizer)
    img = Image.new("RGB", (30, 40))
    inputs = processor(["<img><image></img>\nA?", "B?"], [[img], []])
    ids = inputs["input_ids"]
    assert (ids[0] == model.config.image_token_id).sum() == 144
    assert (ids[1] == model.config.image_token_id).sum() == 0
    assert inputs["pixel_values"].shape == (1, 3, 336, 336)
    # left padding for generation: the shorter row starts with pad and mask 0
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][1, -1] == 1
    with pytest.raises(InputError, match="prompt 0: 1 <image> placeholders but 2 images"):
        processor(["<image>"], [[img, img]])
    with pytest.raises(InputError, match="prompt 0: 0 <image> placeholders but 1 images"):
        processor(["no placeholder"], [[img]])
    processor.max_length = 150
    with pytest.raises(InputError, match="exceed the model's max_sequence_length=150"):
        processor(["<image> and then some more words"], [[img]])


def test_training_labels_cover_only_answers_and_eos(tiny):
    model, tokenizer = tiny
    processor = LongLlavaProcessor.for_model(model, tokenizer)
    segments = protocol.training_segments([("<img><image></img>\nWhat?", "a lesion")])
    ids, labels = processor.encode_training(segments, num_images=1)
    supervised = [t for t, l in zip(ids, labels) if l != -100]
    assert tokenizer.decode(supervised) == "a lesion<|endoftext|>"
    assert supervised[-1] == tokenizer.eos_token_id
    assert all(l == -100 for t, l in zip(ids, labels) if t == model.config.image_token_id)


def test_record_layouts_stack_and_highres():
    frames = ["s0.png", "s1.png", "s2.png"]
    stack = Record("ct1", frames, [{"from": "human", "value": "<image>\nLesion?"}, {"from": "gpt", "value": "yes"}],
                   meta={"layout": "stack"})
    assert protocol.record_message(stack).text == (
        "<vid><img><image></img><t><img><image></img><t><img><image></img></vid>\nLesion?"
    )
    grid = Record("sc1", ["g.png"] + [f"t{i}.png" for i in range(4)],
                  [{"from": "human", "value": "<image>\nShips?"}, {"from": "gpt", "value": "2"}],
                  meta={"layout": "highres", "grid": [2, 2]})
    row = "<img><image></img>" * 2
    assert protocol.record_turns(grid) == [(f"<img><image>\n{row}\n{row}</img>\nShips?", "2")]
    bad = Record("sc2", ["g.png", "t.png"], grid.conversations, meta={"layout": "highres", "grid": [2, 2]})
    with pytest.raises(ValueError, match="2x2 grid needs 5 images"):
        protocol.record_turns(bad)


def test_image_trace_is_the_one_schema_the_protocol_writes():
    from longllava.core import protocol
    from longllava.traces import ImageTrace

    slices = [ImageTrace(slice_index=7, z_mm=-12.5), ImageTrace(slice_index=9, z_mm=-6.5)]
    message = protocol.user_message([protocol.StackInput(["a", "b"], slices)], "Which slice?")
    assert message.trace == [
        {"kind": "frame", "frame": 0, "slice_index": 7, "z_mm": -12.5},
        {"kind": "frame", "frame": 1, "slice_index": 9, "z_mm": -6.5},
    ]
    tile = ImageTrace(window=(0, 336, 336, 336), bounds=(1.0, 2.0, 3.0, 4.0), crs="EPSG:32618", date="2021-05-01")
    grid = protocol.user_message([protocol.HighResInput("g", ["t"], 1, 1, [tile])], "q").trace
    assert grid[1] == {"kind": "tile", "row": 0, "col": 0, "window": [0, 336, 336, 336],
                       "bounds": [1.0, 2.0, 3.0, 4.0], "crs": "EPSG:32618", "date": "2021-05-01"}
    assert protocol.user_message([protocol.ImageInput("i", {"path": "x.png"})], "q").trace == [{"kind": "image", "path": "x.png"}]
