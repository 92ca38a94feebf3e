"""Stopping long runs cleanly: the first Ctrl-C or SIGTERM asks for a stop after the current
batch; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(on_request: Callable[[int], None] | None = None) -> Iterator[threading.Event]:
    """An event that SIGINT/SIGTERM set while the block runs (handlers restored after).

    on_request is called with the signal number on the first request, so a CLI can say
    what is happening. Outside the main thread no handler can be installed; the event
    then only stops the run when set by the caller.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        if on_request:
            on_request(signum)

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
