"""``LongLlavaConfig``: CLIP vision config + Jamba text config + the vision-path settings.

Presets describe the released shapes (``longllava-9b``, ``longllava-a13b``) and a ``tiny-random``
model of the same architecture (hybrid 1:7 attention:Mamba, MoE every other layer, CLIP grid of
24x24 patches) that runs on a laptop CPU.
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, JambaConfig, PretrainedConfig

POOLING_MODES = ("2d", "1d", "none")
CLIP_GRID = 24  # ViT-L/14 at 336 px: 24 x 24 patches


class LongLlavaConfig(PretrainedConfig):
    """Configuration of :class:`~longllava.core.modeling.LongLlavaForConditionalGeneration`.

    Args:
        vision_config: ``CLIPVisionConfig`` (dict or object) of the vision tower.
        text_config: ``JambaConfig`` (dict or object) of the hybrid language model.
        image_token_id: id written by the processor at every image-token position. It lies *outside*
            the text vocabulary (default ``vocab_size``), as the released models have no image token;
            those positions are replaced by projected image features before the LM sees them.
        vision_feature_layer: CLIP hidden state to use (paper: -2).
        pooling: ``"2d"`` (2x2 average on the 24x24 grid -> 144 tokens, the paper's choice), ``"1d"``
            (the reference's linear resampling along raster order -> 144) or ``"none"`` (576).
        image_encode_batch_size: images per CLIP forward; bounds memory for 1000-image inputs.
        max_sequence_length: longest accepted input (tokens incl. image tokens); longer input raises.
            A user's limit, not a trained length (the LM has no positional embeddings); the
            practical limit is memory, estimated before each prompt (:mod:`.generation`).
        prefill_chunk_size: tokens per prefill chunk (Mamba state carried between chunks).
    """

    model_type = "longllava"
    sub_configs = {"text_config": JambaConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        vision_config: dict | CLIPVisionConfig | None = None,
        text_config: dict | JambaConfig | None = None,
        image_token_id: int | None = None,
        vision_feature_layer: int = -2,
        pooling: str = "2d",
        projector_hidden_act: str = "gelu",
        image_encode_batch_size: int = 16,
        max_sequence_length: int = 262144,
        prefill_chunk_size: int = 8192,
        **kwargs,
    ):
        if isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**vision_config)
        if isinstance(text_config, dict):
            text_config = JambaConfig(**text_config)
        self.vision_config = vision_config if vision_config is not None else CLIPVisionConfig()
        self.text_config = text_config if text_config is not None else JambaConfig()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.image_token_id = self.text_config.vocab_size if image_token_id is None else image_token_id
        self.vision_feature_layer = vision_feature_layer
        self.pooling = pooling
        self.projector_hidden_act = projector_hidden_act
        self.image_encode_batch_size = image_encode_batch_size
        self.max_sequence_length = max_sequence_length
        self.prefill_chunk_size = prefill_chunk_size
        super().__init__(**kwargs)

    @property
    def patch_grid(self) -> int:
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def image_seq_length(self) -> int:
        """LM tokens per image after pooling (144 for the paper's 24x24 grid and 2D pooling)."""
        grid = self.patch_grid
        return grid * grid if self.pooling == "none" else (grid // 2) * (grid // 2)


# The hybrid layout shared by every preset: attention at layer 4 of each 8 (1:7), MoE on odd layers.
_HYBRID_LAYOUT = dict(
    attn_layer_period=8, attn_layer_offset=4, expert_layer_period=2, expert_layer_offset=1,
    mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, max_position_embeddings=262144,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, use_mambapy=True,
)


def _released_text_config(num_experts: int, vocab_size: int = 65536) -> JambaConfig:
    return JambaConfig(
        vocab_size=vocab_size, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, num_experts=num_experts,
        num_experts_per_tok=2 if num_experts > 1 else 1, mamba_dt_rank=256, **_HYBRID_LAYOUT,
    )


def _clip_vision(hidden: int, intermediate: int, layers: int, heads: int, projection: int) -> CLIPVisionConfig:
    """A CLIP ViT with the released models' input geometry: 336 px in 14 px patches (24 x 24)."""
    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
        image_size=336, patch_size=14, projection_dim=projection, hidden_act="quick_gelu",
    )


def tiny_config(vocab_size: int, mamba_d_state: int = 16) -> LongLlavaConfig:
    """Same architecture as the released models at toy widths: 8 layers (attention at layer 4, Mamba
    elsewhere), MoE with 4 experts top-2 on odd layers, CLIP with the real 24x24 patch grid.
    ``mamba_d_state``: the SSM state per channel (16 as released; the default model uses 8)."""
    hidden = 64
    text = JambaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=128, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
        mamba_dt_rank=8, **{**_HYBRID_LAYOUT, "mamba_d_state": mamba_d_state},
        # Jamba's default std 0.02 suits 4096-wide layers (~1/sqrt(width)); at width 64 it shrinks
        # every projection's output ~6x, so a fresh Mamba layer's output is ~1/300 of the residual
        # stream and nothing of an image reaches the answer position: a model trained from scratch
        # could not even fit 16 images. 1/sqrt(width) keeps signals at unit scale.
        initializer_range=hidden**-0.5,
    )
    vision = _clip_vision(hidden=32, intermediate=64, layers=2, heads=2, projection=32)
    return LongLlavaConfig(vision_config=vision, text_config=text, image_encode_batch_size=32)


def released_config(name: str) -> LongLlavaConfig:
    experts = {"longllava-9b": 1, "longllava-a13b": 16}[name]
    return LongLlavaConfig(
        vision_config=_clip_vision(hidden=1024, intermediate=4096, layers=24, heads=16, projection=768),
        text_config=_released_text_config(experts),
    )


PRESETS = ("tiny-random", "longllava-9b", "longllava-a13b")
