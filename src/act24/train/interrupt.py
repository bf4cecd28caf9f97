"""Ctrl-C at a step boundary: an interrupt inside the optimizer's update would save a half-applied
step (or an applied one under the old step count), and the resumed run would apply it again."""

from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    """While active (in the main thread), the first Ctrl-C only sets `requested`, for the loop to stop
    at its next step boundary; a second one interrupts at once, as usual."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
