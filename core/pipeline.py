"""Question answering over visual inputs: protocol -> processor -> model -> answer + trace.

The one entry point that the CLI (`ask`), the evaluation runner and the demos share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from transformers import TextStreamer

from longllava.core import protocol
from longllava.core.checkpoint import load_model
from longllava.core.generation import GenerationSettings, generate
from longllava.core.processor import LongLlavaProcessor
from longllava.errors import InputError


@dataclass
class Answer:
    text: str
    num_images: int
    num_image_tokens: int
    num_prompt_tokens: int
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "num_images": self.num_images,
            "num_image_tokens": self.num_image_tokens,
            "num_prompt_tokens": self.num_prompt_tokens,
            "seconds": round(self.seconds, 3),
        }


class _TextCallback(TextStreamer):
    """transformers' streamer (decodes whole words, holds back incomplete characters), sending the
    text to a callback instead of printing it."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


def _settings(settings: GenerationSettings | None, max_new_tokens: int | None) -> GenerationSettings:
    settings = settings or GenerationSettings()
    return settings if max_new_tokens is None else replace(settings, max_new_tokens=max_new_tokens)


class LongLlava:
    """A loaded model with its processor."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.processor = LongLlavaProcessor.for_model(model, tokenizer)

    @classmethod
    def load(cls, spec: str, **kwargs) -> "LongLlava":
        return cls(*load_model(spec, **kwargs))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def answer_prompts(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[Any]],
        max_new_tokens: int | None = None,
        settings: GenerationSettings | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Answers for a batch of full chat prompts (placeholders + images per prompt), generated
        with ``settings`` (default: the reference's; ``max_new_tokens`` overrides its limit).
        ``on_text`` receives the answer's text piece by piece as it is generated (one prompt only)."""
        if on_text is not None and len(prompts) != 1:
            raise InputError(f"streaming answers one prompt at a time; got {len(prompts)} prompts")
        inputs = self.processor(prompts, images, padding_side="left")
        device = self.device
        streamer = None if on_text is None else _TextCallback(self.tokenizer, on_text)
        tokens = generate(
            self.model,
            inputs["input_ids"].to(device),
            inputs["pixel_values"].to(device) if inputs["pixel_values"].shape[0] else None,
            inputs["attention_mask"].to(device),
            _settings(settings, max_new_tokens),
            on_token=None if streamer is None else lambda token: streamer.put(token.cpu()),
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if streamer is not None:
            streamer.end()
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens.tolist()]

    def ask(
        self,
        visuals: Sequence[protocol.Visual],
        question: str,
        history: Sequence[tuple[str, str]] = (),
        history_images: Sequence[Any] = (),
        max_new_tokens: int | None = None,
        settings: GenerationSettings | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer ``question`` about ``visuals``. For multi-turn chat pass the earlier (user,
        assistant) turns as ``history`` (their messages already rendered, images in
        ``history_images``) and no new visuals: images are sent once, with the first turn.
        ``settings``, ``max_new_tokens`` and ``on_text`` as in :meth:`answer_prompts`."""
        start = time.perf_counter()
        message = protocol.user_message(visuals, question)
        prompt = protocol.chat_prompt(message.text, history)
        images = [*history_images, *message.images]
        ids = self.processor.tokenize(prompt)
        text = self.answer_prompts([prompt], [images], max_new_tokens, settings, on_text)[0]
        return Answer(
            text=text,
            num_images=len(images),
            num_image_tokens=len(images) * self.processor.image_seq_length,
            num_prompt_tokens=len(ids),
            seconds=time.perf_counter() - start,
            trace=message.trace,
        )
