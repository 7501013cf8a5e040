"""Small process-level utilities (Ray's ``ray._private.utils`` names)."""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Callable, ContextManager, Optional, Union

__all__ = ["DeferSigint"]


class DeferSigint(contextlib.AbstractContextManager):
    """Defers SIGINT (e.g. a task cancellation) until the context is left.

    Inside the context a SIGINT is recorded instead of handled. A SIGINT
    handler installed inside the context is recorded too, not installed. On
    exit the newest handler (the recorded one, else the original) is put in
    place and, if a SIGINT arrived, called once then (so ``KeyboardInterrupt``
    is raised after, not inside, the protected code). Only usable on the main
    thread: see ``create_if_main_thread``.
    """

    def __init__(self) -> None:
        self.task_cancelled = False
        self.orig_sigint_handler: Any = None
        self.orig_signal_fn: Optional[Callable[..., Any]] = None

    @classmethod
    def create_if_main_thread(cls) -> Union[DeferSigint, ContextManager[None]]:
        """A DeferSigint on the main thread, a no-op context elsewhere."""
        if threading.current_thread() is threading.main_thread():
            return cls()
        return contextlib.nullcontext()

    def _set_task_cancelled(self, signum: int, frame: Optional[FrameType]) -> None:
        self.task_cancelled = True

    def _record_handler(self, signum: int, handler: Any) -> Any:
        if signum == signal.SIGINT:
            previous, self.orig_sigint_handler = self.orig_sigint_handler, handler
            return previous
        assert self.orig_signal_fn is not None
        return self.orig_signal_fn(signum, handler)

    def __enter__(self) -> DeferSigint:
        self.orig_sigint_handler = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._set_task_cancelled)
        self.orig_signal_fn = signal.signal
        signal.signal = self._record_handler  # type: ignore[assignment]
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Optional[bool]:
        assert self.orig_signal_fn is not None
        signal.signal = self.orig_signal_fn  # type: ignore[assignment]
        signal.signal(signal.SIGINT, self.orig_sigint_handler)
        if self.task_cancelled:
            self.task_cancelled = False
            if callable(self.orig_sigint_handler):
                self.orig_sigint_handler(signal.SIGINT, None)
            elif self.orig_sigint_handler == signal.SIG_DFL:
                raise KeyboardInterrupt
        return None
