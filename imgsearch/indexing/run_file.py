"""How far an index run under way has got, kept in a file in the data folder so that other
processes can tell: `imgsearch status`, the web page's status and MCP's `index_status` show the
pictures found, stored and captioned, and the caption stage's rate and time left."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..private_files import write_private_text

PROGRESS_FILE = "index-run.json"
# Written at most this often (and at each change of stage): a run may store thousands a second.
_EVERY = 1.0


class RunProgressFile:
    """The progress of this process's index run, written to folder/index-run.json while it runs."""

    def __init__(self, folder: Path):
        self.path = folder / PROGRESS_FILE
        self.started_at = time.time()
        self.found = 0
        self.stored = 0
        self.to_caption = 0
        self.captioned = 0
        self.stage = "storing"
        self._captioning_since: float | None = None
        self._written = 0.0
        self._lock = threading.Lock()

    def found_files(self, count: int) -> None:
        self.found = count
        self._write(force=True)

    def add_stored(self, count: int) -> None:
        self.stored += count
        self._write()

    def start_captioning(self, count: int) -> None:
        self.stage, self.to_caption, self._captioning_since = "captioning", count, time.monotonic()
        self._write(force=True)

    def add_captioned(self, count: int) -> None:
        self.captioned += count
        self._write()

    def caption_rate(self) -> float | None:
        if self._captioning_since is None or not self.captioned:
            return None
        return self.captioned / max(time.monotonic() - self._captioning_since, 1e-6)

    def to_dict(self) -> dict[str, Any]:
        rate = self.caption_rate()
        left = max(self.to_caption - self.captioned, 0)
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "stage": self.stage,
            "found": self.found,
            "stored": self.stored,
            "to_caption": self.to_caption,
            "captioned": self.captioned,
            "caption_rate": rate,
            "eta_seconds": left / rate if rate else None,
            "updated_at": time.time(),
        }

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if _read(self.path).get("pid") == os.getpid():
                self.path.unlink()

    def _write(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._written < _EVERY:
                return
            self._written = time.monotonic()
            with contextlib.suppress(OSError):  # a full disk: status just shows no run
                write_private_text(self.path, json.dumps(self.to_dict()))


def run_under_way(folder: Path) -> dict[str, Any] | None:
    """The progress an index run of folder's data writes, while that run's process lives."""
    found = _read(folder / PROGRESS_FILE)
    pid = found.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a run that was killed: its file says nothing now
    except PermissionError:
        pass
    return found


def _read(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
