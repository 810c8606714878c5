"""Per-session temporary folders and data, removed when the session ends.

A session is one browser tab (or one ``gradio_client.Client``), keyed by Gradio's session hash.
Its folder and data (loaded volume, open scene, conversation) go away when the tab is closed
(the app's unload event), when the store holds more than ``max_sessions`` (least recently used
first), and when the app stops.
"""

from __future__ import annotations

import atexit
import itertools
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Session:
    key: str
    folder: Path
    data: dict[str, Any] = field(default_factory=dict)
    _uploads: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @contextmanager
    def upload(self, kind: str) -> Iterator[Path]:
        """A new folder for one upload of ``kind`` (``ct``, ``scene``...). If the block succeeds the
        earlier uploads of that kind are removed; if it fails this one is, and what was loaded
        before stays usable."""
        folder = self.folder / f"{kind}-{next(self._uploads):04d}"
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        for earlier in self.folder.glob(f"{kind}-*"):
            if earlier != folder:
                shutil.rmtree(earlier, ignore_errors=True)

    def replace(self, name: str, value: Any) -> None:
        """Set ``data[name]``, closing what it held before (an open scene)."""
        _close_value(self.data.get(name))
        self.data[name] = value

    def close(self) -> None:
        for value in self.data.values():
            _close_value(value)
        self.data.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _close_value(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


class SessionStore:
    """Sessions of one app under one temporary root folder."""

    def __init__(self, name: str, max_sessions: int = 64):
        self.root = Path(tempfile.mkdtemp(prefix=f"longllava-{name}-"))
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._folders = re.compile(re.escape(str(self.root)) + r"/session-\d+/(?:[^/\s:]+/)*")
        atexit.register(self.close_all)

    def get(self, key: str) -> Session:
        """The session for ``key``, created on first use (its folder too)."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                folder = self.root / f"session-{next(self._numbers):04d}"
                folder.mkdir(parents=True)
                session = self._sessions[key] = Session(key, folder)
            self._sessions.move_to_end(key)
            evicted = [self._sessions.popitem(last=False)[1] for _ in range(len(self._sessions) - self.max_sessions)]
        for old in evicted:
            old.close()
        return session

    def close(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def strip_paths(self, text: str) -> str:
        """``text`` with the server's session folders left out of file paths (``.../scan.zip`` ->
        ``scan.zip``): messages name the user's files, not where the server keeps them."""
        return self._folders.sub("", text)

    def __len__(self) -> int:
        return len(self._sessions)
