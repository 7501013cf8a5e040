"""The worker process's title, as Ray sets it: ``fleet::<task name>`` while a
task runs (``ray::<name>`` in Ray), ``fleet::<Class>`` for an actor between
calls, ``fleet::IDLE`` for a worker that has run nothing yet.

With the setproctitle package installed, the whole command line shown by
``ps`` changes; without it, the kernel's short name of the process
(PR_SET_NAME: the first 15 bytes, shown by ``ps -o comm`` and ``top``).
Threading: called from the worker's executing thread; ``set`` skips the
system call when the title is unchanged (a worker running the same function
again pays one string comparison).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable, Optional

PREFIX = "fleet::"
_PR_SET_NAME = 15

_current = ""
_setter: Optional[Callable[[str], Any]] = None


def _make_setter() -> Callable[[str], Any]:
    try:
        import setproctitle  # type: ignore[import-not-found]

        return setproctitle.setproctitle
    except ImportError:
        pass
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return lambda title: None  # no way to set it here: the title stays as it was

    def set_name(title: str) -> None:
        prctl(_PR_SET_NAME, ctypes.c_char_p(title.encode("utf-8", "replace")[:15]), 0, 0, 0)

    return set_name


def set(name: str) -> None:  # noqa: A001  (module-level name, like os.set*)
    """Titles this process ``fleet::<name>``."""
    global _current, _setter
    if name == _current:
        return
    _current = name
    if _setter is None:
        _setter = _make_setter()
    _setter(PREFIX + name)


def current() -> str:
    """The name last set (without the prefix)."""
    return _current
