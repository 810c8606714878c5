from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import DynamicCache

from longllava.core import selective_scan as scan
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


@pytest.fixture(params=["cpu-kernel", "torch"])
def backend(request, monkeypatch):
    """Run a test on the fused CPU kernel and on the pure-torch scan (what other devices use)."""
    if request.param == "torch":
        monkeypatch.setattr(scan, "numba", None)
    return request.param


def scan_inputs(batch=2, length=57, channels=12, n_state=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, channels, generator=g)
    dt = torch.rand(batch, length, channels, generator=g) * 0.6
    A = -torch.rand(channels, n_state, generator=g) * 3 - 0.05
    B = torch.randn(batch, length, n_state, generator=g)
    C = torch.randn(batch, length, n_state, generator=g)
    h0 = torch.randn(batch, channels, n_state, generator=g)
    resets = torch.rand(batch, length, generator=g) < 0.08
    return [t.to(dtype) for t in (x, dt, A, B, C)], resets, h0.to(dtype)


def reference_scan(x, dt, A, B, C, resets, h0):
    """The recurrence written out token by token (float64)."""
    h, ys = h0, []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t, :, None] * A) * (~resets[:, t, None, None]).to(x.dtype)
        h = decay * h + dt[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1), h


def test_scan_values_and_gradients_match_the_recurrence(backend):
    (x, dt, A, B, C), resets, h0 = scan_inputs()
    inputs = [t.clone().requires_grad_() for t in (x, dt, A, B, C, h0)]
    exact = [t.double().clone().requires_grad_() for t in (x, dt, A, B, C, h0)]
    g = torch.Generator().manual_seed(9)
    grad_y, grad_h = torch.randn(x.shape, generator=g), torch.randn(h0.shape, generator=g)

    y, h_last = scan.selective_scan(*inputs[:5], resets, inputs[5])
    ((y * grad_y).sum() + (h_last * grad_h).sum()).backward()
    y_ref, h_ref = reference_scan(*exact[:5], resets, exact[5])
    ((y_ref * grad_y.double()).sum() + (h_ref * grad_h.double()).sum()).backward()

    torch.testing.assert_close(y, y_ref.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_last, h_ref.float(), atol=1e-4, rtol=1e-4)
    for name, got, want in zip(("x", "dt", "A", "B", "C", "h0"), inputs, exact):
        scale = want.grad.abs().max().item()
        assert scale > 1e-3, name  # every input receives a real gradient
        assert (got.grad - want.grad.float()).abs().max().item() <= 1e-4 * max(1.0, scale), name


def test_a_reset_cuts_the_state(backend):
    """After a reset, the output does not depend on anything before it (packed samples)."""
    (x, dt, A, B, C), _, h0 = scan_inputs(batch=1, length=40)
    resets = torch.zeros(1, 40, dtype=torch.bool)
    resets[0, 25] = True
    y, _ = scan.selective_scan(x, dt, A, B, C, resets, h0)
    changed = x.clone()
    changed[:, :25] = torch.randn(1, 25, x.shape[2])
    y_changed, _ = scan.selective_scan(changed, dt, A, B, C, resets, torch.zeros_like(h0))
    torch.testing.assert_close(y[:, 25:], y_changed[:, 25:])
    assert not torch.allclose(y[:, :25], y_changed[:, :25])


def test_cpu_kernel_serves_concurrent_callers():
    """A demo answers two users from two threads at once: both get their own correct result."""
    cases = [scan_inputs(seed=s) for s in range(4)]
    alone = [scan.selective_scan(*ins, resets, h0)[0] for ins, resets, h0 in cases]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda case: scan.selective_scan(*case[0], case[1], case[2])[0], cases * 3))
    for k, y in enumerate(together):
        torch.testing.assert_close(y, alone[k % 4])


def mixer_after_prefix(lm, hidden, block, monkeypatch):
    """Mixer 0 on ``hidden`` after a 50-token prefix in the cache: output and final cache states."""
    monkeypatch.setattr(scan, "SCAN_BLOCK", block)
    mixer = lm.model.layers[0].mamba
    cache = DynamicCache(config=lm.config)
    with torch.no_grad():
        mixer(hidden[:, :50], cache=cache)
        out = mixer(hidden[:, 50:], cache=cache)
    layer = cache.layers[0]
    return out, layer.recurrent_states[0].clone(), layer.conv_states[0].clone()


@pytest.mark.parametrize("block", [1, 16, 100])
def test_continuing_from_a_cache_equals_one_pass(language_model, block, backend, monkeypatch):
    """Chunked prefill: a prefix then the rest gives the states and outputs of one pass, also when
    the torch path scans in blocks."""
    torch.manual_seed(1)
    hidden = torch.randn(2, 50 + 333, language_model.config.hidden_size)
    mixer = language_model.model.layers[0].mamba
    cache = DynamicCache(config=language_model.config)
    with torch.no_grad():
        whole = mixer(hidden, cache=cache)
    result = mixer_after_prefix(language_model, hidden, block, monkeypatch)
    torch.testing.assert_close(result[0], whole[:, 50:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result[1], cache.layers[0].recurrent_states[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result[2], cache.layers[0].conv_states[0], atol=1e-5, rtol=1e-5)
    assert result[1].abs().max() > 0.1  # the carried state is not negligible


def test_packed_samples_stay_isolated(language_model, backend, monkeypatch):
    """position_ids restarting at 0 cut the state; a cut that falls inside a later block still holds."""
    monkeypatch.setattr(scan, "SCAN_BLOCK", 8)
    mixer = language_model.model.layers[0].mamba
    torch.manual_seed(2)
    first, second = torch.randn(1, 21, 64), torch.randn(1, 30, 64)
    positions = torch.cat([torch.arange(21), torch.arange(30)])[None]
    with torch.no_grad():
        packed = mixer(torch.cat([first, second], dim=1), position_ids=positions)
        alone = mixer(second)
    torch.testing.assert_close(packed[:, 21:], alone, atol=1e-5, rtol=1e-5)


def test_both_paths_train_the_mixer_alike(language_model, monkeypatch):
    """The whole mixer on packed rows: the CPU kernel and the torch scan give the same output and
    the same parameter gradients."""
    mixer = language_model.model.layers[0].mamba
    torch.manual_seed(3)
    hidden = torch.randn(2, 90, 64)
    positions = torch.cat([torch.arange(40), torch.arange(50)])[None].expand(2, -1)

    def run():
        mixer.zero_grad()
        out = mixer(hidden, position_ids=positions)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {k: p.grad.clone() for k, p in mixer.named_parameters()}

    kernel_out, kernel_grads = run()
    monkeypatch.setattr(scan, "numba", None)
    torch_out, torch_grads = run()
    torch.testing.assert_close(kernel_out, torch_out, atol=1e-5, rtol=1e-4)
    for name in ("A_log", "dt_proj.weight", "x_proj.weight", "in_proj.weight", "conv1d.weight", "D"):
        got, want = kernel_grads[name], torch_grads[name]
        scale = want.abs().max().item()
        assert scale > 1e-3, name
        # float32 sums in another order (per-thread partials): equal to ~1e-6 of the gradient's scale
        assert (got - want).abs().max().item() <= 1e-4 * scale, (name, (got - want).abs().max().item(), scale)


def test_torch_training_scans_the_whole_sequence_at_once(language_model, monkeypatch):
    monkeypatch.setattr(scan, "numba", None)
    monkeypatch.setattr(scan, "SCAN_BLOCK", 16)
    mixer = language_model.model.layers[0].mamba
    lengths = []
    original = scan.linear_scan

    def recording(dA, dBx, use_mambapy):
        lengths.append(dA.shape[1])
        return original(dA, dBx, use_mambapy)

    monkeypatch.setattr(scan, "linear_scan", recording)
    hidden = torch.randn(1, 100, 64)
    with torch.no_grad():
        blocked = mixer(hidden)
    assert lengths == [16] * 6 + [4]
    lengths.clear()
    trained = mixer(hidden)  # grad enabled: one scan, as autograd keeps it anyway
    assert lengths == [100] and trained.requires_grad
    torch.testing.assert_close(trained.detach(), blocked, atol=1e-5, rtol=1e-5)


def test_packed_rows_with_samples_shorter_than_the_conv_match_each_sample_alone(language_model):
    """Rows laid out differently, with samples of 1 and 2 tokens (shorter than the 4-tap conv):
    every sample's output, and the gradient reaching its inputs, are those of the sample alone."""
    mixer = language_model.model.layers[0].mamba
    layouts = [[1, 2, 5, 12], [3, 17]]
    torch.manual_seed(6)
    hidden = torch.randn(2, 20, 64, requires_grad=True)
    weights = torch.randn(2, 20, 64)
    positions = torch.stack([torch.cat([torch.arange(n) for n in layout]) for layout in layouts])
    packed = mixer(hidden, position_ids=positions)
    (packed * weights).sum().backward()
    for row, layout in enumerate(layouts):
        start = 0
        for n in layout:
            alone_in = hidden.detach()[row : row + 1, start : start + n].clone().requires_grad_()
            alone = mixer(alone_in)
            (alone * weights[row : row + 1, start : start + n]).sum().backward()
            torch.testing.assert_close(packed[row, start : start + n].detach(), alone[0].detach(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hidden.grad[row, start : start + n], alone_in.grad[0], atol=1e-5, rtol=1e-4)
            start += n
