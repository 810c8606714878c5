"""Tokenizers: the released models' Jamba tokenizer (from a checkpoint dir) and the project's own
tiny byte-level BPE tokenizer for the tiny presets (shipped in ``assets/tiny_tokenizer``; no hub).

The released tokenizer is rebuilt from its ``tokenizer.model`` (:func:`sentencepiece_tokenizer`) so
that ids equal sentencepiece's: transformers' ``LlamaTokenizer`` (what the released
``tokenizer_config.json`` names) prepends ``▁`` to every call, but Jamba's model has no dummy prefix,
and the processor tokenizes the text between images separately, so every ``</img>`` after an image
and every training answer would gain a wrong leading ``▁``.

Both follow the released vocabulary's conventions: ``<|pad|>`` = 0, ``<|startoftext|>`` = 1,
``<|endoftext|>`` = 2, ``<|unk|>`` = 3 are the only special tokens; the protocol markers
(``<img>``, ``<vid>``, ``<t>``, ``<|User|>``, ...) are plain text split into ordinary pieces.

Rebuild the shipped tiny tokenizer with ``python -m longllava.core.tokenizer``.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from longllava.errors import InputError

SPECIAL_TOKENS = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|unk|>"]
TINY_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tiny_tokenizer"
TINY_VOCAB_SIZE = 1024

# Vocabulary the tiny models are trained and evaluated on: the protocol, the synthetic tasks and
# the domains' benchmark wording. Byte-level BPE encodes any other text too, just in more pieces.
_CORPUS_WORDS = """
<img> </img> <vid> </vid> <t> <|User|> <|Assistant|> <image>
yes no none zero one two three four five six seven eight nine ten
Is there a lesion in this CT? Answer yes or no. How many lesions are there? Which slice shows the lesion?
Which tile contains the object? How many objects are in the scene? Which image contains the mark?
Answer with a number. Answer with the slice index. Answer with the tile row and column. row column
slice tile image scene volume frame needle haystack mark marker red square circle bright spot
lesion nodule mass tumor cyst opacity effusion calcification emphysema atelectasis consolidation
the a an of in on at to and or with without from is are was were this that these those what which where
how many much present absent visible normal abnormal left right upper lower anterior posterior
CT MRI X-ray ultrasound pathology histology slide tissue cell gland stain organ lung liver kidney
heart brain chest abdomen pelvis bone spine mediastinum airway vessel artery vein
Medical material Arterial wall calcification Cardiomegaly Pericardial effusion Coronary artery wall
calcification Hiatal hernia Lymphadenopathy Emphysema Atelectasis Lung nodule Lung opacity Pulmonary
fibrotic sequela Pleural effusion Mosaic attenuation pattern Peribronchial thickening Consolidation
Bronchiectasis Interlobular septal thickening
plane ship storage tank baseball diamond tennis court basketball court ground track field harbor
bridge large vehicle small vehicle helicopter roundabout soccer ball field swimming pool building
road river forest farmland water urban residential airport satellite aerial remote sensing
A. B. C. D. E. Answer with the option's letter from the given choices directly.
Please choose from the following two options: [yes, no]
"""


def _corpus() -> list[str]:
    lines = [line.strip() for line in _CORPUS_WORDS.strip().splitlines() if line.strip()]
    numbers = [" ".join(str(n) for n in range(start, start + 20)) for start in range(0, 1000, 20)]
    return lines * 4 + numbers


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return _with_special_tokens(tokenizer)


def _with_special_tokens(tokenizer) -> PreTrainedTokenizerFast:
    """A ``tokenizers.Tokenizer`` as a transformers tokenizer with the released special tokens,
    padding on the left (generation)."""
    pad, bos, eos, unk = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=pad, bos_token=bos, eos_token=eos, unk_token=unk,
        padding_side="left", clean_up_tokenization_spaces=False,
    )


def load_tiny_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


SENTENCEPIECE_MODEL = "tokenizer.model"
# A run of spaces goes with the word that follows it, as sentencepiece's word split does when
# whitespace-only pieces are allowed (``allow_whitespace_only_pieces``); trailing spaces form a word.
_SENTENCEPIECE_WORDS = "▁*[^▁]+|▁+"


def sentencepiece_tokenizer(model_file: str | Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer whose ids equal ``sentencepiece``'s on ``model_file`` (a BPE model without a
    dummy prefix, as Jamba's), with the four special tokens matched in text.

    The merges are ranked by piece score, not id: the whitespace-only pieces (``▁▁``, ...) have low
    ids but the lowest score, and ranking them by id would merge runs of spaces before words."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.tokenization_utils_base import generate_merges

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    if proto.trainer_spec.model_type != proto.trainer_spec.BPE or proto.normalizer_spec.add_dummy_prefix:
        raise InputError(
            f"{model_file}: expected a sentencepiece BPE model without a dummy prefix (Jamba's); this one "
            f"has model_type={proto.trainer_spec.model_type}, add_dummy_prefix={proto.normalizer_spec.add_dummy_prefix}"
        )
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    merges = generate_merges(vocab, {piece.piece: piece.score for piece in proto.pieces})
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(_SENTENCEPIECE_WORDS), behavior="isolated")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise InputError(f"{model_file}: the special tokens {missing} are not in its vocabulary")
    return _with_special_tokens(tokenizer)


def _declares_sentencepiece(path: Path) -> bool:
    """The released checkpoints: a ``tokenizer.model`` and a config naming transformers' Llama class."""
    config = path / "tokenizer_config.json"
    if not (path / SENTENCEPIECE_MODEL).is_file():
        return False
    if not config.is_file():
        return True
    return json.loads(config.read_text()).get("tokenizer_class", "").startswith("Llama")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint directory: the released Jamba sentencepiece tokenizer (rebuilt
    exactly from ``tokenizer.model``), or the fast tokenizer our own checkpoints save. Remote code is
    never run (the released config's ``auto_map`` would otherwise prompt for it)."""
    path = Path(path)
    if _declares_sentencepiece(path):
        return sentencepiece_tokenizer(path / SENTENCEPIECE_MODEL)
    if not (path / "tokenizer.json").is_file():
        raise InputError(
            f"{path} has no tokenizer: expected tokenizer.json (this project's checkpoints) or "
            f"{SENTENCEPIECE_MODEL} (the released LongLLaVA checkpoints)"
        )
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


if __name__ == "__main__":
    build_tiny_tokenizer().save_pretrained(TINY_TOKENIZER_DIR)
    print(f"wrote {TINY_TOKENIZER_DIR}")
