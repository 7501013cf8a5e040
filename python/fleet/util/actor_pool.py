"""ActorPool: spread work over a fixed set of actors, with Ray's semantics.

The pool hands each submitted value to an idle actor through a user function
``fn(actor, value)`` that starts the work and returns its ObjectRef
(typically ``lambda a, v: a.method.remote(v)``). An actor counts as busy until
its result has been handed back by ``get_next``/``get_next_unordered``; values
submitted while every actor is busy wait in the pool, in submission order.
"""

from __future__ import annotations

import collections
import collections.abc
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

from fleet import exceptions
from fleet._private import api
from fleet.object_ref import ObjectRef

V = TypeVar("V")

_TIMEOUT_MSG = "Timed out waiting for result"


def _wait_ref(future: Any) -> Any:
    """The ref to wait on for one submission (the first return of a multi-return call)."""
    return future[0] if isinstance(future, tuple) else future


class ActorPool:
    """Utility class to operate on a fixed pool of actors.

    Arguments:
        actors: the actor handles to use (more can be added with ``push``).

    Example::

        @remote
        class Doubler:
            def double(self, v):
                return 2 * v

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))  # [2, 4, 6, 8]
    """

    def __init__(self, actors: Iterable[Any]):
        if isinstance(actors, (str, bytes)) or not isinstance(actors, collections.abc.Iterable):
            raise TypeError(
                f"ActorPool expects a list of actor handles, got {type(actors).__name__}"
            )
        # Idle actors; ``submit`` takes the most recently returned one (like Ray).
        self._idle_actors: List[Any] = list(actors)
        # submission key -> (submission index, actor running it)
        self._future_to_actor: Dict[Any, Tuple[int, Any]] = {}
        # submission index -> submission key, for the in-flight submissions
        self._index_to_future: Dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        # (fn, value) submitted while every actor was busy, oldest first
        self._pending_submits: Deque[Tuple[Callable[[Any, Any], Any], Any]] = collections.deque()

    # ------------------------------------------------------------------ map

    def map(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Applies ``fn`` in parallel over the actors and values, in order.

        Returns an iterator over the results, in the order of ``values``; each
        result is waited for as the iterator reaches it. Every value is
        submitted when ``map`` is called. Earlier submissions whose results were
        not retrieved are discarded first: those still waiting for an actor
        never start, and the actors of those in flight are taken back as idle.

        Arguments:
            fn: ``fn(actor, value)`` starts the work and returns its ObjectRef
                (for example ``lambda a, v: a.double.remote(v)``). The actor
                counts as busy until that ref is retrieved.
            values: the values to apply ``fn`` to.
        """
        self._start_map(fn, values, "map")

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Like ``map``, but yields the results in the order they finish.

        This can be faster than ``map`` when some values take longer than others.
        """
        self._start_map(fn, values, "map_unordered")

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _start_map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any], what: str) -> None:
        _check_fn(fn, what)
        values = list(values)
        if values and not self._idle_actors and not self._future_to_actor:
            raise ValueError(f"ActorPool.{what}: the pool has no actors (add some with push())")
        self._discard_pending()
        for v in values:
            self.submit(fn, v)

    def _discard_pending(self) -> None:
        """Forgets every submission whose result was not retrieved yet."""
        self._pending_submits.clear()  # never started: they never will
        for future in list(self._future_to_actor):
            self._drop(future)

    # --------------------------------------------------------------- submit

    def submit(self, fn: Callable[[Any, V], Any], value: V) -> None:
        """Schedules one call of ``fn(actor, value)`` on an idle actor.

        If no actor is idle, the call waits in the pool and starts (in
        submission order) as soon as an actor is returned. Retrieve results
        with ``get_next`` or ``get_next_unordered``.
        """
        _check_fn(fn, "submit")
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        try:
            future = fn(actor, value)
            key = _as_key(future)
        except BaseException:
            # Nothing runs on the actor: it stays idle.
            self._idle_actors.append(actor)
            raise
        if key in self._future_to_actor:
            self._idle_actors.append(actor)
            raise ValueError(
                f"ActorPool.submit: fn returned {future!r}, which is already in the pool; "
                "fn must start a new call and return its ObjectRef"
            )
        index = self._next_task_index
        self._next_task_index += 1
        self._future_to_actor[key] = (index, actor)
        self._index_to_future[index] = key

    # -------------------------------------------------------------- results

    def has_next(self) -> bool:
        """Whether there are any pending results to return."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: Optional[float] = None, ignore_if_timedout: bool = False) -> Any:
        """Returns the next pending result, in submission order.

        Results already returned by ``get_next_unordered`` are skipped.

        Arguments:
            timeout: the most seconds to wait for the result; None waits
                without limit.
            ignore_if_timedout: when the wait times out, drop that submission
                (its actor is taken back as idle, its result is never returned)
                before raising, instead of leaving it to be retrieved later.

        Raises:
            StopIteration: no result is pending.
            TimeoutError: the result was not ready within ``timeout``.
        """
        _check_timeout(timeout)
        if not self.has_next():
            raise StopIteration("No more results to get")
        while self._next_return_index not in self._index_to_future:
            self._next_return_index += 1  # returned out of order already
        future = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = api.wait([_wait_ref(future)], num_returns=1, timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError(_TIMEOUT_MSG)
                self._drop(future)
                raise TimeoutError(
                    f"{_TIMEOUT_MSG}. The task {_describe(future)} has been ignored."
                )
        return self._take(future)

    def get_next_unordered(
        self, timeout: Optional[float] = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Returns whichever pending result is ready first.

        Arguments:
            timeout: the most seconds to wait for a result; None waits without
                limit.
            ignore_if_timedout: when the wait times out, drop the oldest pending
                submission (its actor is taken back as idle, its result is never
                returned) before raising.

        Raises:
            StopIteration: no result is pending.
            TimeoutError: no result was ready within ``timeout``.
        """
        _check_timeout(timeout)
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_ref = {_wait_ref(f): f for f in self._future_to_actor}
        ready, _ = api.wait(list(by_ref), num_returns=1, timeout=timeout)
        if not ready:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            oldest = self._index_to_future[min(self._index_to_future)]
            self._drop(oldest)
            raise TimeoutError(f"{_TIMEOUT_MSG}. The task {_describe(oldest)} has been ignored.")
        return self._take(by_ref[ready[0]])

    def _forget(self, future: Any) -> Any:
        """Removes one submission from the bookkeeping; returns its actor."""
        index, actor = self._future_to_actor.pop(future)
        del self._index_to_future[index]
        if index == self._next_return_index:
            self._next_return_index += 1
        return actor

    def _drop(self, future: Any) -> None:
        self._return_actor(self._forget(future))

    def _take(self, future: Any) -> Any:
        """Retrieves one submission's result and takes its actor back."""
        actor = self._forget(future)
        alive = True
        try:
            return api.get(list(future) if isinstance(future, tuple) else future)
        except exceptions.ActorDiedError:
            alive = False  # a dead actor leaves the pool
            raise
        finally:
            if alive:
                self._return_actor(actor)

    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.popleft())

    # --------------------------------------------------------------- actors

    def has_free(self) -> bool:
        """Whether an actor is idle (and no submission is waiting for one)."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Optional[Any]:
        """Removes an idle actor from the pool and returns it (None if none is free)."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor: Any) -> None:
        """Adds an actor to the pool as idle (it starts a waiting submission, if any).

        Raises:
            ValueError: the actor is already in the pool.
        """
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)


def _check_fn(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(
            f"ActorPool.{what}: fn must be a callable fn(actor, value) that returns an "
            f"ObjectRef, got {type(fn).__name__}"
        )


def _check_timeout(timeout: Any) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if timeout < 0:
        raise ValueError(f"timeout must be non-negative, got {timeout!r}")


def _as_key(future: Any) -> Any:
    """Checks what fn returned; a list of refs (several returns) becomes a tuple key."""
    if isinstance(future, ObjectRef):
        return future
    if (
        isinstance(future, (list, tuple))
        and future
        and all(isinstance(r, ObjectRef) for r in future)
    ):
        return tuple(future)
    raise TypeError(
        "ActorPool: fn(actor, value) must return the ObjectRef of the call it started "
        f"(for example `lambda a, v: a.method.remote(v)`), got {type(future).__name__}"
    )


def _describe(future: Any) -> str:
    return repr(list(future)) if isinstance(future, tuple) else repr(future)


__all__ = ["ActorPool"]
