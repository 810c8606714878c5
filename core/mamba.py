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
(a fused numba kernel on the CPU, mambapy's parallel scan elsewhere), computed in float32 whatever
the weights' dtype (transformers' own pure-torch path fails in bfloat16), and defers to the parent
only where the parent runs the mamba-ssm / causal-conv1d CUDA kernels on a plain full-sequence
forward. Both fixes are exact rewrites of the recurrence ``h_t = dA_t * h_{t-1} + dBx_t``: an
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

from longllava.core.selective_scan import selective_scan


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
        # transformers' mixer reads `dt_proj.weight` directly, which would bypass an adapter (LoRA)
        # wrapped around dt_proj; such layers always take the path below, which calls the module.
        adapted = type(self.dt_proj) is not torch.nn.Linear
        kernels = hidden_states.is_cuda and is_mamba_ssm_available() and is_causal_conv1d_available()
        if kernels and not continuing and resets is None and not adapted:
            return super().forward(hidden_states, cache=cache, attention_mask=attention_mask)
        if continuing and resets is not None:
            raise ValueError("packed samples (position_ids restarting at 0) cannot continue a cached state")
        return self._scan_forward(hidden_states, cache, attention_mask, initial_state, resets)

    def _scan_forward(self, hidden_states, cache, attention_mask, initial_state, resets):
        batch, seq_len, _ = hidden_states.shape
        dtype = hidden_states.dtype
        kernel = self.conv_kernel_size
        hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
        x, gate = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)  # (B, D, L) each

        # Causal depthwise conv over [context, x]: context is the cached tail of the previous chunk.
        if cache is not None:
            full = cache.update_conv_state(x, self.layer_idx, conv_kernel_size=kernel)
            context = full[..., : full.shape[-1] - seq_len]
        else:
            context = x[..., :0]
        context = F.pad(context, (max(0, kernel - 1 - context.shape[-1]), 0))[..., -(kernel - 1) :]
        windows = torch.cat([context, x], dim=-1).unfold(-1, kernel, 1)  # (B, D, L, K)
        if resets is not None:
            # tap j of window t reads position t-(K-1)+j; it must belong to the same packed sample
            segment = resets.long().cumsum(-1)  # (B, L)
            padded = F.pad(segment, (kernel - 1, 0), value=-1)
            taps = padded.unfold(-1, kernel, 1)  # (B, L, K)
            windows = windows * (taps == segment[..., None]).unsqueeze(1).to(windows.dtype)
        x = (windows * self.conv1d.weight.squeeze(1)[None, :, None, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias[None, :, None]
        x = self.act(x)

        x = apply_mask_to_padding_states(x.transpose(1, 2), attention_mask)  # (B, L, D)
        time_step, B, C = torch.split(
            self.x_proj(x), [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1
        )
        time_step = self.dt_layernorm(time_step)
        B = self.b_layernorm(B).float()
        C = self.c_layernorm(C).float()
        dt = F.softplus(self.dt_proj(time_step).float())  # (B, L, D)
        x = x.float()
        A = -torch.exp(self.A_log.float())  # (D, N)
        state = None if initial_state is None else initial_state.float()
        y, state = selective_scan(x, dt, A, B, C, resets, state, self.use_mambapy)
        y = y + x * self.D.float()
        y = y * F.silu(gate.transpose(1, 2).float())
        if cache is not None:
            cache.update_recurrent_state(state.to(initial_state.dtype if initial_state is not None else dtype), self.layer_idx)
        return self.out_proj(y.to(dtype))


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
