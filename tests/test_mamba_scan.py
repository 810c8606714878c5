import pytest
import torch
from transformers import DynamicCache

from longllava.core import mamba
from longllava.core.configuration import tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration


@pytest.fixture(scope="module")
def language_model():
    torch.manual_seed(0)
    model = LongLlavaForConditionalGeneration(tiny_config(512)).eval()
    for layer in model.language_model.model.layers:  # long memory: a state lost between blocks would show
        if hasattr(layer, "mamba"):
            layer.mamba.A_log.data.fill_(-4.6)
            layer.mamba.dt_proj.bias.data.fill_(0.5)
    return model.language_model


def mixer_after_prefix(lm, hidden, block, monkeypatch):
    """Mixer 0 on ``hidden`` after a 50-token prefix in the cache: output and final cache states."""
    monkeypatch.setattr(mamba, "SCAN_BLOCK", block)
    mixer = lm.model.layers[0].mamba
    cache = DynamicCache(config=lm.config)
    with torch.no_grad():
        mixer(hidden[:, :50], cache=cache)
        out = mixer(hidden[:, 50:], cache=cache)
    layer = cache.layers[0]
    return out, layer.recurrent_states[0].clone(), layer.conv_states[0].clone()


@pytest.mark.parametrize("block", [1, 16, 100])
def test_scan_in_blocks_equals_one_block(language_model, block, monkeypatch):
    torch.manual_seed(1)
    hidden = torch.randn(2, 50 + 333, language_model.config.hidden_size)
    expected = mixer_after_prefix(language_model, hidden, 10_000, monkeypatch)
    result = mixer_after_prefix(language_model, hidden, block, monkeypatch)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert expected[1].abs().max() > 0.1  # the carried state is not negligible


def test_packed_samples_stay_isolated_across_blocks(language_model, monkeypatch):
    """position_ids restarting at 0 cut the state; a cut that falls inside a later block still holds."""
    monkeypatch.setattr(mamba, "SCAN_BLOCK", 8)
    mixer = language_model.model.layers[0].mamba
    torch.manual_seed(2)
    first, second = torch.randn(1, 21, 64), torch.randn(1, 30, 64)
    positions = torch.cat([torch.arange(21), torch.arange(30)])[None]
    with torch.no_grad():
        packed = mixer(torch.cat([first, second], dim=1), position_ids=positions)
        alone = mixer(second)
    torch.testing.assert_close(packed[:, 21:], alone, atol=1e-5, rtol=1e-5)


def test_training_scans_the_whole_sequence_at_once_with_equal_values(language_model, monkeypatch):
    monkeypatch.setattr(mamba, "SCAN_BLOCK", 16)
    mixer = language_model.model.layers[0].mamba
    lengths = []
    original = mamba.selective_scan

    def recording(dA, dBx, use_mambapy):
        lengths.append(dA.shape[1])
        return original(dA, dBx, use_mambapy)

    monkeypatch.setattr(mamba, "selective_scan", recording)
    hidden = torch.randn(1, 100, 64)
    with torch.no_grad():
        blocked = mixer(hidden)
    assert lengths == [16] * 6 + [4]
    lengths.clear()
    trained = mixer(hidden)  # grad enabled: one scan, as autograd keeps it anyway
    assert lengths == [100] and trained.requires_grad
    torch.testing.assert_close(trained.detach(), blocked, atol=1e-5, rtol=1e-5)
