"""Queue: a first-in, first-out queue shared by tasks and actors, with Ray's API.

The items live in an async actor that wraps an ``asyncio.Queue``. A ``Queue``
object holds only the actor's handle and the size limit, so it can be passed
to tasks and actors (or pickled) and every copy uses the same queue. A blocking
``get`` or ``put`` waits inside the actor without holding up its other callers.
"""

from __future__ import annotations

import asyncio
import collections.abc
import queue as _stdlib_queue
from typing import Any, Dict, Iterable, List, Optional, Tuple

from fleet._private import api
from fleet.remote_function import remote


class Empty(_stdlib_queue.Empty):
    """Raised by a non-blocking or timed-out ``get`` on an empty queue."""


class Full(_stdlib_queue.Full):
    """Raised by a non-blocking or timed-out ``put`` on a full queue."""


class Queue:
    """A first-in, first-out queue backed by an actor.

    It behaves like ``asyncio.Queue``, with sync and async ``put``/``get``
    (which can block until there is room or an item, with an optional timeout)
    and batched non-blocking operations that move many items in one call.

    Arguments:
        maxsize: the most items the queue holds; 0 (or less) means no limit.
        actor_options: options for the queue's actor, passed to its
            ``.options(...)`` (for example ``{"num_cpus": 1}`` to reserve a CPU).

    Example::

        q = Queue()
        for i in range(10):
            q.put(i)
        assert [q.get(timeout=5) for _ in range(10)] == list(range(10))
    """

    def __init__(self, maxsize: int = 0, actor_options: Optional[Dict[str, Any]] = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(
                f"actor_options must be a dict of actor options, got {type(actor_options).__name__}"
            )
        self.maxsize = maxsize
        cls = _queue_actor_class()
        if actor_options:
            cls = cls.options(**actor_options)
        self.actor: Any = cls.remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def __repr__(self) -> str:
        state = "shut down" if self.actor is None else f"maxsize={self.maxsize}"
        return f"Queue({state})"

    def _handle(self) -> Any:
        if self.actor is None:
            raise RuntimeError("the queue has been shut down (Queue.shutdown was called)")
        return self.actor

    # ------------------------------------------------------------- queries

    def size(self) -> int:
        """The number of items in the queue."""
        return api.get(self._handle().qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue (same as ``size``)."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue is empty."""
        return api.get(self._handle().empty.remote())

    def full(self) -> bool:
        """Whether the queue is full (never, when it has no ``maxsize``)."""
        return api.get(self._handle().full.remote())

    # ----------------------------------------------------------------- put

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Adds an item to the queue.

        If ``block`` is true and the queue is full, waits until there is room,
        for at most ``timeout`` seconds (no limit if None). If ``block`` is
        false, ``timeout`` is ignored.

        Raises:
            Full: the queue is full (``block=False``), or still full after
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative.
        """
        ok = api.get(self._put_ref(item, block, timeout))
        if not ok:
            raise Full(self._full_message(block, timeout))

    async def put_async(
        self, item: Any, block: bool = True, timeout: Optional[float] = None
    ) -> None:
        """Adds an item to the queue without blocking the event loop (see ``put``).

        Raises:
            Full: the queue is full (``block=False``), or still full after
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative.
        """
        ok = await self._put_ref(item, block, timeout)
        if not ok:
            raise Full(self._full_message(block, timeout))

    def put_nowait(self, item: Any) -> None:
        """Adds an item if there is room right away (same as ``put(item, block=False)``).

        Raises:
            Full: the queue is full.
        """
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Adds all of ``items`` in one call, or none of them if they do not fit.

        Raises:
            Full: the queue has no room for all the items (none is added).
            TypeError: ``items`` is not iterable.
        """
        if isinstance(items, (str, bytes)) or not isinstance(items, collections.abc.Iterable):
            raise TypeError(f"Argument 'items' must be an Iterable, got {type(items).__name__}")
        items = list(items)
        room = api.get(self._handle().put_nowait_batch.remote(items))
        if room is not None:
            raise Full(
                f"Cannot add {len(items)} items to the queue: it holds {self.maxsize - room} "
                f"of at most {self.maxsize}"
            )

    def _put_ref(self, item: Any, block: bool, timeout: Optional[float]) -> Any:
        handle = self._handle()
        if not block:
            return handle.put_nowait.remote(item)
        _check_timeout(timeout)
        return handle.put.remote(item, timeout)

    def _full_message(self, block: bool, timeout: Optional[float]) -> str:
        if block:
            return f"the queue was still full (maxsize {self.maxsize}) after {timeout} s"
        return f"the queue is full (maxsize {self.maxsize})"

    # ----------------------------------------------------------------- get

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns the oldest item.

        If ``block`` is true and the queue is empty, waits until an item is
        available, for at most ``timeout`` seconds (no limit if None). If
        ``block`` is false, ``timeout`` is ignored.

        Raises:
            Empty: the queue is empty (``block=False``), or still empty after
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative.
        """
        ok, item = api.get(self._get_ref(block, timeout))
        if not ok:
            raise Empty(_empty_message(block, timeout))
        return item

    async def get_async(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns the oldest item without blocking the event loop (see ``get``).

        Raises:
            Empty: the queue is empty (``block=False``), or still empty after
                ``timeout`` seconds.
            ValueError: ``timeout`` is negative.
        """
        ok, item = await self._get_ref(block, timeout)
        if not ok:
            raise Empty(_empty_message(block, timeout))
        return item

    def get_nowait(self) -> Any:
        """Removes and returns the oldest item if there is one (same as ``get(block=False)``).

        Raises:
            Empty: the queue is empty.
        """
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> List[Any]:
        """Removes and returns the ``num_items`` oldest items, in order, in one call.

        Raises:
            Empty: fewer than ``num_items`` items are queued (none is removed).
            TypeError: ``num_items`` is not an int.
            ValueError: ``num_items`` is negative.
        """
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"Argument 'num_items' must be an int, got {type(num_items).__name__}")
        if num_items < 0:
            raise ValueError(f"'num_items' must be nonnegative, got {num_items}")
        ok, result = api.get(self._handle().get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(f"Cannot get {num_items} items from the queue: it holds {result}")
        return result

    def _get_ref(self, block: bool, timeout: Optional[float]) -> Any:
        handle = self._handle()
        if not block:
            return handle.get_nowait.remote()
        _check_timeout(timeout)
        return handle.get.remote(timeout)

    # ------------------------------------------------------------ shutdown

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Ends the queue's actor, releasing its resources; the items are lost.

        Arguments:
            force: kill the actor right away. Otherwise it is asked to exit
                after the calls already sent to it, and killed if it has not
                exited within ``grace_period_s`` seconds.
            grace_period_s: how long a graceful exit may take.

        Every copy of this queue stops working. Calling ``shutdown`` again
        does nothing.
        """
        actor = self.actor
        if actor is None:
            return
        self.actor = None
        if not force:
            try:
                done = actor.__ray_terminate__.remote()
            except Exception:  # no graceful exit: kill it
                done = None
            if done is not None:
                ready, _ = api.wait([done], timeout=grace_period_s)
                if ready:
                    return
        api.kill(actor, no_restart=True)


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _empty_message(block: bool, timeout: Optional[float]) -> str:
    if block:
        return f"the queue was still empty after {timeout} s"
    return "the queue is empty"


# --------------------------------------------------------------------------
# The actor
# --------------------------------------------------------------------------


class _QueueActor:
    """Holds the items. Every method is async: a waiting put/get only suspends itself.

    Results are status values rather than exceptions, so the caller can raise
    a plain ``Empty``/``Full``.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._q: Optional[asyncio.Queue] = None

    def _queue(self) -> asyncio.Queue:
        # Made on first use, inside the actor's event loop (Python 3.9's
        # asyncio.Queue binds to the loop current when it is constructed).
        if self._q is None:
            self._q = asyncio.Queue(self.maxsize)
        return self._q

    async def qsize(self) -> int:
        return self._queue().qsize()

    async def empty(self) -> bool:
        return self._queue().empty()

    async def full(self) -> bool:
        return self._queue().full()

    async def put(self, item: Any, timeout: Optional[float] = None) -> bool:
        q = self._queue()
        if not q.full():
            q.put_nowait(item)
            return True
        if timeout is not None and timeout <= 0:
            return False
        ok, _ = await _within(q.put(item), timeout)
        return ok

    async def put_nowait(self, item: Any) -> bool:
        q = self._queue()
        if q.full():
            return False
        q.put_nowait(item)
        return True

    async def put_nowait_batch(self, items: List[Any]) -> Optional[int]:
        """Adds all items, or returns the room left (None when they were added)."""
        q = self._queue()
        if self.maxsize > 0 and q.qsize() + len(items) > self.maxsize:
            return self.maxsize - q.qsize()
        for item in items:
            q.put_nowait(item)
        return None

    async def get(self, timeout: Optional[float] = None) -> Tuple[bool, Any]:
        q = self._queue()
        if not q.empty():
            return True, q.get_nowait()
        if timeout is not None and timeout <= 0:
            return False, None
        return await _within(q.get(), timeout)

    async def get_nowait(self) -> Tuple[bool, Any]:
        q = self._queue()
        if q.empty():
            return False, None
        return True, q.get_nowait()

    async def get_nowait_batch(self, num_items: int) -> Tuple[bool, Any]:
        q = self._queue()
        if num_items > q.qsize():
            return False, q.qsize()
        return True, [q.get_nowait() for _ in range(num_items)]


async def _within(coro: Any, timeout: Optional[float]) -> Tuple[bool, Any]:
    """Runs ``coro`` for at most ``timeout`` seconds: (True, result) or (False, None).

    A result that arrives while the timed-out coroutine is being cancelled
    still counts, so a timed-out ``get`` never loses an item.
    """
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return False, None
    return True, task.result()


_actor_class: Any = None


def _queue_actor_class() -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = remote(_QueueActor)
    return _actor_class


__all__ = ["Empty", "Full", "Queue"]
