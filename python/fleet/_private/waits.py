"""How a blocking call waits: its timeout in the core's milliseconds, and
whether Ctrl-C may interrupt it. Below every module that blocks (get, wait,
generators); imports nothing of fleet."""

from __future__ import annotations

import threading
from typing import Optional


def interruptible() -> bool:
    """Only a main thread sees KeyboardInterrupt: a driver's Ctrl-C, or in a
    worker the SIGINT of fleet.cancel, which must reach a task blocked in
    get or wait (its children are cancelled with it)."""
    return threading.current_thread() is threading.main_thread()


def timeout_ms(timeout: Optional[float], negative_ok: bool = True) -> int:
    """`timeout` seconds (None: no limit) as the core's milliseconds (-1: no
    limit). Raises TypeError for a non-number, ValueError for a negative
    timeout unless `negative_ok` (then it waits without limit, like Ray's get)."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if timeout < 0:
        if negative_ok:
            return -1
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    return int(timeout * 1000)
