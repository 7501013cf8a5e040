"""ObjectRefGenerator: what a streaming generator task or actor method returns."""

from __future__ import annotations

from typing import Any, Optional

from fleet import _core
from fleet._private import state
from fleet._private.waits import interruptible, timeout_ms
from fleet.object_ref import ObjectRef


class ObjectRefGenerator:
    """Yields one ObjectRef per value the remote generator produces, as soon as
    it is produced. An exception raised by the generator comes back as the next
    item (``get`` of that ref raises it) and ends the stream.

    Not serializable: iterate it in the process that started the task.
    """

    def __init__(self, end_id: bytes):
        # The task's own return: completed when the stream ends (or the task fails).
        self._end = ObjectRef(end_id, "", False)
        self._task_id = end_id[:16]
        self._index = 0
        self._done = False
        self._peeked: Optional[ObjectRef] = None  # taken by the next next()

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        return self._next(None)

    def _next(self, timeout: Optional[float]) -> ObjectRef:
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
            return self._end
        raise StopIteration

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio

        loop = asyncio.get_running_loop()
        ref = await loop.run_in_executor(None, self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self) -> Optional[ObjectRef]:
        # StopIteration cannot cross a Future: the end is None here.
        try:
            return self._next(None)
        except StopIteration:
            return None

    def completed(self) -> ObjectRef:
        """A ref that is ready when the generator has finished."""
        return self._end

    def is_finished(self) -> bool:
        """True once every item has been handed out."""
        return self._done

    def _next_item_ready(self) -> bool:
        """Whether ``next()`` would return at once (used by ``fleet.wait``)."""
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
            "ObjectRefGenerator is not serializable: iterate it in the process that "
            "started the task, and pass the ObjectRefs it yields instead."
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"


def refs_for(ids: Any, num_returns: Any) -> Any:
    """What ``.remote()`` returns for a task or actor call's return ids: a
    list of ObjectRefs, None (num_returns=0) or an ObjectRefGenerator. (The
    single-ref case is handled inline by the callers: it is the hot path.)
    Each id comes with one local ref, which the ObjectRef takes over."""
    if num_returns == "streaming":
        return ObjectRefGenerator(ids)
    if num_returns == 0:
        return None
    return [ObjectRef(i, "", False) for i in ids]


__all__ = ["ObjectRefGenerator", "refs_for"]
