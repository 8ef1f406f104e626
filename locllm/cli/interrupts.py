"""SIGTERM (a scheduler's stop, ``kill``) ends a long run as Ctrl-C does, so the run can say how to resume it."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside: SIGTERM raises ``KeyboardInterrupt`` in the main thread (the previous handler comes back after)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
