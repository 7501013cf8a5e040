"""Helpers for testing fleet programs, with the names Ray's own tests use
(``ray._private.test_utils`` / ``ray._common.test_utils``): polling a
condition, a signal actor to order tasks, a semaphore actor, and running a
second driver as a script.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Optional

import fleet

__all__ = [
    "Semaphore",
    "SignalActor",
    "async_wait_for_condition",
    "client_test_enabled",
    "generate_system_config_map",
    "get_other_nodes",
    "run_string_as_driver",
    "run_string_as_driver_nonblocking",
    "wait_for_condition",
    "wait_for_pid_to_exit",
]


def wait_for_condition(
    condition_predictor: Callable[..., Any],
    timeout: float = 10,
    retry_interval_ms: float = 100,
    raise_exceptions: bool = False,
    **kwargs: Any,
) -> None:
    """Polls ``condition_predictor(**kwargs)`` until it returns true.

    Raises RuntimeError after ``timeout`` seconds, naming the last exception the
    predicate raised (exceptions are re-raised at once if ``raise_exceptions``).
    """
    start = time.monotonic()
    last_ex = None
    while time.monotonic() - start <= timeout:
        try:
            if condition_predictor(**kwargs):
                return
        except Exception as e:  # noqa: BLE001 - reported below
            if raise_exceptions:
                raise
            last_ex = e
        time.sleep(retry_interval_ms / 1000.0)
    message = "The condition wasn't met before the timeout expired."
    if last_ex is not None:
        message += f" Last exception: {last_ex!r}"
    raise RuntimeError(message)


async def async_wait_for_condition(
    condition_predictor: Callable[..., Any],
    timeout: float = 10,
    retry_interval_ms: float = 100,
    **kwargs: Any,
) -> None:
    """``wait_for_condition`` for coroutines; the predicate may be async."""
    start = time.monotonic()
    last_ex = None
    while time.monotonic() - start <= timeout:
        try:
            result = condition_predictor(**kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
        except Exception as e:  # noqa: BLE001 - reported below
            last_ex = e
        await asyncio.sleep(retry_interval_ms / 1000.0)
    message = "The condition wasn't met before the timeout expired."
    if last_ex is not None:
        message += f" Last exception: {last_ex!r}"
    raise RuntimeError(message)


@fleet.remote(num_cpus=0)
class SignalActor:
    """An async actor whose ``wait()`` calls return once ``send()`` is called."""

    def __init__(self) -> None:
        self.ready_event = asyncio.Event()
        self.num_waiters = 0

    def send(self, clear: bool = False) -> None:
        self.ready_event.set()
        if clear:
            self.ready_event.clear()

    async def wait(self, should_wait: bool = True) -> None:
        if should_wait:
            self.num_waiters += 1
            await self.ready_event.wait()
            self.num_waiters -= 1

    async def cur_num_waiters(self) -> int:
        return self.num_waiters


@fleet.remote(num_cpus=0)
class Semaphore:
    """An async counting semaphore actor."""

    def __init__(self, value: int = 1) -> None:
        self._sema = asyncio.Semaphore(value=value)

    async def acquire(self) -> None:
        await self._sema.acquire()

    async def release(self) -> None:
        self._sema.release()

    async def locked(self) -> bool:
        return self._sema.locked()


def client_test_enabled() -> bool:
    """fleet has no Ray client mode: always False."""
    return False


def _driver_env(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    out = dict(os.environ)
    if env:
        out.update(env)
    return out


def run_string_as_driver(driver_script: str, env: Optional[Dict[str, str]] = None,
                         encode: str = "utf-8") -> str:
    """Runs ``driver_script`` in a new Python process; returns its output
    (stdout and stderr). Raises ``subprocess.CalledProcessError`` if it fails."""
    proc = subprocess.run(
        [sys.executable, "-"],
        input=driver_script.encode(encode),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_driver_env(env),
        timeout=600,
    )
    out = proc.stdout.decode(encode)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, None)
    return out


def run_string_as_driver_nonblocking(driver_script: str,
                                     env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Starts ``driver_script`` in a new Python process and returns the Popen
    (stdout and stderr are pipes)."""
    proc = subprocess.Popen(
        [sys.executable, "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_driver_env(env),
    )
    assert proc.stdin is not None
    proc.stdin.write(driver_script.encode("utf-8"))
    proc.stdin.close()
    return proc


def wait_for_pid_to_exit(pid: int, timeout: float = 20) -> None:
    """Waits until no process ``pid`` exists; raises RuntimeError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Timed out while waiting for process {pid} to exit.")


def generate_system_config_map(**kwargs: Any) -> Dict[str, Any]:
    """``init``/``Cluster`` arguments carrying ``kwargs`` as system config (fleet
    takes ``_system_config`` and ignores keys it does not know)."""
    return {"_system_config": kwargs}


def get_other_nodes(cluster: Any, exclude_head: bool = False) -> list:
    """The nodes of ``cluster`` other than the one this driver is attached to
    (and other than the head with ``exclude_head``)."""
    me = fleet.get_runtime_context().get_node_id()
    out = []
    for node in list(cluster.list_all_nodes()):
        if exclude_head and node is cluster.head_node:
            continue
        if node.node_id != me:
            out.append(node)
    return out
