"""``LongLlavaForConditionalGeneration``: CLIP ViT -> 2D pooling -> projector -> Jamba hybrid LM.

Structured like transformers' ``modeling_llava``: one config, one model, one seam
(:meth:`get_image_features`) where the vision path plugs in. The language model is transformers'
``JambaForCausalLM`` with its Mamba layers made chunk- and packing-aware (:mod:`.mamba`).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    CLIPVisionModel,
    DynamicCache,
    JambaForCausalLM,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.masking_utils import create_recurrent_attention_mask

from longllava.core.attention import CHUNKED_SDPA
from longllava.core.configuration import LongLlavaConfig
from longllava.core.generation import GenerationSettings, generate
from longllava.core.mamba import init_time_steps, make_stateful
from longllava.errors import InputError


def pool_image_features(features: torch.Tensor, mode: str, grid: int) -> torch.Tensor:
    """(N, grid*grid, C) patch features -> (N, T, C) tokens for the projector.

    ``2d``: 2x2 average pooling on the patch grid (the reference's bilinear resize to half size is
    numerically the same). ``1d``: the reference's linear resampling along raster order (which, at
    a factor of 4, averages tokens 4i+1 and 4i+2). ``none``: all patches.
    """
    if mode == "none":
        return features
    n, tokens, channels = features.shape
    if tokens != grid * grid:
        raise ValueError(f"expected {grid * grid} patch features per image, got {tokens}")
    if mode == "2d":
        square = features.transpose(1, 2).reshape(n, channels, grid, grid)
        return F.avg_pool2d(square, kernel_size=2).flatten(2).transpose(1, 2)
    if mode == "1d":
        line = F.interpolate(features.transpose(1, 2), size=tokens // 4, mode="linear", align_corners=False)
        return line.transpose(1, 2)
    raise ValueError(f"unknown pooling mode {mode!r}")


class LongLlavaProjector(nn.Module):
    """Linear(vision -> text) GELU Linear(text -> text): the paper's 2-layer MLP projector."""

    def __init__(self, config: LongLlavaConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class LongLlavaPreTrainedModel(PreTrainedModel):
    config: LongLlavaConfig
    config_class = LongLlavaConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["JambaAttentionDecoderLayer", "JambaMambaDecoderLayer", "CLIPEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _is_stateful = True


class LongLlavaForConditionalGeneration(LongLlavaPreTrainedModel):
    def __init__(self, config: LongLlavaConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.multi_modal_projector = LongLlavaProjector(config)
        if config.text_config._attn_implementation is None:
            # Not chosen by the caller: exact chunked prefill without a (chunk x KV) mask (.attention).
            # transformers never saves the choice, so every construction and load lands here again.
            config.text_config._attn_implementation = CHUNKED_SDPA
        self.language_model = JambaForCausalLM(config.text_config)
        make_stateful(self.language_model)
        self.post_init()
        init_time_steps(self.language_model)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # -- vision path -------------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, 336, 336) -> (N, T, text hidden): CLIP layer ``vision_feature_layer``, CLS dropped,
        pooled, projected. Images go through CLIP in micro-batches of ``image_encode_batch_size``
        so a 1000-image input never runs as one CLIP batch."""
        outputs = []
        dtype = self.vision_tower.dtype
        for batch in pixel_values.split(self.config.image_encode_batch_size):
            hidden = self.vision_tower(batch.to(dtype), output_hidden_states=True).hidden_states
            patches = hidden[self.config.vision_feature_layer][:, 1:]
            pooled = pool_image_features(patches, self.config.pooling, self.config.patch_grid)
            outputs.append(self.multi_modal_projector(pooled))
        return torch.cat(outputs)

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with every image-token run replaced by that image's features.

        Each image fills exactly ``image_seq_length`` positions marked ``image_token_id``; any
        mismatch between marked positions and images raises instead of silently dropping images."""
        if input_ids.shape[-1] > self.config.max_sequence_length:
            raise InputError(
                f"input of {input_ids.shape[-1]} tokens exceeds max_sequence_length="
                f"{self.config.max_sequence_length}; use fewer images / slices / tiles"
            )
        image_mask = input_ids == self.config.image_token_id
        text_ids = input_ids.masked_fill(image_mask, self.config.text_config.pad_token_id or 0)
        embeds = self.get_input_embeddings()(text_ids)
        num_image_tokens = int(image_mask.sum())
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        per_image = self.config.image_seq_length
        if num_image_tokens != num_images * per_image:
            raise InputError(
                f"the input marks {num_image_tokens} image-token positions ({num_image_tokens / per_image:g} "
                f"images of {per_image} tokens) but {num_images} images were given; every image "
                "placeholder needs exactly one image and vice versa"
            )
        if num_images == 0:
            return embeds
        features = self.get_image_features(pixel_values).to(embeds.dtype)
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.reshape(-1, features.shape[-1]))

    # -- language model ----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_router_logits: bool | None = None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        if use_cache is None:
            # A fresh cache would also switch off packed-sequence isolation in the attention mask;
            # generation goes through `prefill`, which manages its own cache.
            use_cache = cache is not None
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            output_router_logits=output_router_logits,
            **kwargs,
        )

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ):
        """Run the prompt (ids and images, or ready ``inputs_embeds``) through the LM in chunks of
        ``chunk_size`` tokens (:meth:`prefill_chunks`). Returns the cache and the logits of the last
        position."""
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        for cache, logits, _ in self.prefill_chunks(inputs_embeds, attention_mask, chunk_size):
            pass
        return cache, logits

    @torch.no_grad()
    def prefill_chunks(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[tuple[DynamicCache, torch.Tensor, int]]:
        """Chunked prefill from embeddings, yielding (cache, last-position logits, tokens done) after
        every chunk, so a caller can time each chunk or stop early (``longllava bench model``).

        Mamba layers carry their state from chunk to chunk and only the attention layers' KV cache
        grows, so activation memory is bounded by the chunk, not the prompt."""
        chunk_size = chunk_size or self.config.prefill_chunk_size
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        cache = DynamicCache(config=self.config.text_config)
        length = inputs_embeds.shape[1]
        for start in range(0, length, chunk_size):
            end = min(length, start + chunk_size)
            logits = self.cached_step(cache, attention_mask[:, :end], inputs_embeds=inputs_embeds[:, start:end])
            yield cache, logits, end

    def cached_step(self, cache: DynamicCache, attention_mask: torch.Tensor | None = None, **inputs) -> torch.Tensor:
        """One LM forward continuing ``cache`` with ``inputs_embeds`` (a prefill chunk) or ``input_ids``
        (decoded tokens); ``attention_mask`` covers the cached and the new positions. Returns the
        logits of the last position."""
        if "attention" not in self.config.text_config.layers_block_type:
            # JambaModel sizes its causal mask from the KV cache, which a layout without attention
            # layers (the benchmark's pure-Mamba variant) lacks: hand its Mamba layers the padding
            # mask directly.
            new = next(iter(inputs.values()))
            attention_mask = {
                "linear_attention": create_recurrent_attention_mask(self.config.text_config, new, attention_mask)
            }
        out = self.language_model(
            **inputs,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            output_router_logits=False,  # no load-balancing loss at inference, whatever training set
        )
        return out.logits[:, -1]

    def greedy_generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        eos_token_id: int | None = None,
        chunk_size: int | None = None,
        static_cache: bool | None = None,
    ) -> torch.Tensor:
        """Greedy decoding (:func:`longllava.core.generation.generate` without a minimum length).
        Batches must be left-padded. Returns the new tokens (B, <= max_new_tokens); finished rows
        are filled with the pad id. ``static_cache``: preallocated buffers, the step a CUDA graph
        (default on CUDA)."""
        settings = GenerationSettings(max_new_tokens=max_new_tokens, min_new_tokens=0)
        return generate(self, input_ids, pixel_values, attention_mask, settings, eos_token_id=eos_token_id,
                        chunk_size=chunk_size, static_cache=static_cache)


AutoConfig.register("longllava", LongLlavaConfig)
AutoModelForImageTextToText.register(LongLlavaConfig, LongLlavaForConditionalGeneration)
