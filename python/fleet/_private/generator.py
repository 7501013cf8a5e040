"""ObjectRefGenerator: what a streaming generator task or actor method returns."""

from __future__ import annotations

from typing import Any, Iterator, Optional

from fleet import _core
from fleet._private import state
from fleet._private.waits import interruptible, timeout_ms
from fleet.object_ref import ObjectRef


class ObjectRefGenerator:
    """Yields one ObjectRef per value the remote generator produces, as soon as
    it is produced. An exception raised by the generator comes back as the next
    item (``get`` of that ref raises it) and ends the stream; a system failure
    (the worker died, the task was cancelled) comes back as one last item,
    ``completed()``, whose ``get`` raises it.

    Not serializable: iterate it in the process that started the task. Not
    thread-safe (as Ray's).
    """

    def __init__(self, end_id: bytes):
        # The task's own return: completed when the stream ends (or the task fails).
        self._end = ObjectRef(end_id, "", False)
        self._task_id = end_id[:16]
        self._index = 0
        self._done = False  # next() raises StopIteration from now on
        self._failed = False  # the task's own error was handed out (as the last item)
        self._peeked: Optional[ObjectRef] = None  # taken by the next next()

    @property
    def _generator_ref(self) -> ObjectRef:
        """The task's own return (Ray's name): ``completed()``."""
        return self._end

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        return self._next(None)

    def _next(self, timeout: Optional[float]) -> ObjectRef:
        """The next ref; TimeoutError if it is not there within `timeout`."""
        if self._peeked is not None:
            ref, self._peeked = self._peeked, None
            return ref
        if self._done:
            raise StopIteration
        core = state.core
        if core is None:
            raise RuntimeError("fleet is not initialized")
        item = core.generator_next(
            self._task_id, self._index, timeout_ms(timeout), interruptible()
        )
        if item is not None:
            self._index += 1
            return ObjectRef(item, "", False)
        self._done = True
        # Ended. If the task itself failed (its worker died...), hand out its
        # error once, as the next item.
        (data, flags), = core.get([self._end.binary()], -1)
        if flags & _core.ERROR_FLAGS:
            self._failed = True
            return self._end
        raise StopIteration

    def _next_sync(self, timeout_s: Optional[float] = None) -> ObjectRef:
        """The next ref, waiting at most `timeout_s` seconds (None or -1: no
        limit); a nil ObjectRef if none came in time. StopIteration at the end."""
        if timeout_s is not None and timeout_s < 0:
            timeout_s = None
        try:
            return self._next(timeout_s)
        except TimeoutError:
            return _nil_ref()

    async def _next_async(self, timeout_s: Optional[float] = None) -> ObjectRef:
        """``_next_sync`` for async code: StopAsyncIteration at the end."""
        import asyncio

        loop = asyncio.get_running_loop()
        ref = await loop.run_in_executor(None, self._next_sync_or_none, timeout_s)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        return await self._next_async(None)

    def _next_sync_or_none(self, timeout_s: Optional[float]) -> Optional[ObjectRef]:
        # StopIteration cannot cross a Future: the end is None here.
        try:
            return self._next_sync(timeout_s)
        except StopIteration:
            return None

    def send(self, value: Any) -> None:
        raise NotImplementedError("`gen.send` is not supported.")

    def throw(self, value: Any) -> None:
        raise NotImplementedError("`gen.throw` is not supported.")

    def close(self) -> None:
        raise NotImplementedError("`gen.close` is not supported.")

    async def asend(self, value: Any) -> None:
        raise NotImplementedError("`gen.asend` is not supported.")

    async def athrow(self, value: Any) -> None:
        raise NotImplementedError("`gen.athrow` is not supported.")

    async def aclose(self) -> None:
        raise NotImplementedError("`gen.aclose` is not supported.")

    def completed(self) -> ObjectRef:
        """A ref that is ready when the generator task has finished; its
        ``get`` raises if the task failed (its worker died...)."""
        return self._end

    def next_ready(self) -> bool:
        """True if ``next()`` would return a ref at once. False once
        ``next()`` would raise StopIteration (see ``is_finished``)."""
        if self._peeked is not None:
            return True
        if self._done:
            return False
        return self._next_item_ready() and self._peeked is not None

    def is_finished(self) -> bool:
        """True once every item (and the task's error, if it failed) has been
        handed out: ``next()`` raises StopIteration."""
        if self._peeked is not None:
            return False
        if self._done:
            return True
        core = state.core
        if core is None or not core.wait([self._end.binary()], 1, 0, False, False)[0]:
            return False
        # The task ended: finished if nothing (item or error) is left to hand out.
        self._next_item_ready()
        return self._done and self._peeked is None

    def _next_item_ready(self) -> bool:
        """Whether ``next()`` would return (or stop) at once (used by ``fleet.wait``)."""
        if self._done or self._peeked is not None:
            return True
        try:
            self._peeked = self._next(0)
        except StopIteration:
            pass
        except TimeoutError:
            return False
        return True

    def __del__(self) -> None:
        # Items never handed out are freed (and later ones dropped on arrival).
        core = state.core
        if core is None or self._done:
            return
        try:  # (a peeked item is an ObjectRef already: it frees itself)
            core.generator_release(self._task_id, self._index)
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self) -> Any:
        raise TypeError(
            "You cannot return or pass a generator to other task. "
            "Serializing a ObjectRefGenerator is not allowed."
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"


# Ray's older name for it.
StreamingObjectRefGenerator = ObjectRefGenerator


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task's ref: the ObjectRefs of
    every value its generator yielded (and of its error, last, if it raised).

    Iterating hands each ref out once (as Ray's); ``len()`` counts those not
    handed out yet. Serializable: pass it (or the task's ref) to other tasks.
    """

    def __init__(self, refs: Any):
        import collections

        self._refs = collections.deque(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        while self._refs:
            yield self._refs.popleft()

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def _nil_ref() -> ObjectRef:
    nil = getattr(ObjectRef, "nil", None)
    if nil is not None:
        return nil()
    return ObjectRef(b"\xff" * 20, "", False)


def refs_for(ids: Any, num_returns: Any) -> Any:
    """What ``.remote()`` returns for a task or actor call's return ids: a
    list of ObjectRefs, None (num_returns=0) or an ObjectRefGenerator. (The
    single-ref case is handled inline by the callers: it is the hot path.)
    Each id comes with one local ref, which the ObjectRef takes over."""
    if num_returns == "streaming":
        return ObjectRefGenerator(ids)
    if num_returns == "dynamic":  # one ref: its value is a DynamicObjectRefGenerator
        return ObjectRef(ids, "", False)
    if num_returns == 0:
        return None
    return [ObjectRef(i, "", False) for i in ids]


__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectRefGenerator",
    "StreamingObjectRefGenerator",
    "refs_for",
]
