import pytest
import torch
import torch.nn.functional as F

from longllava.core import attention
from longllava.core.attention import CHUNKED_SDPA, chunked_sdpa_mask, lower_right_attention, merged_attention_cpu
from longllava.bench.settings import variant_config
from longllava.core.configuration import tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration


def reference_attention(query, key, value):
    """Explicit lower-right causal softmax attention in float64."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.double().repeat_interleave(groups, 1), value.double().repeat_interleave(groups, 1)
    q_length, kv_length = query.shape[2], key.shape[2]
    scores = query.double() @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    visible = torch.ones(q_length, kv_length, dtype=torch.bool).tril(kv_length - q_length)
    return scores.masked_fill(~visible, float("-inf")).softmax(-1) @ value


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("combine", [merged_attention_cpu, lower_right_attention])
def test_attention_after_a_prefix_is_exact(kv_heads, combine):
    torch.manual_seed(kv_heads)
    query = torch.randn(2, 4, 37, 16).transpose(1, 2).contiguous().transpose(1, 2)  # strided like the model's
    key, value = torch.randn(2, kv_heads, 37 + 101, 16), torch.randn(2, kv_heads, 37 + 101, 16)
    expected = reference_attention(query, key, value)
    torch.testing.assert_close(combine(query, key, value).double(), expected, atol=1e-5, rtol=1e-5)


def test_bfloat16_after_a_prefix_stays_close_to_float64():
    torch.manual_seed(0)
    query, key, value = torch.randn(1, 4, 16, 16), torch.randn(1, 2, 80, 16), torch.randn(1, 2, 80, 16)
    result = merged_attention_cpu(query.bfloat16(), key.bfloat16(), value.bfloat16())
    assert result.dtype == torch.bfloat16
    torch.testing.assert_close(result.double(), reference_attention(query, key, value), atol=3e-2, rtol=3e-2)


def test_mask_is_skipped_only_for_unpadded_end_aligned_chunks():
    ones = torch.ones(2, 20, dtype=torch.bool)
    # a chunk of 8 after 12 cached tokens, no padding: no mask at all
    assert chunked_sdpa_mask(2, 8, 20, q_offset=12, attention_mask=ones) is None
    assert chunked_sdpa_mask(2, 8, 20, q_offset=12) is None
    # padding, or a caller that forbids the skip (packed samples): transformers' boolean mask
    padded = ones.clone()
    padded[1, :3] = False
    mask = chunked_sdpa_mask(2, 8, 20, q_offset=12, attention_mask=padded)
    assert mask.shape == (2, 1, 8, 20) and mask.dtype == torch.bool
    assert not mask[1, 0, :, :3].any() and mask[0, 0, 0, :13].all() and not mask[0, 0, 0, 13:].any()
    assert chunked_sdpa_mask(2, 8, 20, q_offset=12, allow_is_causal_skip=False).shape == (2, 1, 8, 20)
    # an empty static cache (queries at the start of longer keys): materialised, never None
    static = torch.zeros(1, 20, dtype=torch.bool)
    static[:, :8] = True
    mask = chunked_sdpa_mask(1, 8, 20, q_offset=0, attention_mask=static)
    assert mask.shape == (1, 1, 8, 20) and not mask[0, 0, 0, 1:].any()


def build(variant: str, kv_heads: int = 2, implementation: str | None = None):
    config = variant_config(tiny_config(512), variant)
    config.text_config.num_key_value_heads = kv_heads
    if implementation is not None:
        config.text_config._attn_implementation = implementation
    torch.manual_seed(0)
    model = LongLlavaForConditionalGeneration(config).eval()
    for layer in model.language_model.model.layers:  # long Mamba memory, so a lost state would show
        if hasattr(layer, "mamba"):
            layer.mamba.A_log.data.fill_(-4.6)
            layer.mamba.dt_proj.bias.data.fill_(0.5)
    return model


@pytest.fixture
def prefix_calls(monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return merged_attention_cpu(*args, **kwargs)

    monkeypatch.setattr(attention, "merged_attention_cpu", counting)
    return calls


@pytest.mark.parametrize("variant", ["hybrid", "attention"])
@pytest.mark.parametrize("kv_heads", [2, 4])
def test_chunked_prefill_equals_one_pass_without_a_mask(variant, kv_heads, prefix_calls):
    model = build(variant, kv_heads)
    lm = model.language_model
    assert lm.config._attn_implementation == CHUNKED_SDPA
    embeds = torch.randn(1, 300, lm.config.hidden_size)
    with torch.no_grad():
        expected = lm(inputs_embeds=embeds).logits[:, -1]
        for chunk in (7, 64, 128):
            before = len(prefix_calls)
            _, logits = model.prefill(inputs_embeds=embeds, chunk_size=chunk)
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
            chunks_after_first = -(-300 // chunk) - 1
            layers = lm.config.layers_block_type.count("attention")
            assert len(prefix_calls) - before == chunks_after_first * layers  # every later chunk, mask-free


def test_padded_batch_falls_back_and_equals_single_rows(prefix_calls):
    model = build("hybrid")
    rows = [torch.randint(3, 500, (1, 90)), torch.randint(3, 500, (1, 61))]
    pad = 90 - 61
    ids = torch.cat([rows[0], F.pad(rows[1], (pad, 0))])
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    _, batched = model.prefill(ids, attention_mask=mask, chunk_size=16)
    assert prefix_calls == []  # the padded batch took transformers' masked sdpa path
    for index, row in enumerate(rows):
        _, alone = model.prefill(row, chunk_size=16)
        torch.testing.assert_close(batched[index], alone[0], atol=1e-5, rtol=1e-5)
    assert len(prefix_calls) > 0


def test_explicit_choice_is_kept_and_the_default_survives_save_and_load(tmp_path):
    model = build("hybrid", implementation="sdpa")
    assert model.language_model.config._attn_implementation == "sdpa"
    model = build("hybrid")
    model.save_pretrained(tmp_path)
    loaded = LongLlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.language_model.config._attn_implementation == CHUNKED_SDPA
    eager = LongLlavaForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.language_model.config._attn_implementation == "eager"


@pytest.mark.parametrize("layout", ["unpadded", "packed", "padded"])
def test_training_loss_and_gradients_equal_the_sdpa_path(layout):
    """Training never continues a cache, so queries and keys have equal length and the new
    implementation defers to transformers' sdpa: same loss, same gradients."""
    results = []
    for implementation in (CHUNKED_SDPA, "sdpa"):
        model = build("hybrid", implementation=implementation).train()
        torch.manual_seed(1)
        ids = torch.randint(3, 500, (2, 48))
        kwargs = {}
        if layout == "packed":  # two samples per row, positions restarting at 0
            kwargs["position_ids"] = torch.cat([torch.arange(20), torch.arange(28)]).expand(2, -1)
        if layout == "padded":
            kwargs["attention_mask"] = torch.ones_like(ids)
            kwargs["attention_mask"][1, :10] = 0
        loss = model(input_ids=ids, labels=ids, **kwargs).loss
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.language_model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss, grads), (sdpa_loss, sdpa_grads) = results
    torch.testing.assert_close(loss, sdpa_loss, atol=0, rtol=0)
    assert grads.keys() == sdpa_grads.keys() and any("self_attn" in name for name in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], sdpa_grads[name], atol=0, rtol=0)
