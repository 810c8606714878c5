"""What chunked prefill and packed training need from Jamba's Mamba layers.

transformers' ``JambaMambaMixer`` restarts the selective scan from a zero state for every
multi-token forward: it carries the *conv* context across a cache, but not the SSM state. That is
right for one-shot prefill and single-token decoding, and wrong for

* chunked prefill (a 1000-image prompt fed in pieces so activation memory stays bounded): chunk
  k+1 must start from the SSM state chunk k ended with;
* packed training (several samples in one row, ``position_ids`` restarting at 0 for each): state
  and conv context must not flow from one sample into the next;
* LoRA on ``dt_proj``: the parent multiplies by ``dt_proj.weight`` instead of calling the module,
  which silently skips the adapter.

``StatefulMambaMixer`` handles those cases with :func:`longllava.core.selective_scan.selective_scan`
(a fused numba kernel on the CPU, fused Triton kernels on CUDA, mambapy's parallel scan elsewhere)
and :func:`causal_conv` (a Triton kernel on CUDA), computed in float32 whatever the weights' dtype
(transformers' own pure-torch path fails in bfloat16), and defers to the parent only where the
parent runs the mamba-ssm / causal-conv1d CUDA kernels on a plain full-sequence forward or decode
step (:func:`mamba_ssm_applies`). A single token after a cached state (decoding) takes
:meth:`StatefulMambaMixer._decode_step`: matmuls plus one fused state-update kernel, with static
shapes so that a CUDA graph can capture it (:mod:`longllava.core.decode`). Both fixes are exact rewrites of the recurrence ``h_t = dA_t * h_{t-1} + dBx_t``: an
initial state enters as ``dBx_0 += dA_0 * h0`` and a sample boundary at t sets ``dA_t = 0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.models.jamba import modeling_jamba
from transformers.models.jamba.modeling_jamba import (
    JambaMambaDecoderLayer,
    JambaMambaMixer,
    apply_mask_to_padding_states,
)
from transformers.utils.import_utils import is_causal_conv1d_available, is_mamba_ssm_available

from longllava.core import selective_scan as selective_scan_module
from longllava.core.selective_scan import KERNELS_RUN, scan_kernels, selective_scan


class StatefulMambaMixer(JambaMambaMixer):
    def forward(self, hidden_states, cache=None, attention_mask=None, position_ids=None, **kwargs):
        seq_len = hidden_states.shape[1]
        initial_state = cache.get_recurrent_state(self.layer_idx) if cache is not None else None
        resets = None
        if position_ids is not None and seq_len > 1:
            starts = position_ids[..., 1:] == 0
            if bool(starts.any()):
                resets = F.pad(starts, (1, 0), value=False).expand(hidden_states.shape[0], -1)
        continuing = initial_state is not None and seq_len > 1
        decoding = initial_state is not None and seq_len == 1
        # transformers' mixer reads `dt_proj.weight` directly, which would bypass an adapter (LoRA)
        # wrapped around dt_proj; such layers always take the paths below, which call the module.
        adapted = type(self.dt_proj) is not torch.nn.Linear
        if mamba_ssm_applies(hidden_states.device) and not continuing and resets is None and not adapted:
            KERNELS_RUN["mixer:mamba-ssm"] += 1
            return super().forward(hidden_states, cache=cache, attention_mask=attention_mask)
        if continuing and resets is not None:
            raise ValueError("packed samples (position_ids restarting at 0) cannot continue a cached state")
        if decoding:
            return self._decode_step(hidden_states, cache)
        return self._scan_forward(hidden_states, cache, attention_mask, initial_state, resets)

    def _ssm_inputs(self, x):
        """x (..., D) after the conv -> (dt float32, B float32, C float32)."""
        time_step, B, C = torch.split(
            self.x_proj(x), [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1
        )
        time_step = self.dt_layernorm(time_step)
        B = self.b_layernorm(B).float()
        C = self.c_layernorm(C).float()
        return F.softplus(self.dt_proj(time_step).float()), B, C

    def _scan_forward(self, hidden_states, cache, attention_mask, initial_state, resets):
        dtype = hidden_states.dtype
        kernel = self.conv_kernel_size
        hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
        x, gate = self.in_proj(hidden_states).chunk(2, dim=-1)  # (B, L, D) each

        # Causal depthwise conv over [context, x]: context is the cached tail of the previous chunk.
        if cache is not None:
            full = cache.update_conv_state(x.transpose(1, 2), self.layer_idx, conv_kernel_size=kernel)
            context = full[..., : full.shape[-1] - x.shape[1]]
        else:
            context = x.new_zeros(x.shape[0], x.shape[2], 0)
        context = F.pad(context, (max(0, kernel - 1 - context.shape[-1]), 0))[..., -(kernel - 1) :]
        # tap j of window t reads position t-(K-1)+j; it must belong to the same packed sample
        # (the context is zeros unless continuing, and a continued chunk has no resets)
        segments = None if resets is None else F.pad(resets.long().cumsum(-1), (kernel - 1, 0))
        weight = self.conv1d.weight.squeeze(1)  # (D, K)
        x = causal_conv(torch.cat([context.transpose(1, 2), x], dim=1), segments, weight, self.conv1d.bias)
        x = apply_mask_to_padding_states(self.act(x).to(dtype), attention_mask)  # (B, L, D)

        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())  # (D, N)
        y, state = selective_scan(x, dt, A, B, C, resets, initial_state, self.use_mambapy)
        y = y + x.float() * self.D.float()
        y = y * F.silu(gate.float())
        if cache is not None:
            cache.update_recurrent_state(state.to(initial_state.dtype if initial_state is not None else dtype), self.layer_idx)
        return self.out_proj(y.to(dtype))

    def _decode_step(self, hidden_states, cache):
        """One token after a cached state: the conv window rolls by one, the projections run as
        matmuls, then one fused step (state update in place + gated output). Every tensor keeps its
        shape and the cache's states their storage, so a CUDA graph can capture this step."""
        dtype = hidden_states.dtype
        x, gate = self.in_proj(hidden_states[:, 0]).chunk(2, dim=-1)  # (B, D) each
        window = cache.update_conv_state(x[..., None], self.layer_idx)[..., -self.conv_kernel_size :]
        x = (window * self.conv1d.weight.squeeze(1)).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = self.act(x).to(dtype)
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        y = mamba_step(x, dt, A, B, C, self.D.float(), gate, cache.get_recurrent_state(self.layer_idx))
        return self.out_proj(y.to(dtype))[:, None]


def mamba_ssm_applies(device: torch.device) -> bool:
    """Whether a plain full-sequence forward (no cached state to continue, no packed samples, no
    adapter on dt_proj) goes to transformers' mixer on the mamba-ssm / causal-conv1d kernels:
    on CUDA with both installed, unless another implementation is selected
    (``LONGLLAVA_MAMBA_KERNELS``, :mod:`longllava.core.selective_scan`)."""
    return (
        device.type == "cuda" and selective_scan_module.KERNELS in ("auto", "mamba-ssm")
        and is_mamba_ssm_available() and is_causal_conv1d_available()
    )


def causal_conv(xin, segments, weight, bias):
    """Depthwise causal conv: ``xin`` (B, K-1+L, D) is the context then the tokens; ``segments``
    (B, K-1+L) packed-sample ids or None; weight (D, K). Returns (B, L, D) before the activation,
    float32 from the Triton kernel, ``xin``'s dtype from the torch path."""
    kernel = weight.shape[1]
    implementation = scan_kernels(xin.device)
    if implementation == "triton":
        from longllava.core.triton_scan import triton_causal_conv

        KERNELS_RUN["conv:triton"] += 1
        if segments is None:
            segments = torch.zeros(xin.shape[:2], dtype=torch.int32, device=xin.device)
        return triton_causal_conv(xin, segments, weight, bias)
    KERNELS_RUN["conv:torch"] += 1
    windows = xin.unfold(1, kernel, 1)  # (B, L, D, K)
    if segments is not None:
        taps = segments.unfold(-1, kernel, 1)  # (B, L, K)
        windows = windows * (taps == segments[:, kernel - 1 :, None]).unsqueeze(2).to(windows.dtype)
    out = (windows * weight).sum(-1)
    return out if bias is None else out + bias


def mamba_step(x, dt, A, B, C, D, gate, state):
    """One token of the scan for (batch, D) inputs: ``state`` (batch, D, N) is updated in place and
    ``(C . h + D * x) * silu(gate)`` returned in float32."""
    if scan_kernels(x.device) == "triton":
        from longllava.core.triton_scan import triton_step

        KERNELS_RUN["step:triton"] += 1
        return triton_step(x, dt, A, B, C, D, gate, state)
    KERNELS_RUN["step:torch"] += 1
    x = x.float()
    h = torch.exp(dt[..., None] * A) * state.float() + (dt * x)[..., None] * B[:, None, :]
    state.copy_(h)
    y = (h @ C[..., None]).squeeze(-1) + D * x
    return y * F.silu(gate.float())


class PackingAwareMambaDecoderLayer(JambaMambaDecoderLayer):
    """Jamba's Mamba decoder layer, passing ``position_ids`` on so the mixer sees sample starts."""

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None, **kwargs):
        residual = hidden_states
        hidden_states = self.mamba(
            self.input_layernorm(hidden_states),
            cache=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        return residual + self.feed_forward(self.pre_ff_layernorm(hidden_states))


def init_time_steps(language_model: modeling_jamba.JambaForCausalLM, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
    """Mamba's own initialisation of the time-step projection, which transformers' Jamba init skips.

    ``dt = softplus(dt_proj(.) + bias)`` sets how fast each channel forgets. With a default Linear
    init, dt is ~0.7 and a state decays by ``exp(-0.7 * n)`` per token for n = 1..16: the Mamba
    layers of a fresh model remember one or two tokens, and a model trained from scratch has to
    unlearn that first. Mamba draws dt log-uniformly in [dt_min, dt_max] (bias = softplus^-1(dt)) and
    the weight uniformly in +-dt_rank^-0.5. Only matters for models trained from scratch; loaded
    checkpoints overwrite it."""
    for layer in language_model.model.layers:
        mixer = getattr(layer, "mamba", None)
        if mixer is None or mixer.dt_proj.weight.is_meta:
            continue
        with torch.no_grad():
            bound = mixer.time_step_rank ** -0.5
            mixer.dt_proj.weight.uniform_(-bound, bound)
            u = torch.rand(mixer.intermediate_size)
            dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
            mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus


def make_stateful(language_model: modeling_jamba.JambaForCausalLM) -> None:
    """Give every Mamba layer of ``language_model`` the chunk- and packing-aware behaviour above.

    The classes are swapped in place (same parameters, same state-dict keys), so checkpoints stay
    plain transformers Jamba checkpoints."""
    for layer in language_model.model.layers:
        if isinstance(layer, JambaMambaDecoderLayer):
            layer.__class__ = PackingAwareMambaDecoderLayer
            layer.mamba.__class__ = StatefulMambaMixer
