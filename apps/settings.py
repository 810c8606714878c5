"""Launch settings shared by both demos (no Gradio import: the CLI checks them before loading anything)."""

from __future__ import annotations

from dataclasses import dataclass

from longllava.apps.uploads import MB
from longllava.errors import InputError


@dataclass
class DemoSettings:
    host: str = "127.0.0.1"  # this machine only unless asked
    port: int | None = None  # None: Gradio's first free port from 7860
    max_upload_mb: float = 2048
    concurrency: int = 1  # model runs (and loads) at once; more requests wait in the queue
    share: bool = False  # a public gradio.live link only when asked for

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise InputError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, got {self.concurrency}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)
