"""The static-cache decode path (core/decode.py) on CPU: same tokens as the dynamic-cache path.

The CUDA graph capture itself needs a GPU; on CPU the same static step runs eagerly."""

import pytest
import torch

from longllava.core import decode
from longllava.core.configuration import tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LongLlavaForConditionalGeneration(tiny_config(256)).eval()


def left_padded_batch():
    g = torch.Generator().manual_seed(1)
    long, short = torch.randint(3, 256, (11,), generator=g), torch.randint(3, 256, (6,), generator=g)
    ids = torch.stack([long, torch.cat([torch.zeros(5, dtype=torch.long), short])])
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    return ids, mask


def test_static_decode_gives_the_dynamic_cache_tokens_for_a_left_padded_batch(model, monkeypatch):
    ids, mask = left_padded_batch()
    dynamic = model.greedy_generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=-1, static_cache=False)
    built = []
    monkeypatch.setattr(decode.StaticDecoder, "__init__", _recording(decode.StaticDecoder.__init__, built))
    static = model.greedy_generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=-1, static_cache=True)
    assert dynamic.shape == (2, 12) and len(set(dynamic[0].tolist())) > 3  # a real sequence, not one token
    torch.testing.assert_close(static, dynamic, rtol=0, atol=0)
    (decoder,) = built
    # the loop feeds every generated token back but the last (nothing follows it)
    assert decoder.path == "static-eager" and decoder.steps == 11
    attention = [layer for layer in decoder.cache.layers if hasattr(layer, "keys")]
    assert attention and all(layer.keys.shape[2] == 11 + 12 for layer in attention)  # preallocated
    # the padded row decodes as it would alone
    alone = model.greedy_generate(ids[1:, 5:], max_new_tokens=12, eos_token_id=-1, static_cache=True)
    torch.testing.assert_close(static[1:], alone, rtol=0, atol=0)


def test_static_decode_stops_finished_rows_like_the_dynamic_path(model):
    ids, mask = left_padded_batch()
    free = model.greedy_generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=-1, static_cache=False)
    eos = int(free[0, 2])  # row 0 finishes at its third token
    dynamic = model.greedy_generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos, static_cache=False)
    static = model.greedy_generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos, static_cache=True)
    assert (dynamic[0, 3:] == 0).all()
    torch.testing.assert_close(static, dynamic, rtol=0, atol=0)


def test_static_decoder_refuses_steps_beyond_its_buffers(model):
    ids, mask = left_padded_batch()
    decoder = decode.StaticDecoder(model, batch=2, max_len=ids.shape[1] + 2, device="cpu")
    logits = decoder.prefill(ids, attention_mask=mask)
    for _ in range(2):
        logits = decoder.step(logits.argmax(-1))
    with pytest.raises(ValueError, match="holds 13 tokens"):
        decoder.step(logits.argmax(-1))


def _recording(init, built):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    return wrapped
