"""Blocks the demos' sections share: the question-and-answer panel under a loaded input."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


@dataclass
class ChatPanel:
    chatbot: gr.Chatbot
    question: gr.Textbox
    ask: gr.Button
    status: gr.Markdown  # progress and failure marks of the questions
    clear: gr.Button
    tokens: gr.Slider


def chat_panel(prefix: str, placeholder: str) -> ChatPanel:
    """Chat, question box and Ask button, status line, New conversation and max new tokens, with
    element ids ``<prefix>-chat``, ``-question``, ``-ask``, ``-ask-status``, ``-tokens``."""
    chatbot = gr.Chatbot(label="questions and answers", height=300, elem_id=f"{prefix}-chat")
    with gr.Row():
        question = gr.Textbox(label="question", scale=4, elem_id=f"{prefix}-question", placeholder=placeholder)
        ask = gr.Button("Ask", variant="primary", scale=1, elem_id=f"{prefix}-ask")
    status = gr.Markdown(elem_id=f"{prefix}-ask-status", elem_classes="status")
    with gr.Row():
        clear = gr.Button("New conversation", size="sm")
        tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id=f"{prefix}-tokens")
    return ChatPanel(chatbot, question, ask, status, clear, tokens)
