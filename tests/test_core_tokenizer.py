"""The released Jamba tokenizer: ids equal sentencepiece's on the real ``tokenizer.model``."""

import json
import random
import re
import shutil

import pytest
import sentencepiece
import torch

from longllava.core import protocol
from longllava.core.processor import LongLlavaProcessor
from longllava.core.tokenizer import SPECIAL_TOKENS, load_tokenizer, sentencepiece_tokenizer
from longllava.errors import InputError

IMAGE_TOKEN_ID = 65536
IMAGE_SEQ_LENGTH = 3


@pytest.fixture(scope="module")
def reference(fixtures):
    return fixtures / "reference"


@pytest.fixture(scope="module")
def spm(reference):
    return sentencepiece.SentencePieceProcessor(model_file=str(reference / "tokenizer.model"))


@pytest.fixture(scope="module")
def tokenizer(reference):
    return load_tokenizer(reference)


def expected_ids(spm, text: str) -> list[int]:
    """What the reference gets: the four special tokens matched in text, sentencepiece elsewhere."""
    pattern = "(" + "|".join(re.escape(token) for token in SPECIAL_TOKENS) + ")"
    ids = []
    for part in re.split(pattern, text):
        if part in SPECIAL_TOKENS:
            ids.append(spm.piece_to_id(part))
        elif part:
            ids.extend(spm.encode(part))
    return ids


STACK = protocol.render_stack(3)
HIGHRES = protocol.render_highres(2, 2)
PROTOCOL_STRINGS = [
    "</img>", "<img>", "<vid>", "</vid>", "<t>", "<|User|>", "<|Assistant|>", "<image>", protocol.IMAGE_BLOCK,
    STACK, HIGHRES, "</img><t><img>", "</img></vid>\nIs there a lesion?", "</img>\n</img>",
    "Yes", "No", "yes", " Yes", "\n", "\n\n", "Yes\n", "\nYes", "3", " 3", "12", "1000", "3.5 cm", "row 2, column 3",
    "  two leading spaces", "trailing spaces   ", "a  b   c    d", "\t tab", "    def f():\n        return 1",
    "héllo wörld", "日本語のテキスト", "Ωмега 🙂 emoji", "naïve café — “quotes”", "x" * 50, "",
    protocol.user_turn("Is there a lesion?"), protocol.assistant_prefix(),
    protocol.chat_prompt("<img><image></img>\nHow many?", [("<vid><img><image></img></vid>\nFirst?", "Yes")]),
    protocol.EOS, "Yes" + protocol.EOS, "<|startoftext|><|startoftext|>", "<|pad|><|unk|>", "<|mask_0|>",
]


def training_texts() -> list[str]:
    turns = [("<img><image></img>\nIs there a lesion? Answer yes or no.", "Yes"),
             ("How many lesions are there?", "2"), ("Which slice?", " slice 14\n")]
    return [text for text, _ in protocol.training_segments(turns)]


def random_texts(count: int) -> list[str]:
    rng = random.Random(0)
    alphabet = list("abcXYZ0189 .,:;!?<>/|\n\t-_()[]'\"éü日本🙂Ωж") + [
        "<img>", "</img>", "<vid>", "</vid>", "<t>", "<|User|>", "<|Assistant|>", "<|startoftext|>",
        "<|endoftext|>", "  ", "   ", "\n\n", "Yes", "No", " lesion", "nodule ",
    ]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(1500)]


@pytest.mark.parametrize("text", PROTOCOL_STRINGS + training_texts())
def test_ids_equal_sentencepiece(tokenizer, spm, text):
    assert tokenizer(text, add_special_tokens=False).input_ids == expected_ids(spm, text)


def test_ids_equal_sentencepiece_on_random_texts(tokenizer, spm):
    texts = random_texts(1500)
    mismatched = [t for t in texts if tokenizer(t, add_special_tokens=False).input_ids != expected_ids(spm, t)]
    assert mismatched == []


def test_the_issue_examples_and_decoding(tokenizer, spm):
    assert tokenizer.convert_ids_to_tokens(tokenizer("</img>", add_special_tokens=False).input_ids) == ["</", "img", ">"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("Yes", add_special_tokens=False).input_ids) == ["Yes"]
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [0, 1, 2, 3]
    assert len(tokenizer) == 65536
    for text in ["  spaced  out ", "3.5 cm\nnodule", "日本 🙂", "Yes"]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids) == spm.decode(ids) == text


def test_no_remote_code_prompt_with_a_multimodal_config(tmp_path, reference, spm, monkeypatch):
    """The released multimodal config (model_type llava_jamba, auto_map to remote code) must
    neither change the ids nor ask to run code."""
    shutil.copytree(reference, tmp_path / "ref")
    config = json.loads((reference / "config.json").read_text()) | {"model_type": "llava_jamba"}
    (tmp_path / "ref" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("builtins.input", lambda *_: pytest.fail("asked for input"))
    loaded = load_tokenizer(tmp_path / "ref")
    assert loaded("</img>", add_special_tokens=False).input_ids == spm.encode("</img>")


def test_saved_tokenizer_reloads_to_the_same_ids(tmp_path, tokenizer, spm):
    tokenizer.save_pretrained(tmp_path)
    reloaded = load_tokenizer(tmp_path)
    for text in PROTOCOL_STRINGS + random_texts(200):
        assert reloaded(text, add_special_tokens=False).input_ids == expected_ids(spm, text)
    assert reloaded.padding_side == "left" and reloaded.eos_token_id == 2


def test_processor_tokenizes_around_images_like_sentencepiece(tokenizer, spm):
    """The processor tokenizes the text between images separately: no piece may gain a prefix."""
    processor = LongLlavaProcessor(tokenizer, IMAGE_TOKEN_ID, IMAGE_SEQ_LENGTH, max_length=10**6)
    message = protocol.user_message(
        [protocol.ImageInput("a"), protocol.StackInput(["b", "c"]), protocol.HighResInput("g", list("wxyz"), 2, 2)],
        "How many lesions?",
    )
    prompt = protocol.chat_prompt(message.text, [("<img><image></img>\nFirst?", " Yes")])
    ids = processor.tokenize(prompt)
    expected = []
    for i, chunk in enumerate(prompt.split("<image>")):
        if i:
            expected.extend([IMAGE_TOKEN_ID] * IMAGE_SEQ_LENGTH)
        expected.extend(expected_ids(spm, chunk))
    assert ids == expected
    assert ids.count(IMAGE_TOKEN_ID) == 9 * IMAGE_SEQ_LENGTH
    after_image = ids[ids.index(IMAGE_TOKEN_ID) + IMAGE_SEQ_LENGTH:][:3]
    assert tokenizer.convert_ids_to_tokens(after_image) == ["</", "img", ">"]

    segments = protocol.training_segments([("<img><image></img>\nIs there a lesion?", "Yes")])
    input_ids, labels = processor.encode_training(segments, num_images=1)
    supervised = [label for label in labels if label != -100]
    assert supervised == spm.encode("Yes") + [2]
    assert torch.tensor(input_ids).ne(IMAGE_TOKEN_ID).sum() == len(input_ids) - IMAGE_SEQ_LENGTH


def test_a_directory_without_a_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="has no tokenizer"):
        load_tokenizer(tmp_path)


def test_a_model_with_a_dummy_prefix_is_refused(tmp_path, reference):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((reference / "tokenizer.model").read_bytes())
    proto.normalizer_spec.add_dummy_prefix = True
    (tmp_path / "tokenizer.model").write_bytes(proto.SerializeToString())
    with pytest.raises(InputError, match="without a dummy prefix"):
        sentencepiece_tokenizer(tmp_path / "tokenizer.model")
