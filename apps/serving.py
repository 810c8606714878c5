"""What both demos share: the research notice, errors shown as messages, the model loading in the
background while the page is already served, launching."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr

from longllava.apps.sessions import SessionStore
from longllava.apps.settings import DemoSettings
from longllava.errors import InputError

log = logging.getLogger("longllava.apps")

RESEARCH_NOTICE = (
    "**Research tool, not for diagnosis.** Answers come from an experimental model and may be wrong; "
    "never use them for clinical decisions. Uploads are processed in a temporary folder of your "
    "session, removed when you close the page."
)
# Files Gradio renders for the page (slices, overlays) are dropped from its cache after an hour.
CACHE_CLEANUP = (600, 3600)


@contextmanager
def shown_errors(sessions: SessionStore, action: str) -> Iterator[None]:
    """Turn failures into a message in the page (``gr.Error``), never a stack trace: loader
    errors as they are worded (server folders left out), anything else named and logged."""
    try:
        yield
    except gr.Error:
        raise
    except InputError as error:
        message = sessions.strip_paths(str(error))
        log.info("cannot %s: %s", action, message)
        raise gr.Error(message, title=f"Cannot {action}", print_exception=False) from None
    except Exception as error:
        log.exception("cannot %s", action)
        message = sessions.strip_paths(f"{type(error).__name__}: {error}")
        raise gr.Error(message, title=f"Cannot {action}", print_exception=False) from None


class ModelLoader:
    """The demo's model, loaded in a background thread so that the page is served at once: it says
    "loading the model ..." until the model is ready (``status``); a handler that needs the model
    waits for it (``get``), and a failed load is shown as the reason."""

    def __init__(self, load: Callable[[], Any], name: str):
        self.name = name
        self._loaded = threading.Event()
        self._llava: Any = None
        self._error: str | None = None
        threading.Thread(target=self._load, args=(load,), name=f"load model {name}", daemon=True).start()

    def _load(self, load: Callable[[], Any]) -> None:
        try:
            self._llava = load()
        except InputError as error:  # shown on the page and to every handler; the server stays up
            log.error("cannot load the model %s: %s", self.name, error)
            self._error = str(error)
        except Exception as error:
            log.exception("cannot load the model %s", self.name)
            self._error = f"{type(error).__name__}: {error}"
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def status(self) -> str:
        if not self.ready:
            return f"⏳ loading the model ({self.name}) ..."
        if self._error is not None:
            return f"**The model ({self.name}) could not be loaded**: {self._error}"
        return f"model: {self.name}"

    def get(self, progress: Callable[..., Any] | None = None):
        """The loaded :class:`~longllava.core.pipeline.LongLlava`, once it is there."""
        if not self.ready and progress is not None:
            progress(0.0, desc="loading the model ...")
        self._loaded.wait()
        if self._error is not None:
            raise InputError(f"the model ({self.name}) could not be loaded: {self._error}")
        return self._llava


def model_status(model: ModelLoader, app: gr.Blocks) -> gr.Markdown:
    """A status line (in ``app``'s layout, where it is called) that says "loading the model ..."
    until the model is ready: refreshed on each page load and each second until then (a timer that
    stops itself)."""
    status = gr.Markdown(model.status(), elem_id="model-status")
    timer = gr.Timer(1.0, active=not model.ready)

    def refresh():
        return model.status(), gr.Timer(active=not model.ready)

    quick = dict(concurrency_limit=None, show_progress="hidden")  # never queued behind a model run
    app.load(refresh, None, [status, timer], api_name="model_status", **quick)
    timer.tick(refresh, None, [status, timer], api_visibility="private", **quick)
    return status


def launch(app: gr.Blocks, settings: DemoSettings, *, block: bool = True) -> str:
    """Serve ``app`` with a request queue (``settings.concurrency`` model runs at once); returns the
    local URL. ``block=False`` returns at once and leaves the server running (``app.close()``)."""
    app.queue(default_concurrency_limit=settings.concurrency)
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        max_file_size=settings.max_upload_bytes,
        prevent_thread_lock=not block,
        show_error=False,
        ssr_mode=False,
        quiet=not block,
    )
    return app.local_url
