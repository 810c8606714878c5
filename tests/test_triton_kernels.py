"""The Triton kernels (core/triton_scan.py) on CPU tensors through triton's interpreter.

CI has no GPU: ``TRITON_INTERPRET=1`` must be set before triton is first imported (torch imports
it), so tests/conftest.py sets it; this module checks that it is on.
The interpreter is slow (a Python loop per token and program), so shapes are tiny; the block sizes
are shrunk so that lengths and widths are *not* multiples of them and several chunks run.
"""

import os

import pytest
import torch
from torch import nn
from transformers import DynamicCache

from longllava.core import mamba as mamba_module
from longllava.core import selective_scan as scan
from longllava.core import triton_scan
from longllava.core.configuration import tiny_config
from longllava.core.modeling import LongLlavaForConditionalGeneration

from tests.test_mamba_scan import reference_scan, scan_inputs


assert os.environ.get("TRITON_INTERPRET") == "1", "tests/conftest.py turns triton's interpreter on"


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(triton_scan, "CHUNK", 16)  # 37 tokens: chunks of 16, 16, 5
    monkeypatch.setattr(triton_scan, "BLOCK_D", 8)  # 20 channels: blocks of 8, 8, 4
    monkeypatch.setattr(triton_scan, "BLOCK_T", 8)


def select(monkeypatch, kernels):
    monkeypatch.setattr(scan, "KERNELS", kernels)


def run_scan(kernels, monkeypatch, inputs, resets, grad_y, grad_h):
    select(monkeypatch, kernels)
    leaves = [t.clone().requires_grad_() for t in inputs]
    y, h_last = scan.selective_scan(*leaves[:5], resets, leaves[5])
    ((y.float() * grad_y).sum() + (h_last.float() * grad_h).sum()).backward()
    return y, h_last, [t.grad for t in leaves]


def test_triton_scan_equals_the_recurrence_and_the_numba_kernel(monkeypatch):
    (x, dt, A, B, C), resets, h0 = scan_inputs(batch=2, length=37, channels=20, n_state=5)
    resets[0, 16] = True  # a reset on a chunk boundary, others inside chunks
    g = torch.Generator().manual_seed(9)
    grad_y, grad_h = torch.randn(x.shape, generator=g), torch.randn(h0.shape, generator=g)
    inputs = (x, dt, A, B, C, h0)

    scan.KERNELS_RUN.clear()
    y, h_last, grads = run_scan("triton", monkeypatch, inputs, resets, grad_y, grad_h)
    assert scan.KERNELS_RUN == {"scan:triton": 1}
    y_numba, h_numba, grads_numba = run_scan("numba", monkeypatch, inputs, resets, grad_y, grad_h)
    exact = [t.double().requires_grad_() for t in inputs]
    y_ref, h_ref = reference_scan(*exact[:5], resets, exact[5])
    ((y_ref * grad_y.double()).sum() + (h_ref * grad_h.double()).sum()).backward()

    assert y.dtype == h_last.dtype == torch.float32
    for want in (y_ref.float(), y_numba):
        torch.testing.assert_close(y, want, atol=1e-4, rtol=1e-4)
    for want in (h_ref.float(), h_numba):
        torch.testing.assert_close(h_last, want, atol=1e-4, rtol=1e-4)
    for name, got, want, numba_grad in zip(("x", "dt", "A", "B", "C", "h0"), grads, exact, grads_numba):
        scale = want.grad.abs().max().item()
        assert scale > 1e-3, name
        assert (got - want.grad.float()).abs().max().item() <= 1e-4 * max(1.0, scale), name
        assert (got - numba_grad).abs().max().item() <= 1e-4 * max(1.0, scale), name


def test_triton_scan_takes_bf16_inputs_with_float32_state(monkeypatch):
    """bf16 inputs: the kernel accumulates in float32, so it equals the numba kernel on the same
    (bf16-rounded) values upcast; gradients come back in the inputs' dtypes."""
    (x, dt, A, B, C), resets, h0 = scan_inputs(batch=1, length=21, channels=12, n_state=4, seed=3)
    low = [t.bfloat16() for t in (x, dt, B, C)]
    g = torch.Generator().manual_seed(4)
    grad_y, grad_h = torch.randn(x.shape, generator=g), torch.randn(h0.shape, generator=g)
    y, h_last, grads = run_scan("triton", monkeypatch, (*low[:2], A, *low[2:], h0), resets, grad_y, grad_h)
    upcast = [t.float() for t in low]
    y_ref, h_ref, grads_ref = run_scan("numba", monkeypatch, (*upcast[:2], A, *upcast[2:], h0), resets, grad_y, grad_h)
    assert y.dtype == torch.float32 and [t.dtype for t in grads] == [torch.bfloat16] * 2 + [torch.float32] + [torch.bfloat16] * 2 + [torch.float32]
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_last, h_ref, atol=1e-4, rtol=1e-4)
    for got, want in zip(grads, grads_ref):  # equal up to the bf16 rounding of the result
        torch.testing.assert_close(got.float(), want, atol=2e-2 * want.abs().max().item(), rtol=1e-2)


def conv_inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    kernel, length, channels = 4, 19, 40
    xin = torch.randn(2, kernel - 1 + length, channels, generator=g).to(dtype)
    resets = torch.rand(2, length, generator=g) < 0.15
    resets[0, 1] = resets[1, 2] = True  # samples shorter than the conv
    resets[:, 0] = False
    segments = torch.nn.functional.pad(resets.long().cumsum(-1), (kernel - 1, 0))
    weight = torch.randn(channels, kernel, generator=g).to(dtype)
    bias = torch.randn(channels, generator=g).to(dtype)
    return xin, segments, weight, bias


@pytest.mark.parametrize("packed", [False, True])
def test_triton_conv_equals_the_torch_conv_values_and_gradients(monkeypatch, packed):
    xin, segments, weight, bias = conv_inputs()
    segments = segments if packed else None
    grad = torch.randn(2, xin.shape[1] - 3, xin.shape[2], generator=torch.Generator().manual_seed(1))
    results = {}
    for kernels in ("triton", "torch"):
        select(monkeypatch, kernels)
        leaves = [t.clone().requires_grad_() for t in (xin, weight, bias)]
        out = mamba_module.causal_conv(leaves[0], segments, leaves[1], leaves[2])
        (out * grad).sum().backward()
        results[kernels] = [out.detach()] + [t.grad for t in leaves]
    for got, want in zip(results["triton"], results["torch"]):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_triton_step_equals_one_token_of_the_scan(monkeypatch):
    (x, dt, A, B, C), _, h0 = scan_inputs(batch=3, length=1, channels=20, n_state=5, seed=5)
    g = torch.Generator().manual_seed(6)
    skip, gate = torch.randn(20, generator=g), torch.randn(3, 20, generator=g)
    y_scan, h_scan = scan.selective_scan(x, dt, A, B, C, None, h0)
    want = (y_scan[:, 0] + x[:, 0] * skip) * torch.nn.functional.silu(gate)
    for kernels in ("triton", "torch"):
        select(monkeypatch, kernels)
        state = h0.clone()
        y = mamba_module.mamba_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], skip, gate, state)
        torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, h_scan, atol=1e-5, rtol=1e-5)  # updated in place


# -- the mixer's CUDA dispatch, with the Triton path selected on CPU ------------------------------


@pytest.fixture
def mixer(monkeypatch):
    # wider blocks than above: the interpreter's cost is per program and token, and the mixer has
    # 128 channels (still two channel blocks and, over 23 tokens, two chunks)
    monkeypatch.setattr(triton_scan, "BLOCK_D", 64)
    torch.manual_seed(0)
    model = LongLlavaForConditionalGeneration(tiny_config(64, mamba_d_state=4))
    for layer in model.language_model.model.layers:
        if hasattr(layer, "mamba"):
            layer.mamba.A_log.data.fill_(-3.0)  # long memory: a lost state would show
    return model.language_model.model.layers[0].mamba


class LoraLinear(nn.Module):
    """An adapter around dt_proj (what peft does): the mixer must call the module."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, 2, bias=False)
        self.up = nn.Linear(2, base.out_features, bias=False)
        nn.init.normal_(self.up.weight, std=0.5)

    @property
    def weight(self):
        return self.base.weight

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


def train_step(mixer, hidden, positions):
    mixer.zero_grad()
    out = mixer(hidden, position_ids=positions)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in mixer.named_parameters()}


@pytest.mark.parametrize("adapted", [False, True])
def test_mixer_trains_packed_rows_alike_on_triton_and_numba(mixer, monkeypatch, adapted):
    if adapted:
        mixer.dt_proj = LoraLinear(mixer.dt_proj)
    torch.manual_seed(3)
    hidden = torch.randn(2, 23, 64)
    positions = torch.cat([torch.arange(9), torch.arange(14)])[None].expand(2, -1)
    scan.KERNELS_RUN.clear()
    select(monkeypatch, "triton")
    triton_out, triton_grads = train_step(mixer, hidden, positions)
    assert scan.KERNELS_RUN == {"scan:triton": 1, "conv:triton": 1}
    select(monkeypatch, "numba")
    numba_out, numba_grads = train_step(mixer, hidden, positions)
    torch.testing.assert_close(triton_out, numba_out, atol=1e-5, rtol=1e-4)
    names = ["A_log", "x_proj.weight", "in_proj.weight", "conv1d.weight", "conv1d.bias", "D"]
    names += ["dt_proj.up.weight", "dt_proj.down.weight"] if adapted else ["dt_proj.weight"]
    for name in names:
        got, want = triton_grads[name], numba_grads[name]
        scale = want.abs().max().item()
        assert scale > 1e-4, name
        assert (got - want).abs().max().item() <= 1e-4 * scale, name


def test_mixer_continues_a_chunk_and_decodes_on_triton_as_in_one_pass(mixer, monkeypatch):
    """Chunked prefill (a continued state and conv context) then single-token decode steps (the
    fused step kernel), against one numba pass over all the tokens."""
    torch.manual_seed(4)
    hidden = torch.randn(2, 30, 64)
    select(monkeypatch, "numba")
    with torch.no_grad():
        whole = mixer(hidden)
    select(monkeypatch, "triton")
    scan.KERNELS_RUN.clear()
    cache = DynamicCache(config=mixer.config)
    with torch.no_grad():
        parts = [mixer(hidden[:, :11], cache=cache), mixer(hidden[:, 11:27], cache=cache)]
        parts += [mixer(hidden[:, t : t + 1], cache=cache) for t in range(27, 30)]
    assert scan.KERNELS_RUN == {"scan:triton": 2, "conv:triton": 2, "step:triton": 3}
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-5, rtol=1e-4)
