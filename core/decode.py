"""Decoding with preallocated buffers, one step captured as a CUDA graph on CUDA.

The eager decode step of the 9B hybrid is launch-bound: ~2,300 kernel launches and 210 ms of wall
time per token for 8.9 ms of GPU work (docs/gpu.md). :class:`StaticDecoder` gives every tensor a
decode step touches a fixed shape and a fixed address, so that the whole step can be recorded once
as a CUDA graph and replayed for every further token:

* the attention layers' K/V: transformers' ``StaticCache`` layers, preallocated to the prompt plus
  the new tokens (``max_len``), written in place at a position counter that lives on the device;
* the Mamba layers' conv window and SSM state: fixed-size already, updated in place by
  :meth:`longllava.core.mamba.StatefulMambaMixer._decode_step` (matmuls + one fused step kernel);
* the attention mask: a (batch, 1, 1, max_len) boolean buffer of the key slots each row may see
  (the prompt minus its left padding, then every generated slot up to the current one), opened one
  slot per step on the device; the Mamba layers need no mask when decoding.

The prompt is prefilled as before (chunked, into a ``DynamicCache``, whose exact chunked attention
needs no (chunk x max_len) mask) and then moved into the static buffers layer by layer, each
dynamic layer released after its copy. On CPU (or with ``graph=False``) the same static step runs
eagerly; that is what the CPU tests compare with the dynamic-cache path. Where capture fails (e.g.
a mixture-of-experts layer whose routing reads token counts on the host), the step stays eager and
:attr:`StaticDecoder.path` says so.
"""

from __future__ import annotations

import warnings

import torch
from transformers import StaticCache
from transformers.cache_utils import LinearAttentionCacheLayerMixin


class StaticDecoder:
    """``prefill(input_ids, ...) -> logits`` then ``step(tokens) -> logits``, for one batch.

    ``model``: a :class:`~longllava.core.modeling.LongLlavaForConditionalGeneration`; ``max_len``:
    prompt tokens + new tokens (the attention K/V buffers' length); ``graph``: capture the step as
    a CUDA graph (default: on CUDA devices)."""

    def __init__(self, model, batch: int, max_len: int, device: torch.device | str, graph: bool | None = None):
        self.model = model
        self.language_model = model.language_model
        self.device = torch.device(device)
        self.max_len = max_len
        self.use_graph = self.device.type == "cuda" if graph is None else graph
        self.cache = StaticCache(config=self.language_model.config, max_cache_len=max_len)
        self.visible = torch.zeros(batch, 1, 1, max_len, dtype=torch.bool, device=self.device)
        self.slot = torch.zeros(1, dtype=torch.long, device=self.device)  # where the next token goes
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.logits: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.path = "static-graph" if self.use_graph else "static-eager"
        self.steps = 0
        self.length = 0  # tokens in the cache (host-side copy of `slot`)

    @torch.no_grad()
    def prefill(self, input_ids, pixel_values=None, attention_mask=None, chunk_size=None) -> torch.Tensor:
        """Chunked prefill of a left-padded batch; returns the logits of the last position."""
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        prompt = input_ids.shape[1]
        if prompt >= self.max_len:
            raise ValueError(f"a {prompt}-token prompt leaves no room in a {self.max_len}-token static cache")
        dynamic, logits = self.model.prefill(input_ids, pixel_values, attention_mask, chunk_size)
        self.adopt(dynamic, attention_mask)
        return logits

    def adopt(self, dynamic, attention_mask: torch.Tensor) -> None:
        """Move a prefilled DynamicCache of ``attention_mask.shape[1]`` tokens into the static
        buffers, releasing each of its layers after the copy."""
        prompt = attention_mask.shape[1]
        for static, source in zip(self.cache.layers, dynamic.layers):
            if isinstance(static, LinearAttentionCacheLayerMixin):
                conv, state = source.conv_states[0], source.recurrent_states[0]
                static.lazy_initialization(conv_states=conv, recurrent_states=state)
                static.conv_states[0].copy_(conv)
                static.recurrent_states[0].copy_(state)
                static.has_previous_state[0] = True
                static.cumulative_length_linear.fill_(prompt)
                source.conv_states[0] = source.recurrent_states[0] = None
            else:
                static.lazy_initialization(source.keys, source.values)
                static.keys[:, :, :prompt].copy_(source.keys)
                static.values[:, :, :prompt].copy_(source.values)
                static.cumulative_length.fill_(prompt)
                source.keys = source.values = None
        self.visible[:, 0, 0, :prompt] = attention_mask.bool()
        self.slot.fill_(prompt)
        self.length = prompt

    def _forward(self) -> torch.Tensor:
        """One decode step over the static buffers; only in-place updates and fixed shapes."""
        self.visible.index_fill_(3, self.slot, True)
        logits = self.language_model(
            input_ids=self.token,
            attention_mask={"full_attention": self.visible, "linear_attention": None},
            position_ids=self.slot[None],
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
            output_router_logits=False,
        ).logits[:, -1]
        self.slot.add_(1)
        return logits

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (batch,); returns the next logits (batch, vocab)."""
        if self.length >= self.max_len:
            raise ValueError(f"the static cache holds {self.max_len} tokens: no room for another step")
        self.token.copy_(tokens.view(-1, 1))
        if self.graph is not None:
            self.graph.replay()
            logits = self.logits
        elif self.use_graph and self.steps > 0:
            logits = self._capture()
        else:
            # the first step runs eagerly: it compiles the kernels and warms the allocator
            logits = self._forward()
        self.steps += 1
        self.length += 1
        return logits.clone()  # the graph's output buffer is overwritten by the next replay

    def _capture(self) -> torch.Tensor:
        """Record one step (recording runs nothing), then replay it for this step."""
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.logits = self._forward()
        except RuntimeError as error:  # e.g. a host read inside the step (MoE routing)
            warnings.warn(f"decode step not capturable as a CUDA graph, running it eagerly: {error}")
            self.path, self.use_graph, self.logits = "static-eager", False, None
            torch.cuda.synchronize(self.device)
            return self._forward()
        self.graph = graph
        graph.replay()
        return self.logits
