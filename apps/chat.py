"""Multi-turn questions over one set of visuals: the images go with the first turn only, later
turns add text to the history (``LongLlava.ask``'s history / history_images)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from longllava.core import protocol


@dataclass
class Conversation:
    visuals: list[protocol.Visual]
    history: list[tuple[str, str]] = field(default_factory=list)  # (rendered user message, answer)
    history_images: list[Any] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)  # which image is which, from the first turn

    @property
    def turns(self) -> int:
        return len(self.history)

    def ask(self, llava, question: str, max_new_tokens: int = 64):
        """Answer ``question``; returns the model's :class:`~longllava.core.pipeline.Answer`."""
        if self.history:
            answer = llava.ask([], question, history=self.history, history_images=self.history_images,
                               max_new_tokens=max_new_tokens)
            self.history.append((question, answer.text))
            return answer
        message = protocol.user_message(self.visuals, question)
        answer = llava.ask(self.visuals, question, max_new_tokens=max_new_tokens)
        self.history.append((message.text, answer.text))
        self.history_images = message.images
        self.trace = answer.trace
        return answer


def chat_messages(history: list[dict] | None, question: str, answer: str, footnote: str) -> list[dict]:
    """The chatbot's messages after one more turn: the question, then the answer with a footnote
    in italics (what the answer is based on, its cost)."""
    return [*(history or []), {"role": "user", "content": question},
            {"role": "assistant", "content": f"{answer}\n\n*{footnote}*"}]
