"""Triton kernels for Jamba's Mamba layers on a GPU: the selective scan (forward and backward), the
depthwise causal conv with a cached context and packed-sample resets, and the single-token step of
decoding.

Same contract as the numba CPU kernel in :mod:`longllava.core.selective_scan`: float32 state and
accumulation whatever the inputs' dtype (fp32 / bf16 / fp16), an initial state, ``keep`` = 0 where
a packed sample starts (the state is cut before that token), the last state returned, any length.

Scan layout: one program owns ``BLOCK_D`` channels of one sample and walks the tokens with the
(BLOCK_D, N) state in registers; nothing of size (batch, tokens, D, N) is ever written. For the
backward, the forward also writes the state at the start of every ``CHUNK`` tokens (a 1/CHUNK
subsample, (batch, tokens / CHUNK, D, N)); the backward walks the chunks from the last, recomputes
each chunk's states from its checkpoint into a per-program scratch of CHUNK states and runs the
adjoint recurrence back through it. Gradients of the shared inputs (A, and B, C which all channels
read) are summed across programs with atomic adds in float32.

This module imports triton; :mod:`longllava.core.selective_scan` imports it only when the triton
backend is selected, so CPU-only installs never need triton. Under ``TRITON_INTERPRET=1`` (set
before this module is imported) the kernels run on CPU tensors, which is how CI tests them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tokens between two saved states (the backward's checkpoints): the checkpoints take 1/CHUNK of the
# full states and the backward's scratch CHUNK states per program; 64 balances both at 16K tokens.
CHUNK = 64
# Channels per program. 16 x 16 float32 states fit in registers on every GPU triton supports; the
# feasibility measurement (docs/gpu.md) found 16 the fastest of 16 / 32 / 128 for the forward.
BLOCK_D = 16


@triton.jit
def _channel_tile(channels, n_state, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's channels (axis 1 of the grid) and states, with their in-range masks."""
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    d_ok = d < channels
    n_ok = n < n_state
    return d, n, d_ok, n_ok, d_ok[:, None] & n_ok[None, :]


@triton.jit
def _scan_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, keep_ptr, h0_ptr, y_ptr, h_last_ptr, ckpt_ptr,
    length, channels, n_state, n_chunks,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, SAVE: tl.constexpr,
):
    b = tl.program_id(0)
    d, n, d_ok, n_ok, dn_ok = _channel_tile(channels, n_state, BLOCK_D, BLOCK_N)
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
    state_offsets = d[:, None] * n_state + n[None, :]
    h = tl.load(h0_ptr + b * channels * n_state + state_offsets, mask=dn_ok, other=0.0).to(tl.float32)
    row = b * length * channels  # (batch, tokens, D) tensors
    bc_row = b * length * n_state  # (batch, tokens, N) tensors
    for t in range(length):
        if SAVE:
            if t % CHUNK == 0:
                chunk_base = (b * n_chunks + t // CHUNK) * channels * n_state
                tl.store(ckpt_ptr + chunk_base + state_offsets, h, mask=dn_ok)
        x = tl.load(x_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
        step = tl.load(dt_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + bc_row + t * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_row + t * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
        keep = tl.load(keep_ptr + b * length + t).to(tl.float32)
        h = tl.exp(step[:, None] * A) * keep * h + (step * x)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        tl.store(y_ptr + row + t * channels + d, y, mask=d_ok)
    tl.store(h_last_ptr + b * channels * n_state + state_offsets, h, mask=dn_ok)


@triton.jit
def _scan_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, keep_ptr, ckpt_ptr, grad_y_ptr, grad_h_last_ptr,
    grad_x_ptr, grad_dt_ptr, grad_A_ptr, grad_B_ptr, grad_C_ptr, grad_h0_ptr, scratch_ptr,
    length, channels, n_state, n_chunks,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    block = tl.program_id(1)
    d, n, d_ok, n_ok, dn_ok = _channel_tile(channels, n_state, BLOCK_D, BLOCK_N)
    state_offsets = d[:, None] * n_state + n[None, :]
    A = tl.load(A_ptr + state_offsets, mask=dn_ok, other=0.0).to(tl.float32)
    # dLoss/dh_t flowing back from later tokens, starting from the last state's gradient
    g = tl.load(grad_h_last_ptr + b * channels * n_state + state_offsets, mask=dn_ok, other=0.0).to(tl.float32)
    grad_A = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    row = b * length * channels
    bc_row = b * length * n_state
    # this program's scratch: CHUNK states of (BLOCK_D, BLOCK_N)
    scratch = scratch_ptr + (b * tl.num_programs(1) + block) * CHUNK * BLOCK_D * BLOCK_N
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :]
    for i in range(n_chunks):
        chunk = n_chunks - 1 - i
        start = chunk * CHUNK
        stop = tl.minimum(start + CHUNK, length)
        h_start = tl.load(ckpt_ptr + (b * n_chunks + chunk) * channels * n_state + state_offsets, mask=dn_ok, other=0.0)
        h = h_start
        for t in range(start, stop):  # recompute this chunk's states
            x = tl.load(x_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
            step = tl.load(dt_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
            Bt = tl.load(B_ptr + bc_row + t * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
            keep = tl.load(keep_ptr + b * length + t).to(tl.float32)
            h = tl.exp(step[:, None] * A) * keep * h + (step * x)[:, None] * Bt[None, :]
            tl.store(scratch + (t - start) * BLOCK_D * BLOCK_N + tile, h)
        tl.debug_barrier()
        for j in range(start, stop):  # the adjoint recurrence, last token first
            t = stop - 1 - (j - start)
            x = tl.load(x_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
            step = tl.load(dt_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
            Bt = tl.load(B_ptr + bc_row + t * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + bc_row + t * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
            keep = tl.load(keep_ptr + b * length + t).to(tl.float32)
            gy = tl.load(grad_y_ptr + row + t * channels + d, mask=d_ok, other=0.0).to(tl.float32)
            h = tl.load(scratch + (t - start) * BLOCK_D * BLOCK_N + tile)
            if t > start:
                previous = tl.load(scratch + (t - 1 - start) * BLOCK_D * BLOCK_N + tile)
            else:
                previous = h_start
            decay = tl.exp(step[:, None] * A) * keep
            gh = g + gy[:, None] * Ct[None, :]
            g_exponent = gh * previous * decay  # d/d(step * A) of decay * previous
            grad_A += g_exponent * step[:, None]
            g_step = tl.sum(g_exponent * A + gh * x[:, None] * Bt[None, :], axis=1)
            g_x = tl.sum(gh * step[:, None] * Bt[None, :], axis=1)
            tl.store(grad_dt_ptr + row + t * channels + d, g_step, mask=d_ok)
            tl.store(grad_x_ptr + row + t * channels + d, g_x, mask=d_ok)
            tl.atomic_add(grad_C_ptr + bc_row + t * n_state + n, tl.sum(gy[:, None] * h, axis=0), mask=n_ok)
            tl.atomic_add(grad_B_ptr + bc_row + t * n_state + n, tl.sum(gh * (step * x)[:, None], axis=0), mask=n_ok)
            g = gh * decay
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(grad_h0_ptr + b * channels * n_state + state_offsets, g, mask=dn_ok)
    tl.atomic_add(grad_A_ptr + state_offsets, grad_A, mask=dn_ok)


def _launch_shape(x: torch.Tensor, A: torch.Tensor):
    batch, length, channels = x.shape
    n_state = A.shape[1]
    return batch, length, channels, n_state, triton.cdiv(length, CHUNK), triton.next_power_of_2(n_state)


class TritonScan(torch.autograd.Function):
    """(x, dt, A, B, C, keep, h0) -> (y float32, last state float32); see the module docstring."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, keep, h0):
        x, dt, B, C = (t.contiguous() for t in (x, dt, B, C))
        A, keep, h0 = A.float().contiguous(), keep.float().contiguous(), h0.float().contiguous()
        batch, length, channels, n_state, n_chunks, block_n = _launch_shape(x, A)
        y = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        h_last = torch.empty_like(h0)
        save = any(ctx.needs_input_grad)
        checkpoints = torch.empty((batch, n_chunks if save else 1, channels, n_state), dtype=torch.float32, device=x.device)
        grid = (batch, triton.cdiv(channels, BLOCK_D))
        _scan_fwd_kernel[grid](
            x, dt, A, B, C, keep, h0, y, h_last, checkpoints, length, channels, n_state, n_chunks,
            CHUNK=CHUNK, BLOCK_D=BLOCK_D, BLOCK_N=block_n, SAVE=save,
        )
        ctx.save_for_backward(x, dt, A, B, C, keep, checkpoints)
        ctx.dtypes = [t.dtype for t in (x, dt, A, B, C, h0)]
        return y, h_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        x, dt, A, B, C, keep, checkpoints = ctx.saved_tensors
        batch, length, channels, n_state, n_chunks, block_n = _launch_shape(x, A)
        grad_y = torch.zeros_like(x, dtype=torch.float32) if grad_y is None else grad_y.float().contiguous()
        grad_h_last = (torch.zeros((batch, channels, n_state), dtype=torch.float32, device=x.device)
                       if grad_h_last is None else grad_h_last.float().contiguous())
        grad_x = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        grad_dt = torch.empty_like(grad_x)
        grad_A = torch.zeros_like(A)
        grad_B = torch.zeros(B.shape, dtype=torch.float32, device=x.device)
        grad_C = torch.zeros_like(grad_B)
        grad_h0 = torch.empty_like(grad_h_last)
        blocks = triton.cdiv(channels, BLOCK_D)
        scratch = torch.empty(batch * blocks * CHUNK * BLOCK_D * block_n, dtype=torch.float32, device=x.device)
        _scan_bwd_kernel[(batch, blocks)](
            x, dt, A, B, C, keep, checkpoints, grad_y, grad_h_last,
            grad_x, grad_dt, grad_A, grad_B, grad_C, grad_h0, scratch,
            length, channels, n_state, n_chunks, CHUNK=CHUNK, BLOCK_D=BLOCK_D, BLOCK_N=block_n,
        )
        grads = [g.to(dtype) for g, dtype in zip((grad_x, grad_dt, grad_A, grad_B, grad_C, grad_h0), ctx.dtypes)]
        return (*grads[:5], None, grads[5])


def triton_scan(x, dt, A, B, C, resets, initial_state):
    """The selective scan on the Triton kernels (differentiable), same arguments as
    :func:`longllava.core.selective_scan.cpu_kernel_scan`."""
    keep = x.new_ones(x.shape[:2], dtype=torch.float32) if resets is None else (~resets).float()
    return TritonScan.apply(x, dt, A, B, C, keep, initial_state)


# ---------------------------------------------------------------------------------------------
# Depthwise causal conv with a cached context and packed-sample resets
# ---------------------------------------------------------------------------------------------

BLOCK_T = 16  # tokens per conv program
BLOCK_C = 32  # channels per conv program


@triton.jit
def _conv_fwd_kernel(
    xin_ptr, seg_ptr, w_ptr, bias_ptr, out_ptr, length, channels,
    KERNEL: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[b, t, d] = bias[d] + sum_k w[d, k] * xin[b, t + k, d] over the taps in t's sample;
    xin is (batch, K - 1 + tokens, D): the context, then the tokens."""
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    t_ok = t < length
    d_ok = d < channels
    padded = length + KERNEL - 1
    own = tl.load(seg_ptr + b * padded + t + KERNEL - 1, mask=t_ok, other=0)
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(KERNEL):
        tap_seg = tl.load(seg_ptr + b * padded + t + k, mask=t_ok, other=0)
        valid = t_ok & (tap_seg == own)
        value = tl.load(xin_ptr + (b * padded + t + k)[:, None] * channels + d[None, :],
                        mask=valid[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        weight = tl.load(w_ptr + d * KERNEL + k, mask=d_ok, other=0.0).to(tl.float32)
        acc += value * weight[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + d, mask=d_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + (b * length + t)[:, None] * channels + d[None, :], acc, mask=t_ok[:, None] & d_ok[None, :])


@triton.jit
def _conv_bwd_kernel(
    xin_ptr, seg_ptr, w_ptr, grad_out_ptr, grad_xin_ptr, grad_w_ptr, length, channels,
    KERNEL: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """grad_xin[b, s, d] = sum_k w[d, k] * grad_out[b, s - k, d] (tap valid); grad_w by atomics."""
    b = tl.program_id(0)
    s = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)  # position in xin
    d = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    d_ok = d < channels
    padded = length + KERNEL - 1
    s_ok = s < padded
    x_here = tl.load(xin_ptr + (b * padded + s)[:, None] * channels + d[None, :],
                     mask=s_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    seg_here = tl.load(seg_ptr + b * padded + s, mask=s_ok, other=0)
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(KERNEL):
        t = s - k  # the output whose tap k reads position s
        t_ok = s_ok & (t >= 0) & (t < length)
        own = tl.load(seg_ptr + b * padded + t + KERNEL - 1, mask=t_ok, other=0)
        valid = t_ok & (own == seg_here)
        g = tl.load(grad_out_ptr + (b * length + t)[:, None] * channels + d[None, :],
                    mask=valid[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        weight = tl.load(w_ptr + d * KERNEL + k, mask=d_ok, other=0.0).to(tl.float32)
        acc += g * weight[None, :]
        tl.atomic_add(grad_w_ptr + d * KERNEL + k, tl.sum(g * x_here, axis=0), mask=d_ok)
    tl.store(grad_xin_ptr + (b * padded + s)[:, None] * channels + d[None, :], acc, mask=s_ok[:, None] & d_ok[None, :])


class TritonCausalConv(torch.autograd.Function):
    """(xin (B, K-1+L, D), segments (B, K-1+L) int32, weight (D, K), bias (D,) or None) ->
    float32 (B, L, D) pre-activation conv output."""

    @staticmethod
    def forward(ctx, xin, segments, weight, bias):
        xin, segments, weight = xin.contiguous(), segments.to(torch.int32).contiguous(), weight.contiguous()
        batch, padded, channels = xin.shape
        kernel = weight.shape[1]
        length = padded - kernel + 1
        out = torch.empty((batch, length, channels), dtype=torch.float32, device=xin.device)
        grid = (batch, triton.cdiv(length, BLOCK_T), triton.cdiv(channels, BLOCK_C))
        _conv_fwd_kernel[grid](
            xin, segments, weight, weight if bias is None else bias.contiguous(), out, length, channels,
            KERNEL=kernel, HAS_BIAS=bias is not None, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
        )
        ctx.save_for_backward(xin, segments, weight)
        ctx.has_bias, ctx.bias_dtype = bias is not None, None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xin, segments, weight = ctx.saved_tensors
        batch, padded, channels = xin.shape
        kernel = weight.shape[1]
        length = padded - kernel + 1
        grad_out = grad_out.float().contiguous()
        grad_xin = torch.empty(xin.shape, dtype=torch.float32, device=xin.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=xin.device)
        grid = (batch, triton.cdiv(padded, BLOCK_T), triton.cdiv(channels, BLOCK_C))
        _conv_bwd_kernel[grid](
            xin, segments, weight, grad_out, grad_xin, grad_w, length, channels,
            KERNEL=kernel, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
        )
        grad_bias = grad_out.sum((0, 1)).to(ctx.bias_dtype) if ctx.has_bias else None
        return grad_xin.to(xin.dtype), None, grad_w.to(weight.dtype), grad_bias


def triton_causal_conv(xin, segments, weight, bias):
    return TritonCausalConv.apply(xin, segments, weight, bias)


# ---------------------------------------------------------------------------------------------
# One decoding step: SSM state update + output, in place
# ---------------------------------------------------------------------------------------------


@triton.jit
def _step_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, state_ptr, y_ptr, channels, n_state,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    d, n, d_ok, n_ok, dn_ok = _channel_tile(channels, n_state, BLOCK_D, BLOCK_N)
    state_offsets = b * channels * n_state + d[:, None] * n_state + n[None, :]
    h = tl.load(state_ptr + state_offsets, mask=dn_ok, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + d[:, None] * n_state + n[None, :], mask=dn_ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * channels + d, mask=d_ok, other=0.0).to(tl.float32)
    step = tl.load(dt_ptr + b * channels + d, mask=d_ok, other=0.0).to(tl.float32)
    Bt = tl.load(B_ptr + b * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + b * n_state + n, mask=n_ok, other=0.0).to(tl.float32)
    h = tl.exp(step[:, None] * A) * h + (step * x)[:, None] * Bt[None, :]
    tl.store(state_ptr + state_offsets, h.to(state_ptr.dtype.element_ty), mask=dn_ok)
    skip = tl.load(D_ptr + d, mask=d_ok, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + b * channels + d, mask=d_ok, other=0.0).to(tl.float32)
    y = (tl.sum(h * Ct[None, :], axis=1) + skip * x) * (z * tl.sigmoid(z))
    tl.store(y_ptr + b * channels + d, y, mask=d_ok)


def triton_step(x, dt, A, B, C, D, z, state):
    """One token: ``state`` (batch, D, N) is updated in place; returns float32
    ``(C . h + D * x) * silu(z)`` of shape (batch, D). x, dt, z: (batch, D); B, C: (batch, N)."""
    batch, channels = x.shape
    n_state = A.shape[1]
    y = torch.empty((batch, channels), dtype=torch.float32, device=x.device)
    grid = (batch, triton.cdiv(channels, BLOCK_D))
    _step_kernel[grid](
        x.contiguous(), dt.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), D.contiguous(),
        z.contiguous(), state, y, channels, n_state, BLOCK_D=BLOCK_D, BLOCK_N=triton.next_power_of_2(n_state),
    )
    return y
