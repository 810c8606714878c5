import pytest
import torch
import torch.nn.functional as F
from transformers.models.jamba.modeling_jamba import JambaMambaMixer

from longllava.core.checkpoint import build_preset
from longllava.core.configuration import LongLlavaConfig, tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration, pool_image_features
from longllava.errors import InputError


def long_memory(model):
    """Random Mamba layers forget within a few tokens, which would hide a lost state: slow their
    decay (A = -0.01) so that state carried across chunks / samples visibly matters."""
    for layer in model.language_model.model.layers:
        if hasattr(layer, "mamba"):
            layer.mamba.A_log.data.fill_(-4.6)
            layer.mamba.dt_proj.bias.data.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def memory_model():
    return long_memory(build_preset("tiny-random")[0])


def image_ids(config, prefix, n_images, suffix):
    ids = list(prefix)
    for _ in range(n_images):
        ids += [config.image_token_id] * config.image_seq_length + [17]
    return torch.tensor([ids + list(suffix)])


def test_2d_pooling_is_2x2_average_and_reference_bilinear():
    torch.manual_seed(1)
    features = torch.randn(3, 576, 8)
    pooled = pool_image_features(features, "2d", 24)
    square = features.transpose(1, 2).reshape(3, 8, 24, 24)
    expected = F.avg_pool2d(square, 2).flatten(2).transpose(1, 2)
    bilinear = F.interpolate(square, size=(12, 12), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    assert pooled.shape == (3, 144, 8)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(pooled, bilinear)
    # token (0, 0) of the 12x12 grid is the mean of patches (0,0), (0,1), (1,0), (1,1)
    torch.testing.assert_close(pooled[:, 0], features[:, [0, 1, 24, 25]].mean(1))


def test_1d_pooling_matches_reference_linear_resampling_and_none_keeps_all():
    features = torch.randn(2, 576, 4)
    pooled = pool_image_features(features, "1d", 24)
    assert pooled.shape == (2, 144, 4)
    torch.testing.assert_close(pooled[:, 5], (features[:, 21] + features[:, 22]) / 2)
    assert pool_image_features(features, "none", 24) is features


def test_pooling_mode_is_a_saved_config_field(tmp_path):
    config = tiny_config(1024)
    config.pooling = "1d"
    config.save_pretrained(tmp_path)
    loaded = LongLlavaConfig.from_pretrained(tmp_path)
    assert loaded.pooling == "1d" and loaded.image_seq_length == 144
    loaded.pooling = "none"
    assert loaded.image_seq_length == 576
    with pytest.raises(ValueError, match="pooling"):
        LongLlavaConfig(pooling="3d")


def test_144_projected_tokens_per_image_reach_the_language_model(tiny):
    model, _ = tiny
    config = model.config
    pixels = torch.randn(2, 3, 336, 336)
    ids = image_ids(config, [1, 40, 41], 2, [50, 51])
    seen = {}
    hook = model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        model(input_ids=ids, pixel_values=pixels)
        features = model.get_image_features(pixels)
    hook.remove()
    assert features.shape == (2, 144, config.text_config.hidden_size)
    embeds = seen["embeds"][0]
    positions = (ids[0] == config.image_token_id).nonzero().flatten()
    assert len(positions) == 288
    torch.testing.assert_close(embeds[positions], features.reshape(288, -1))
    text_positions = (ids[0] != config.image_token_id).nonzero().flatten()
    torch.testing.assert_close(embeds[text_positions], model.get_input_embeddings()(ids[0, text_positions]))


def test_images_are_encoded_in_bounded_micro_batches(tiny):
    model, _ = tiny
    pixels = torch.randn(5, 3, 336, 336)
    batch_sizes = []
    hook = model.vision_tower.register_forward_hook(lambda m, args, out: batch_sizes.append(args[0].shape[0]))
    with torch.no_grad():
        whole = model.get_image_features(pixels)
        model.config.image_encode_batch_size = 2
        try:
            micro = model.get_image_features(pixels)
        finally:
            model.config.image_encode_batch_size = 32
    hook.remove()
    assert batch_sizes == [5, 2, 2, 1]
    torch.testing.assert_close(micro, whole, atol=1e-5, rtol=1e-4)


def test_placeholder_and_image_counts_must_match(tiny):
    model, _ = tiny
    ids = image_ids(model.config, [1], 2, [5])
    with pytest.raises(InputError, match="2 images of 144 tokens\\) but 1 images"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, 336, 336))
    with pytest.raises(InputError, match="but 3 images"):
        model(input_ids=ids, pixel_values=torch.randn(3, 3, 336, 336))


def test_over_length_input_raises_instead_of_truncating(tiny):
    model, _ = tiny
    model.config.max_sequence_length = 100
    try:
        with pytest.raises(InputError, match="exceeds max_sequence_length=100"):
            model(input_ids=torch.ones(1, 101, dtype=torch.long))
    finally:
        model.config.max_sequence_length = 262144


def test_chunked_prefill_gives_the_same_logits_as_one_pass(memory_model):
    model = memory_model
    torch.manual_seed(3)
    ids = image_ids(model.config, torch.randint(5, 1000, (7,)).tolist(), 2, torch.randint(5, 1000, (9,)).tolist())
    pixels = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels).logits[:, -1]
        for chunk in (13, 100, 144):
            cache, last = model.prefill(ids, pixels, chunk_size=chunk)
            torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-4)
        # the decode step after a chunked prefill sees the whole prompt
        nxt = torch.tensor([[42]])
        one_pass = model(input_ids=torch.cat([ids, nxt], 1), pixel_values=pixels).logits[:, -1]
        mask = torch.ones(1, ids.shape[1] + 1, dtype=torch.long)
        step = model.language_model(input_ids=nxt, attention_mask=mask, cache=cache, use_cache=True).logits[:, -1]
        torch.testing.assert_close(step, one_pass, atol=1e-5, rtol=1e-4)


def test_stock_jamba_mixer_would_lose_the_state_between_chunks():
    """Guards the reason for StatefulMambaMixer: with transformers' own mixer the chunked result differs."""
    model = long_memory(build_preset("tiny-random")[0])
    ids = torch.randint(5, 1000, (1, 60))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        for layer in model.language_model.model.layers:
            if hasattr(layer, "mamba"):
                layer.mamba.__class__ = JambaMambaMixer
        _, last = model.prefill(ids, chunk_size=20)
    assert (last - full).abs().max() > 1e-3


def test_packed_samples_do_not_see_each_other(memory_model):
    model = memory_model
    torch.manual_seed(4)
    a, b = torch.randint(5, 1000, (1, 30)), torch.randint(5, 1000, (1, 21))
    positions = torch.cat([torch.arange(30), torch.arange(21)])[None]
    with torch.no_grad():
        alone_a, alone_b = model(input_ids=a).logits, model(input_ids=b).logits
        packed = model(input_ids=torch.cat([a, b], 1), position_ids=positions).logits
        leaky = model(input_ids=torch.cat([a, b], 1)).logits
    torch.testing.assert_close(packed[:, :30], alone_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[:, 30:], alone_b, atol=1e-5, rtol=1e-4)
    assert (leaky[:, 30:] - alone_b).abs().max() > 1e-3


def test_greedy_generation_is_deterministic_and_batches_mix_image_counts(tiny):
    from longllava.core.pipeline import LongLlava

    model, tokenizer = tiny
    llava = LongLlava(model, tokenizer)
    torch.manual_seed(5)
    images = [torch.rand(64, 48, 3).mul(255).byte().numpy() for _ in range(3)]
    prompts = ["<img><image></img>\nWhat is this?", "<img><image></img><img><image></img>\nCompare them."]
    alone = [
        llava.answer_prompts([prompts[0]], [images[:1]], max_new_tokens=6)[0],
        llava.answer_prompts([prompts[1]], [images[1:]], max_new_tokens=6)[0],
    ]
    again = [
        llava.answer_prompts([prompts[0]], [images[:1]], max_new_tokens=6)[0],
        llava.answer_prompts([prompts[1]], [images[1:]], max_new_tokens=6)[0],
    ]
    batched = llava.answer_prompts(prompts, [images[:1], images[1:]], max_new_tokens=6)
    assert alone == again
    assert batched == alone
    assert all(answer for answer in alone)


def test_training_loss_and_gradients_flow_through_vision_path(tiny):
    model, _ = build_preset("tiny-random")
    model.train()
    ids = image_ids(model.config, [1, 30], 1, [60, 61, 62])
    labels = ids.clone()
    labels[ids == model.config.image_token_id] = -100
    out = model(input_ids=ids, pixel_values=torch.randn(1, 3, 336, 336), labels=labels, output_router_logits=True)
    assert torch.isfinite(out.loss) and out.aux_loss is not None
    out.loss.backward()
    assert model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


def test_bfloat16_runs_on_the_pure_torch_path():
    """transformers' own pure-torch Mamba path fails in bf16 (float32 states times bf16 C); ours
    scans in float32 and casts back."""
    model, _ = build_preset("tiny-random")
    ids = torch.randint(5, 1000, (1, 64))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        half = model.to(torch.bfloat16)(input_ids=ids).logits
    assert half.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits through 8 layers: a few percent of the logits' norm
    assert ((half.float() - full).norm() / full.norm()).item() < 0.1
    assert (half.argmax(-1) == full.argmax(-1)).float().mean().item() > 0.8


def test_generation_ignores_the_training_router_loss_setting():
    """Training switches on MoE router logits (load-balancing loss); generation must not compute it."""
    model, _ = build_preset("tiny-random")
    model.language_model.config.output_router_logits = True
    ids = torch.randint(5, 1000, (2, 30))
    tokens = model.greedy_generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3)
    assert tokens.shape == (2, 3)
