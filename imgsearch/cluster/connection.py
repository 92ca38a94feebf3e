"""Finding Ray and joining a cluster: the one module that calls ray.init."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any

from ..errors import ClusterError, ConfigError, MissingDependencyError, install_hint

# `--ray` with no address: a Ray instance started on this machine for the run (ray.init()).
LOCAL = "local"
INSTALL_HINT = install_hint("ray")
_OFF = {"", "0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}
# auto, local, ray://HOST:PORT (Ray Client) or a head node's HOST:PORT.
_ADDRESS = re.compile(r"^(?:auto|local|ray://\S+|[^\s/]+:\d+)$", re.IGNORECASE)
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>[^\s/]+):(?P<port>\d+)/?$", re.IGNORECASE)
# Seconds to wait for a cluster's port to answer before saying nothing listens there.
LISTEN_TIMEOUT = 10.0


def looks_like_address(text: str) -> bool:
    """Whether text names a Ray cluster (rather than, say, a folder to index)."""
    return bool(_ADDRESS.match(text))


def cluster_address(value: str | bool | None) -> str | None:
    """The cluster a setting asks for: None for none, else "local", "auto" or an address."""
    if value is None or value is False:
        return None
    if value is True:
        return LOCAL
    text = str(value).strip()
    if text.lower() in _OFF:
        return None
    if text.lower() in _ON:
        return LOCAL
    if not looks_like_address(text):
        raise ConfigError(f"ray = {text!r} is not a Ray address: use auto, local, HOST:PORT or ray://HOST:PORT")
    return text.lower() if text.lower() in ("auto", LOCAL) else text


def import_ray() -> ModuleType:
    """The ray module, with Ray Data; a MissingDependencyError naming the extra when absent."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(f"indexing on a Ray cluster (--ray) needs Ray Data: {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class ClusterShape:
    """What the cluster has to offer an index run."""

    cpus: float
    gpus: float
    node_ids: tuple[str, ...]  # the live nodes that can run work (a head kept free of it is left out)


class RayConnection:
    """Joins the cluster on first use; close() leaves it (and stops a Ray instance started here).

    A process already connected to Ray (a notebook that called ray.init) is used as it is.
    """

    def __init__(self, address: str):
        self.address = address
        self._ray: ModuleType | None = None
        self._joined_here = False
        self._lock = threading.Lock()

    def ray(self) -> ModuleType:
        """The ray module, connected."""
        with self._lock:
            if self._ray is None:
                ray = import_ray()
                if not ray.is_initialized():
                    self._join(ray)
                    self._joined_here = True
                self._ray = ray
            return self._ray

    def _join(self, ray: ModuleType) -> None:
        local = self.address == LOCAL
        # Ray retries an address nobody answers at for minutes; a closed port is told at once.
        self._check_listening()
        _keep_console_for_imgsearch()
        options: dict[str, object] = {"include_dashboard": False} if local else {}
        # ray.init puts its own SIGTERM handler (exit at once) in place of the caller's, which
        # may be a CLI's "stop after this batch"; the caller's handlers are put back.
        handlers = _signal_handlers()
        try:
            with _without_log_level_notice():
                ray.init(
                    address=None if local else self.address,
                    logging_level=logging.ERROR,
                    # Workers' own output (model loading chatter) stays in the cluster's log files.
                    log_to_driver=False,
                    **options,
                )
        except (ConnectionError, RuntimeError, ValueError, TimeoutError, ray.exceptions.RayError) as exc:
            raise self._unreachable(_first_line(exc)) from None
        finally:
            for signum, handler in handlers.items():
                if handler is not None:  # None: a handler not set from Python, nothing to restore
                    signal.signal(signum, handler)

    def _check_listening(self) -> None:
        """Raise at once when nothing listens at a HOST:PORT or ray://HOST:PORT address."""
        match = _HOST_PORT.match(self.address)
        if match is None:
            return  # local, or auto: Ray finds the address itself
        try:
            socket.create_connection((match["host"].strip("[]"), int(match["port"])), timeout=LISTEN_TIMEOUT).close()
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None

    def _unreachable(self, reason: str) -> ClusterError:
        return ClusterError(
            f"cannot reach the Ray cluster at {self.address}: {reason} (start one with `ray start --head` "
            "or check the address; a cluster with token authentication also needs RAY_AUTH_MODE=token "
            "and its RAY_AUTH_TOKEN here)"
        )

    def shape(self) -> ClusterShape:
        """CPUs and GPUs in the cluster now, and its live nodes."""
        ray = self.ray()
        resources = ray.cluster_resources()
        nodes = tuple(node["NodeID"] for node in ray.nodes() if node.get("Alive") and _can_run_work(node))
        return ClusterShape(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), nodes)

    def close(self) -> None:
        with self._lock:
            if self._ray is not None and self._joined_here:
                self._ray.shutdown()
            self._ray, self._joined_here = None, False


def _can_run_work(node: dict[str, Any]) -> bool:
    offered = node.get("Resources", {})
    return bool(offered.get("CPU", 0) or offered.get("GPU", 0))


def _keep_console_for_imgsearch() -> None:
    """Ray's chatter goes to its session log files only: on the console it would break the
    progress display, and imgsearch reports failures itself, one line each."""
    # Ray's core logs warnings about its own defaults at error level (actor restart caveats).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":  # the file handler keeps the full record
            handler.setLevel(logging.CRITICAL)


# Ray's core announces the level it read from RAY_BACKEND_LOG_LEVEL, whatever the level.
_LOG_LEVEL_NOTICE = re.compile(r"logging\.cc:\d+.*Set ray log level from environment variable")


@contextmanager
def _without_log_level_notice() -> Iterator[None]:
    """Run the block with the process's stderr caught, then pass on all but Ray's notice of
    its log level (written by its core straight to file descriptor 2, past Python's logging)."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), stderr_fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            caught.seek(0)
            kept = [
                line
                for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                if not _LOG_LEVEL_NOTICE.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _signal_handlers() -> dict[int, Callable[[int, FrameType | None], object] | int | None]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread has handlers to keep (and ray.init sets none elsewhere)
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
