"""What both demos share: the research notice, errors shown as messages, launching."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

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
