import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the seeded tiny-random preset, shared read-only across tests."""
    from longllava.core.checkpoint import build_preset

    return build_preset("tiny-random")


@pytest.fixture(scope="session")
def serve_demo(tiny):
    """Launch a demo app (``build_medical_app`` / ``build_remote_sensing_app``) with the tiny model on
    a free 127.0.0.1 port, as a context manager yielding a namespace (app, store, url, llava, and
    ``text(message)`` for a chat message's text); the app and its session store close on exit."""
    import socket
    from contextlib import contextmanager
    from types import SimpleNamespace

    from longllava.apps.serving import launch
    from longllava.apps.sessions import SessionStore
    from longllava.apps.settings import DemoSettings
    from longllava.core.pipeline import LongLlava

    llava = LongLlava(*tiny)

    def text(message: dict) -> str:  # gradio gives a chat message's content as a string or typed parts
        content = message["content"]
        return content if isinstance(content, str) else " ".join(part["text"] for part in content if part.get("type") == "text")

    @contextmanager
    def serve(build, name: str, max_upload_mb: int):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = SessionStore(name)
        settings = DemoSettings(port=port, max_upload_mb=max_upload_mb)
        app = build(llava, settings, sessions=store)
        try:
            yield SimpleNamespace(app=app, store=store, url=launch(app, settings, block=False), llava=llava, text=text)
        finally:
            app.close()
            store.close_all()

    return serve
