"""The largest-batch decode throughput and the packed LoRA training step of `longllava bench model`
(CUDA figures), run on CPU with the tiny preset: the batch search against a small memory cap by the
analytic memory model, and both measurements end to end on the eager static path."""

import math

import torch

from longllava.bench.memory import decode_bytes_per_sequence, largest_batch, parameter_counts
from longllava.bench.settings import variant_config
from longllava.bench.throughput import max_batch_throughput, packed_lora_training_step
from longllava.core.configuration import tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration


def test_largest_batch_fills_the_cap_left_by_the_weights_and_favours_the_hybrid():
    config = tiny_config(256)
    text = config.text_config
    weights = parameter_counts(config)["total"] * 4
    per_sequence = decode_bytes_per_sequence(text, 1000, 22, 4)
    head_dim = text.hidden_size // text.num_attention_heads
    kv = 2 * 1 * text.num_key_value_heads * head_dim * 1022 * 4  # one attention layer
    state = 7 * 2 * text.hidden_size * (text.mamba_d_conv + text.mamba_d_state) * 4
    assert per_sequence == kv + state + 2 * 4 * 256
    cap = weights + 3 * per_sequence + per_sequence // 2
    assert largest_batch(config, 1000, 22, 4, cap) == {"batch": 3, "weights_bytes": weights, "bytes_per_sequence": per_sequence}
    assert largest_batch(config, 1000, 22, 4, weights - 1)["batch"] == 0
    attention = largest_batch(variant_config(config, "attention"), 1000, 22, 4, cap)
    assert attention["batch"] < 3  # 8 attention layers' K/V per sequence instead of 1


def test_max_batch_throughput_and_training_step_run_on_the_static_path():
    torch.manual_seed(0)
    model = LongLlavaForConditionalGeneration(tiny_config(256)).eval()
    sizing = largest_batch(model.config, 40, 5, 4, 1)
    cap_gib = (sizing["weights_bytes"] + 2.5 * sizing["bytes_per_sequence"]) / 2**30
    result = max_batch_throughput(model, "hybrid", context_tokens=40, cap_gib=cap_gib, steps=3, device="cpu")
    assert result["batch"] == 2 and result["decode_path"] == "static-eager"
    assert result["tokens_per_s"] > 0 and math.isclose(result["tokens_per_s"], 2 * 1000 / result["ms_per_step"])
    none = max_batch_throughput(model, "hybrid", context_tokens=40, cap_gib=1e-6, steps=3, device="cpu")
    assert none["batch"] == 0 and "leave no room" in none["error"]

    training = packed_lora_training_step(model.train(), tokens=64, samples=4, device="cpu")
    assert training["tokens_per_s"] > 0 and math.isfinite(training["loss"]) and training["dtype"] == "float32"
    assert any("lora_" in name for name, _ in model.named_parameters())
