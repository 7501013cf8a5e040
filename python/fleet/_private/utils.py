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

    Inside the context a SIGINT is recorded instead of handled; on exit the
    original handler is restored and, if a SIGINT arrived, called then (so
    ``KeyboardInterrupt`` is raised after, not inside, the protected code).
    Installing another SIGINT handler inside the context raises ValueError.
    Only usable on the main thread: see ``create_if_main_thread``.
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

    def _refuse_handler(self, signum: int, handler: Any) -> Any:
        if signum == signal.SIGINT:
            raise ValueError(
                "Can't set SIGINT signal handler while it is deferred (inside DeferSigint)."
            )
        assert self.orig_signal_fn is not None
        return self.orig_signal_fn(signum, handler)

    def __enter__(self) -> DeferSigint:
        self.orig_sigint_handler = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._set_task_cancelled)
        self.orig_signal_fn = signal.signal
        signal.signal = self._refuse_handler  # type: ignore[assignment]
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Optional[bool]:
        assert self.orig_signal_fn is not None
        signal.signal = self.orig_signal_fn  # type: ignore[assignment]
        signal.signal(signal.SIGINT, self.orig_sigint_handler)
        if exc_type is None and self.task_cancelled:
            if callable(self.orig_sigint_handler):
                self.orig_sigint_handler(signal.SIGINT, None)
            else:
                raise KeyboardInterrupt
        return None
