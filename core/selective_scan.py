"""The selective scan of Jamba's Mamba layers, without the mamba-ssm CUDA kernels.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t        y_t = C_t . h_t

per channel d (x, dt: (batch, tokens, D); A: (D, N); B, C: (batch, tokens, N); h: (D, N) per
sample). Two implementations, chosen by :func:`selective_scan`:

* CPU tensors: a fused numba kernel (forward and backward). Each thread walks its channels token by
  token with the N states in registers, so no (batch, tokens, D, N) tensor is ever materialised.
  The pure-torch scan builds five of them (dA, dBx, the states, the scan's own copies, their
  gradients) and was ~75% of a CPU training step of the tiny model; the kernel does the same work
  ~4x faster (fwd+bwd of one tiny mixer on 2000 tokens, 2 threads: 87 -> 21 ms) and its memory is
  that of the (batch, tokens, D) inputs, whatever the length. The backward recomputes each
  channel's states instead of storing them.
* CUDA tensors: fused Triton kernels (:mod:`longllava.core.triton_scan`, forward and backward, the
  same design on a GPU: the state in registers, the backward recomputing it from checkpoints).
* Other devices, or no numba / triton: mambapy's parallel scan (or a sequential loop) over the
  materialised tensors, in blocks of ``SCAN_BLOCK`` tokens at inference to bound their memory.

:data:`KERNELS` (environment ``LONGLLAVA_MAMBA_KERNELS``) overrides the choice: ``auto`` (the rule
above), ``numba``, ``triton`` (tests select it on CPU tensors under ``TRITON_INTERPRET=1``),
``torch``, or ``mamba-ssm`` (the mixer's plain full-sequence CUDA forward goes to mamba-ssm's
kernels, which ``auto`` also picks for that case where they are installed; see
:mod:`longllava.core.mamba`). :data:`KERNELS_RUN` counts which implementation ran, for the benches.

All compute in float32 and support packed samples (``resets``: the state is cut before a token
that starts a new sample) and an initial state (chunked prefill), and return the last state.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections import Counter

import numpy as np
import torch

try:
    import numba
    from numba import njit, prange
except ImportError:  # the pure-torch path below still runs, ~4x slower on a CPU
    numba = None

# Tokens per pure-torch scan at inference. That scan holds several float32 (batch, tokens, D, N)
# tensors: at 8192 tokens 64 MiB each at the tiny widths (D 128) and 4 GiB each at the released
# ones (D 8192). 1024-token blocks cap that at an eighth and cost no speed; the state is carried
# exactly from block to block. (The CPU kernel needs no blocks.)
SCAN_BLOCK = 1024

KERNEL_CHOICES = ("auto", "numba", "triton", "torch", "mamba-ssm")
KERNELS = os.environ.get("LONGLLAVA_MAMBA_KERNELS", "auto")
KERNELS_RUN: Counter = Counter()  # implementation name -> calls, read by the benches


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def scan_kernels(device: torch.device) -> str:
    """The scan implementation for tensors on ``device``: ``numba``, ``triton`` or ``torch``."""
    if KERNELS not in KERNEL_CHOICES:
        raise ValueError(f"LONGLLAVA_MAMBA_KERNELS={KERNELS!r}: expected one of {', '.join(KERNEL_CHOICES)}")
    if KERNELS in ("numba", "triton", "torch"):
        return KERNELS
    if device.type == "cpu" and numba is not None:
        return "numba"
    if device.type == "cuda" and triton_available():
        return "triton"
    return "torch"


def selective_scan(x, dt, A, B, C, resets=None, initial_state=None, use_mambapy: bool = True):
    """``(y, last_state)`` of the scan above, float32 whatever the inputs' dtype; ``resets``
    (batch, tokens) bool marks tokens whose state starts from zero (a packed sample's first
    token); ``initial_state`` (batch, D, N) or None (zeros)."""
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], x.shape[2], A.shape[1], dtype=torch.float32)
    kernels = scan_kernels(x.device)
    KERNELS_RUN[f"scan:{kernels}"] += 1
    if kernels == "triton":
        from longllava.core.triton_scan import triton_scan  # imports triton: only where it runs

        return triton_scan(x, dt, A, B, C, resets, initial_state)
    x, dt, A, B, C, initial_state = (t.float() for t in (x, dt, A, B, C, initial_state))
    if kernels == "numba":
        return cpu_kernel_scan(x, dt, A, B, C, resets, initial_state)
    return torch_selective_scan(x, dt, A, B, C, resets, initial_state, use_mambapy)


# ---------------------------------------------------------------------------------------------
# Pure torch (any device)
# ---------------------------------------------------------------------------------------------


def _sequential_scan(dA: torch.Tensor, dBx: torch.Tensor) -> torch.Tensor:
    states, h = [], torch.zeros_like(dBx[:, 0])
    for t in range(dA.shape[1]):
        h = dA[:, t] * h + dBx[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def linear_scan(dA: torch.Tensor, dBx: torch.Tensor, use_mambapy: bool) -> torch.Tensor:
    """All states of ``h_t = dA_t * h_{t-1} + dBx_t`` (h_{-1} = 0); tensors are (B, L, D, N)."""
    from transformers.utils.import_utils import is_mambapy_available

    if use_mambapy and is_mambapy_available():
        from mambapy.pscan import pscan

        return pscan(dA, dBx)
    return _sequential_scan(dA, dBx)


def torch_selective_scan(x, dt, A, B, C, resets, initial_state, use_mambapy: bool = True):
    """The scan with materialised (B, L, D, N) tensors. Training scans the whole sequence at once
    (autograd keeps it anyway); inference scans in ``SCAN_BLOCK`` blocks, carrying the state."""
    seq_len = x.shape[1]
    block = seq_len if torch.is_grad_enabled() else SCAN_BLOCK
    state, ys = initial_state, []
    for start in range(0, seq_len, block):
        part = slice(start, start + block)
        dA = torch.exp(dt[:, part, :, None] * A)  # (B, L, D, N)
        dBx = dt[:, part, :, None] * B[:, part, None, :] * x[:, part, :, None]
        if resets is not None:
            dA = dA * (~resets[:, part])[..., None, None].to(dA.dtype)
        # an initial state enters as dBx_0 += dA_0 * h0; a sample boundary at t sets dA_t = 0
        dBx = torch.cat([dBx[:, :1] + dA[:, :1] * state[:, None], dBx[:, 1:]], dim=1)
        states = linear_scan(dA, dBx, use_mambapy)
        ys.append((states @ C[:, part, :, None]).squeeze(-1))
        state = states[:, -1].clone()  # not a view: frees the states
    return (torch.cat(ys, dim=1) if len(ys) > 1 else ys[0]), state


# ---------------------------------------------------------------------------------------------
# Fused CPU kernel (numba)
# ---------------------------------------------------------------------------------------------

# numba's OpenMP threading layer takes launches from several Python threads (a demo serving two
# users); its fallback, the workqueue layer, aborts the process on that, so launches take turns.
_LAUNCH = threading.Lock()

if numba is not None:

    @njit(parallel=True, fastmath=True, cache=True)
    def _scan_forward_kernel(x, dt, A, B, C, keep, h0, y, h_last, chunks):
        batch, length, channels = x.shape
        n_state = A.shape[1]
        per_chunk = (channels + chunks - 1) // chunks
        for chunk in prange(chunks):  # each thread owns a range of channels
            h = np.empty(n_state, np.float32)
            for b in range(batch):
                for d in range(chunk * per_chunk, min(channels, (chunk + 1) * per_chunk)):
                    for n in range(n_state):
                        h[n] = h0[b, d, n]
                    for t in range(length):
                        step = dt[b, t, d]
                        u = step * x[b, t, d]
                        k = keep[b, t]
                        acc = np.float32(0.0)
                        for n in range(n_state):
                            h[n] = math.exp(step * A[d, n]) * k * h[n] + u * B[b, t, n]
                            acc += h[n] * C[b, t, n]
                        y[b, t, d] = acc
                    for n in range(n_state):
                        h_last[b, d, n] = h[n]

    @njit(parallel=True, fastmath=True, cache=True)
    def _scan_backward_kernel(x, dt, A, B, C, keep, h0, grad_y, grad_h_last,
                              grad_x, grad_dt, grad_A, grad_B_parts, grad_C_parts, grad_h0, chunks):
        batch, length, channels = x.shape
        n_state = A.shape[1]
        per_chunk = (channels + chunks - 1) // chunks
        for chunk in prange(chunks):
            states = np.empty((length, n_state), np.float32)
            decays = np.empty((length, n_state), np.float32)
            g = np.empty(n_state, np.float32)  # dLoss/dh_t flowing back from later tokens
            for b in range(batch):
                for d in range(chunk * per_chunk, min(channels, (chunk + 1) * per_chunk)):
                    for t in range(length):  # recompute this channel's states
                        step = dt[b, t, d]
                        u = step * x[b, t, d]
                        k = keep[b, t]
                        for n in range(n_state):
                            a = math.exp(step * A[d, n]) * k
                            decays[t, n] = a
                            previous = states[t - 1, n] if t > 0 else h0[b, d, n]
                            states[t, n] = a * previous + u * B[b, t, n]
                    for n in range(n_state):
                        g[n] = grad_h_last[b, d, n]
                    for t in range(length - 1, -1, -1):
                        step = dt[b, t, d]
                        xv = x[b, t, d]
                        gy = grad_y[b, t, d]
                        g_step = np.float32(0.0)
                        g_x = np.float32(0.0)
                        for n in range(n_state):
                            gh = g[n] + gy * C[b, t, n]
                            grad_C_parts[chunk, b, t, n] += gy * states[t, n]
                            previous = states[t - 1, n] if t > 0 else h0[b, d, n]
                            a = decays[t, n]
                            g_exponent = gh * previous * a  # d/d(step * A) of a * previous
                            g_step += g_exponent * A[d, n] + gh * xv * B[b, t, n]
                            grad_A[d, n] += g_exponent * step
                            g_x += gh * step * B[b, t, n]
                            grad_B_parts[chunk, b, t, n] += gh * step * xv
                            g[n] = gh * a
                        grad_dt[b, t, d] = g_step
                        grad_x[b, t, d] = g_x
                    for n in range(n_state):
                        grad_h0[b, d, n] = g[n]


def cpu_kernel_scan(x, dt, A, B, C, resets, initial_state):
    """The scan as the fused numba kernel (CPU tensors; differentiable)."""
    keep = x.new_ones(x.shape[:2]) if resets is None else (~resets).to(x.dtype)
    return _FusedCpuScan.apply(x, dt, A, B, C, keep, initial_state)


def _threads() -> int:
    """Threads for one kernel launch: as many as torch uses (so that torchrun's one thread per
    process, or a user's ``torch.set_num_threads``, holds for the scan too)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


class _FusedCpuScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, keep, h0):
        inputs = [t.detach().float().contiguous() for t in (x, dt, A, B, C, keep, h0)]
        y = torch.empty_like(inputs[0])
        h_last = torch.empty_like(inputs[-1])
        with _LAUNCH:
            threads = _threads()
            numba.set_num_threads(threads)
            _scan_forward_kernel(*[t.numpy() for t in inputs], y.numpy(), h_last.numpy(), threads)
        ctx.save_for_backward(*inputs)
        return y, h_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        x, dt, A, B, C, keep, h0 = ctx.saved_tensors
        grad_y = torch.zeros_like(x) if grad_y is None else grad_y.float().contiguous()
        grad_h_last = torch.zeros_like(h0) if grad_h_last is None else grad_h_last.float().contiguous()
        grad_x, grad_dt, grad_h0 = torch.empty_like(x), torch.empty_like(dt), torch.empty_like(h0)
        grad_A = torch.zeros_like(A)
        with _LAUNCH:
            threads = _threads()
            numba.set_num_threads(threads)
            # B and C are shared by all channels: each thread sums its channels' share apart
            grad_B_parts = B.new_zeros((threads, *B.shape))
            grad_C_parts = C.new_zeros((threads, *C.shape))
            _scan_backward_kernel(*[t.numpy() for t in (x, dt, A, B, C, keep, h0, grad_y, grad_h_last, grad_x, grad_dt,
                                                        grad_A, grad_B_parts, grad_C_parts, grad_h0)], threads)
        return grad_x, grad_dt, grad_A, grad_B_parts.sum(0), grad_C_parts.sum(0), None, grad_h0
