"""``Pool``: the ``multiprocessing.Pool`` API on fleet actors.

Each of the pool's processes is an actor. Work is cut into chunks (as the
standard library does) and every chunk goes to an idle actor; a background
thread per pool collects the finished chunks, hands free actors the next
waiting chunk, and completes the results (running their callbacks, as the
standard library's result-handler thread does).
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import sys
import threading
import time
import traceback
import warnings
import weakref
from multiprocessing import TimeoutError
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from fleet import exceptions
from fleet._private import api
from fleet.remote_function import remote

_RUN = "RUN"
_CLOSE = "CLOSE"
_TERMINATE = "TERMINATE"

# How a chunk's payload becomes calls: func(*args, **kwds) once, func(item)
# for each item, or func(*item) for each item.
_APPLY = 0
_MAP = 1
_STARMAP = 2
# Added to _MAP: a failed call gives its exception as that item's result
# (the others of the chunk still run), as Ray's imap does.
_EACH = 4


class _ItemError:
    """One failed call of an _EACH chunk: the packed exception."""

    __slots__ = ("packed",)

    def __init__(self, packed: Tuple[str, BaseException, str]):
        self.packed = packed

# How long the result thread waits on fleet at a time (it rereads the set of
# chunks in flight between waits).
_WAIT_SLICE_S = 0.05


# --------------------------------------------------------------------------
# The worker actor
# --------------------------------------------------------------------------


def _pack_error(e: BaseException) -> Tuple[str, BaseException, str]:
    """An exception raised in the worker, as a picklable ("err", exc, traceback) triple."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    problem = _pickle_problem(e)
    if problem is not None:  # stdlib's wrapper for what cannot travel back
        e = MaybeEncodingError(problem, e)
    return ("err", e, tb)


def _pickle_problem(obj: Any) -> Optional[Exception]:
    """Why ``obj`` cannot be pickled (by pickle, else cloudpickle); None if it can."""
    try:
        pickle.dumps(obj)
        return None
    except Exception as e:
        problem: Optional[Exception] = e
    try:
        import cloudpickle
    except ImportError:
        return None  # leave it to the runtime's serializer
    try:
        cloudpickle.dumps(obj)
        return None
    except Exception as e:
        problem = e
    return problem


class _PoolWorker:
    """One process of the pool: runs the initializer once, then chunks of calls."""

    def __init__(self, initializer: Optional[Callable[..., Any]], initargs: Tuple[Any, ...]):
        self._init_error: Optional[Tuple[str, BaseException, str]] = None
        if initializer is not None:
            try:
                initializer(*initargs)
            except Exception as e:
                self._init_error = _pack_error(e)

    def ping(self) -> Optional[Tuple[str, BaseException, str]]:
        """None once the worker is ready, or the initializer's error."""
        return self._init_error

    def run(self, func: Callable[..., Any], mode: int, payload: Any) -> Tuple[Any, ...]:
        """Runs one chunk: ("ok", [results]) or ("err", exception, traceback)."""
        if self._init_error is not None:
            return self._init_error
        try:
            if mode == _APPLY:
                args, kwds = payload
                out = [func(*args, **kwds)]
            elif mode == _MAP:
                out = [func(x) for x in payload]
            elif mode == _MAP | _EACH:
                out = []
                for x in payload:
                    try:
                        out.append(func(x))
                    except Exception as e:
                        out.append(_ItemError(_pack_error(e)))
            else:
                out = [func(*x) for x in payload]
        except Exception as e:
            return _pack_error(e)
        return ("ok", out)


_worker_class: Any = None


def _worker_actor_class() -> Any:
    global _worker_class
    if _worker_class is None:
        # Like Ray's pool actors, they reserve no CPU unless ray_remote_args say so.
        _worker_class = remote(num_cpus=0)(_PoolWorker)
    return _worker_class


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


class AsyncResult:
    """The result of ``Pool.apply_async`` (and, as a subclass, ``map_async``)."""

    def __init__(
        self,
        pool: Optional[Pool],
        callback: Optional[Callable[[Any], Any]],
        error_callback: Optional[Callable[[BaseException], Any]],
    ):
        self._pool = pool  # keeps the pool alive until the result is in
        self._event = threading.Event()
        self._mutex = threading.Lock()
        self._finishing = False
        self._callback = callback
        self._error_callback = error_callback
        self._success: Optional[bool] = None
        self._value: Any = None

    def ready(self) -> bool:
        """Whether the call has completed (successfully or not)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call completed without raising.

        Raises:
            ValueError: the result is not ready yet.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits until the result is ready, or at most ``timeout`` seconds."""
        self._event.wait(_check_timeout(timeout))

    def get(self, timeout: Optional[float] = None) -> Any:
        """Returns the result when it is ready, or re-raises the call's exception.

        Raises:
            multiprocessing.TimeoutError: it was not ready within ``timeout`` seconds.
        """
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def __repr__(self) -> str:
        if not self.ready():
            state = "pending"
        else:
            state = "successful" if self._success else "failed"
        return f"<{type(self).__name__} {state}>"

    # -- filled in by the pool

    def _abandoned(self) -> bool:
        """True once the result is settled: its remaining chunks need not run."""
        return self._finishing

    def _deliver(self, index: int, ok: bool, value: Any) -> None:
        with self._mutex:
            if self._finishing:
                return
            self._finishing = True
        self._finish(ok, value[0] if ok else value)

    def _finish(self, ok: bool, value: Any) -> None:
        self._success = ok
        self._value = value
        cb = self._callback if ok else self._error_callback
        if cb is not None:
            try:
                cb(value)
            except Exception:
                print("Exception in a Pool callback:", file=sys.stderr)
                traceback.print_exc()
        self._callback = self._error_callback = None
        self._event.set()
        self._pool = None


class _MapResult(AsyncResult):
    """The result of ``map_async``/``starmap_async``: one list made of many chunks."""

    def __init__(
        self,
        pool: Optional[Pool],
        num_chunks: int,
        callback: Optional[Callable[[Any], Any]],
        error_callback: Optional[Callable[[BaseException], Any]],
    ):
        super().__init__(pool, callback, error_callback)
        self._chunks: List[Optional[List[Any]]] = [None] * num_chunks
        self._missing = num_chunks
        if num_chunks == 0:
            self._finishing = True
            self._finish(True, [])

    def _deliver(self, index: int, ok: bool, value: Any) -> None:
        with self._mutex:
            if self._finishing or self._chunks[index] is not None:
                return
            if ok:
                self._chunks[index] = value
                self._missing -= 1
                if self._missing:
                    return
            self._finishing = True
        if ok:
            self._finish(True, list(itertools.chain.from_iterable(self._chunks)))  # type: ignore[arg-type]
        else:
            self._finish(False, value)  # the first failure settles it, as in the stdlib
        self._chunks = []


class IMapIterator:
    """The iterator ``imap``/``imap_unordered`` return.

    The input is read and submitted a window of chunks ahead of what has
    been consumed (all of it once the pool is closed), so long or endless
    iterables do not pile up in memory. A failed call gives its exception
    as its result (as Ray's imap does); a chunk that fails as a whole (its
    actor died) raises at its position, and iteration goes on after it.
    """

    def __init__(
        self,
        pool: Pool,
        func: Callable[..., Any],
        mode: int,
        iterable: Iterable[Any],
        chunksize: int,
        ordered: bool,
        window: int,
    ):
        self._pool: Optional[Pool] = pool
        self._core = pool._core
        self._func = func
        self._mode = mode
        self._source: Optional[Iterator[Any]] = iter(iterable)
        self._chunksize = chunksize
        self._ordered = ordered
        self._window = window
        self._cond = threading.Condition()
        self._feed_lock = threading.Lock()
        self._submitted = 0  # chunks submitted
        self._taken = 0  # chunks handed to the consumer
        self._done: Dict[int, Tuple[bool, Any]] = {}  # ordered: index -> outcome
        self._arrived: Deque[Tuple[bool, Any]] = collections.deque()  # unordered
        self._buffer: Deque[Any] = collections.deque()  # items of the current chunk
        self._feed(window)

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next result, waiting at most ``timeout`` seconds for it.

        Raises:
            StopIteration: every result has been returned.
            multiprocessing.TimeoutError: the next result did not arrive in time.
        """
        timeout = _check_timeout(timeout)
        if self._buffer:
            return _item(self._buffer.popleft())
        self._feed(self._window)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._ordered and self._taken in self._done:
                    outcome = self._done.pop(self._taken)
                    break
                if not self._ordered and self._arrived:
                    outcome = self._arrived.popleft()
                    break
                if self._source is None and self._taken >= self._submitted:
                    self._pool = None
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"the next result did not arrive within {timeout} s")
                self._cond.wait(left)
            self._taken += 1
        ok, value = outcome
        if not ok:
            raise value
        self._buffer.extend(value)
        return _item(self._buffer.popleft())

    __next__.__doc__ = next.__doc__

    def _feed(self, window: Optional[int]) -> None:
        """Submits chunks until ``window`` are ahead of the consumer (None: all)."""
        if self._source is None:
            return
        if self._core.state == _TERMINATE:
            self._source = None  # nothing more will run
            return
        with self._feed_lock:
            source = self._source
            if source is None:
                return
            chunks: List[_Chunk] = []
            error: Optional[Exception] = None
            ended = False
            while window is None or self._submitted + len(chunks) - self._taken < window:
                try:
                    items = list(itertools.islice(source, self._chunksize))
                except Exception as e:  # the input raised: fail at this position
                    error = e
                    break
                if not items:
                    ended = True
                    break
                index = self._submitted + len(chunks)
                chunks.append(_Chunk(self, index, self._func, self._mode, items))
            first = self._submitted
            # Count the chunks before marking the input finished: the consumer
            # stops once the input is finished and it has taken every chunk.
            self._submitted += len(chunks) + (error is not None)
            if ended or error is not None:
                self._source = None
            self._core.submit(chunks)
            if error is not None:
                self._deliver(first + len(chunks), False, error)

    def _abandoned(self) -> bool:
        return False

    def _deliver(self, index: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._ordered:
                self._done[index] = (ok, value)
            else:
                self._arrived.append((ok, value))
            self._cond.notify_all()


# --------------------------------------------------------------------------
# The pool's machinery
# --------------------------------------------------------------------------


class _Chunk:
    __slots__ = ("sink", "index", "func", "mode", "payload")

    def __init__(self, sink: Any, index: int, func: Callable[..., Any], mode: int, payload: Any):
        self.sink = sink
        self.index = index
        self.func = func
        self.mode = mode
        self.payload = payload


class _Slot:
    """One worker actor and how many chunks it has been given."""

    __slots__ = ("handle", "tasks")

    def __init__(self, handle: Any):
        self.handle = handle
        self.tasks = 0


def _kill(handle: Any) -> None:
    try:
        api.kill(handle, no_restart=True)
    except Exception:
        pass  # already gone, or the cluster is shut down


class _PoolCore:
    """The actors, the chunks waiting for one, and the result thread.

    Kept apart from ``Pool`` so that the thread does not keep the ``Pool``
    object alive (dropping an unclosed pool terminates it, as in the stdlib).
    """

    def __init__(
        self,
        actor_cls: Any,
        processes: int,
        initializer: Optional[Callable[..., Any]],
        initargs: Tuple[Any, ...],
        maxtasksperchild: Optional[int],
    ):
        self.actor_cls = actor_cls
        self.initializer = initializer
        self.initargs = initargs
        self.maxtasks = maxtasksperchild
        self.cond = threading.Condition()
        self.state = _RUN
        self.pending: Deque[_Chunk] = collections.deque()
        self.slots: List[_Slot] = [self._new_slot() for _ in range(processes)]
        self.idle: List[_Slot] = list(self.slots)
        self.inflight: Dict[Any, Tuple[_Chunk, _Slot]] = {}
        self.thread = threading.Thread(target=self._collect, name="fleet-pool-results", daemon=True)

    def _new_slot(self) -> _Slot:
        return _Slot(self.actor_cls.remote(self.initializer, self.initargs))

    def start(self) -> None:
        """Waits for every worker to be up; raises the initializer's error if it failed."""
        outcomes = api.get([s.handle.ping.remote() for s in self.slots])
        for outcome in outcomes:
            if outcome is not None:
                raise _unpack_error(outcome)
        self.thread.start()

    # -- submitting

    def submit(self, chunks: List[_Chunk]) -> None:
        if not chunks:
            return
        with self.cond:
            if self.state == _TERMINATE:
                failed = chunks
            else:
                self.pending.extend(chunks)
                failed = self._dispatch()
            self.cond.notify_all()
        self._fail(failed)

    def _dispatch(self) -> List[Tuple[_Chunk, BaseException]]:
        """Hands waiting chunks to idle actors (caller holds the lock)."""
        failed = []
        while self.pending and self.idle:
            chunk = self.pending.popleft()
            if chunk.sink._abandoned():
                continue
            slot = self.idle.pop()
            try:
                ref = slot.handle.run.remote(chunk.func, chunk.mode, chunk.payload)
            except Exception as e:  # e.g. the function cannot be pickled
                self.idle.append(slot)
                failed.append((chunk, e))
                continue
            slot.tasks += 1
            self.inflight[ref] = (chunk, slot)
        return failed

    @staticmethod
    def _fail(failed: List[Any]) -> None:
        """Fails chunks: (chunk, error) pairs, or bare chunks (terminated)."""
        for item in failed:
            if isinstance(item, tuple):
                chunk, err = item
            else:
                chunk, err = item, _terminated_error()
            chunk.sink._deliver(chunk.index, False, err)

    # -- the result thread

    def _collect(self) -> None:
        while True:
            with self.cond:
                while not self.inflight and self.state != _TERMINATE:
                    if self.state == _CLOSE and not self.pending:
                        break
                    self.cond.wait()
                if self.state == _TERMINATE or (not self.inflight and not self.pending):
                    return
                refs = list(self.inflight)
            try:
                ready, _ = api.wait(refs, num_returns=1, timeout=_WAIT_SLICE_S)
                if ready and len(refs) > 1:
                    ready, _ = api.wait(refs, num_returns=len(refs), timeout=0)
                outcomes = [(ref, _outcome(ref)) for ref in ready]
            except Exception as e:  # the cluster went away
                self._abort(e)
                return
            if outcomes:
                self._complete(outcomes)

    def _complete(self, outcomes: List[Tuple[Any, Tuple[bool, Any]]]) -> None:
        delivered = []
        retired = []
        with self.cond:
            for ref, (ok, value) in outcomes:
                entry = self.inflight.pop(ref, None)
                if entry is None:
                    continue  # terminated meanwhile: already failed
                chunk, slot = entry
                delivered.append((chunk, ok, value))
                dead = not ok and isinstance(value, exceptions.RayActorError)
                worn = self.maxtasks is not None and slot.tasks >= self.maxtasks
                if dead or worn:
                    retired.append(slot)
                    self.slots.remove(slot)
                    if self.state != _TERMINATE:
                        fresh = self._new_slot()
                        self.slots.append(fresh)
                        self.idle.append(fresh)
                else:
                    self.idle.append(slot)
            failed = self._dispatch() if self.state != _TERMINATE else []
            self.cond.notify_all()
        for slot in retired:
            _kill(slot.handle)
        self._fail(failed)
        for chunk, ok, value in delivered:
            chunk.sink._deliver(chunk.index, ok, value)

    def _abort(self, error: BaseException) -> None:
        with self.cond:
            self.state = _TERMINATE
            lost = [(c, error) for c, _ in self.inflight.values()]
            lost += [(c, error) for c in self.pending]
            self.inflight.clear()
            self.pending.clear()
            self.cond.notify_all()
        self._fail(lost)

    # -- ending

    def close(self) -> None:
        with self.cond:
            if self.state == _RUN:
                self.state = _CLOSE
            self.cond.notify_all()

    def terminate(self) -> None:
        with self.cond:
            self.state = _TERMINATE
            lost = [c for c, _ in self.inflight.values()] + list(self.pending)
            self.inflight.clear()
            self.pending.clear()
            slots, self.slots, self.idle = self.slots, [], []
            self.cond.notify_all()
        for slot in slots:
            _kill(slot.handle)
        self._fail(lost)
        self._join_thread()

    def join(self) -> None:
        """Waits for the queued work to finish (after close), then ends the workers."""
        with self.cond:
            while self.state == _CLOSE and (self.pending or self.inflight):
                self.cond.wait()
            slots, self.slots, self.idle = self.slots, [], []
        for slot in slots:
            _kill(slot.handle)
        self._join_thread()

    def _join_thread(self) -> None:
        t = self.thread
        if t.is_alive() and t is not threading.current_thread():
            t.join()


def _outcome(ref: Any) -> Tuple[bool, Any]:
    """A finished chunk's (ok, results or exception)."""
    try:
        res = api.get(ref, timeout=60)
    except Exception as e:  # the actor died, the results could not be pickled, ...
        return False, e
    if res[0] == "ok":
        return True, res[1]
    return False, _unpack_error(res)


def _item(value: Any) -> Any:
    """An imap result: a failed call's exception stands for its value."""
    return _unpack_error(value.packed) if type(value) is _ItemError else value


def _unpack_error(packed: Tuple[str, BaseException, str]) -> BaseException:
    _, exc, tb = packed
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _terminated_error() -> BaseException:
    # As Ray: the pool's actors were killed under the call (a RayError).
    return exceptions.RayActorError("the pool was terminated before this call finished")


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return max(0.0, float(timeout))


def _check_func(func: Any) -> None:
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")


def _check_chunksize(chunksize: Any) -> None:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an int, got {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize}")


# --------------------------------------------------------------------------
# Pool
# --------------------------------------------------------------------------


class Pool:
    """A pool of fleet actors with the ``multiprocessing.Pool`` API.

    Arguments:
        processes: how many worker actors; default: the cluster's CPU count.
            It may not exceed that count.
        initializer: if given, each worker calls ``initializer(*initargs)``
            when it starts. If it raises, the pool is not created and the
            error is raised here.
        initargs: arguments for ``initializer``.
        maxtasksperchild: replace a worker with a fresh one after it has run
            this many tasks (chunks); default: never.
        context: ignored (accepted for compatibility with the stdlib).
        ray_address: the cluster to connect to if fleet is not initialized
            yet (else ``FLEET_ADDRESS``/``RAY_ADDRESS``, else a new local
            cluster with ``processes`` CPUs).
        ray_remote_args: options for the worker actors (for example
            ``{"num_cpus": 1}``); by default they reserve no CPU.

    Callbacks run in the pool's result thread, as in the stdlib; they should
    return quickly. Used as a context manager, the pool is terminated on exit.
    """

    def __init__(
        self,
        processes: Optional[int] = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: Optional[Iterable[Any]] = None,
        maxtasksperchild: Optional[int] = None,
        context: Any = None,
        ray_address: Optional[str] = None,
        ray_remote_args: Optional[Dict[str, Any]] = None,
    ):
        self._core: Optional[_PoolCore] = None
        if isinstance(processes, bool) or not isinstance(processes, (int, type(None))):
            raise TypeError(f"processes must be an int or None, got {type(processes).__name__}")
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
            isinstance(maxtasksperchild, bool)
            or not isinstance(maxtasksperchild, int)
            or maxtasksperchild < 1
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if ray_remote_args is not None and not isinstance(ray_remote_args, dict):
            raise TypeError(
                f"ray_remote_args must be a dict of actor options, got "
                f"{type(ray_remote_args).__name__}"
            )
        initargs = tuple(initargs) if initargs is not None else ()

        self._processes = _connect(processes, ray_address)
        cls = _worker_actor_class()
        if ray_remote_args:
            cls = cls.options(**ray_remote_args)
        core = _PoolCore(cls, self._processes, initializer, initargs, maxtasksperchild)
        self._core = core
        self._iterators: weakref.WeakSet = weakref.WeakSet()
        try:
            core.start()
        except BaseException:
            core.terminate()
            raise

    # -- state

    def _check_running(self) -> _PoolCore:
        core = self._core
        if core is None or core.state != _RUN:
            raise ValueError("Pool not running")
        return core

    def __repr__(self) -> str:
        state = self._core.state if self._core is not None else "INIT"
        return f"<fleet.util.multiprocessing.Pool state={state} processes={self._processes}>"

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.terminate()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and core.state == _RUN:
            warnings.warn(f"unclosed running pool {self!r}", ResourceWarning, stacklevel=1)
            try:
                core.terminate()
            except Exception:
                pass

    # -- apply

    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Optional[Dict[str, Any]] = None,
    ) -> Any:
        """Calls ``func(*args, **kwds)`` in a worker and returns its result (or raises)."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Optional[Dict[str, Any]] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
    ) -> AsyncResult:
        """Starts ``func(*args, **kwds)`` in a worker; returns an ``AsyncResult``.

        ``callback(result)`` or ``error_callback(exception)`` is called in the
        pool's result thread when the call completes.
        """
        core = self._check_running()
        _check_func(func)
        args = tuple(args)
        kwds = dict(kwds) if kwds is not None else {}
        result = AsyncResult(self, callback, error_callback)
        core.submit([_Chunk(result, 0, func, _APPLY, (args, kwds))])
        return result

    # -- map

    def map(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None
    ) -> List[Any]:
        """``[func(x) for x in iterable]``, computed in the workers, in order.

        The input is cut into chunks of ``chunksize`` items (by default about
        four chunks per worker); the first exception raised is re-raised.
        """
        return self._map_async(func, iterable, _MAP, chunksize, None, None).get()

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
    ) -> AsyncResult:
        """Like ``map``, but returns an ``AsyncResult`` for the list of results."""
        return self._map_async(func, iterable, _MAP, chunksize, callback, error_callback)

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
    ) -> List[Any]:
        """Like ``map``, but each item is a tuple of arguments: ``func(*item)``."""
        return self._map_async(func, iterable, _STARMAP, chunksize, None, None).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: Optional[int] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        error_callback: Optional[Callable[[BaseException], Any]] = None,
    ) -> AsyncResult:
        """Like ``starmap``, but returns an ``AsyncResult`` for the list of results."""
        return self._map_async(func, iterable, _STARMAP, chunksize, callback, error_callback)

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: int,
        chunksize: Optional[int],
        callback: Optional[Callable[[Any], Any]],
        error_callback: Optional[Callable[[BaseException], Any]],
    ) -> AsyncResult:
        core = self._check_running()
        _check_func(func)
        items = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), self._processes * 4)
            if extra:
                chunksize += 1
        else:
            _check_chunksize(chunksize)
        starts = range(0, len(items), max(chunksize, 1))
        result = _MapResult(self, len(starts), callback, error_callback)
        core.submit(
            [_Chunk(result, i, func, mode, items[s : s + chunksize]) for i, s in enumerate(starts)]
        )
        return result

    def imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Like ``map``, but returns an iterator over the results, in order.

        The input is read lazily, a window of chunks ahead of the consumer.
        """
        return self._imap(func, iterable, chunksize, True)

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Like ``imap``, but yields the results in the order they finish."""
        return self._imap(func, iterable, chunksize, False)

    def _imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int, ordered: bool
    ) -> IMapIterator:
        self._check_running()
        _check_func(func)
        _check_chunksize(chunksize)
        it = IMapIterator(
            self, func, _MAP | _EACH, iterable, chunksize, ordered,
            window=max(8, 2 * self._processes),
        )
        self._iterators.add(it)
        return it

    # -- ending

    def close(self) -> None:
        """Accepts no more work; the work already given still completes."""
        core = self._core
        if core is None:
            return
        for it in list(self._iterators):
            if core.state == _RUN:
                it._feed(None)  # imap input not read yet is work already given
        core.close()

    def terminate(self) -> None:
        """Stops the workers now; unfinished calls fail with an error."""
        core = self._core
        if core is not None:
            core.terminate()

    def join(self) -> None:
        """Waits for the workers to finish their work and exit (after close or terminate).

        Raises:
            ValueError: the pool is still running (call ``close`` first).
        """
        core = self._core
        if core is None:
            return
        if core.state == _RUN:
            raise ValueError("Pool is still running")
        core.join()


def _connect(processes: Optional[int], address: Optional[str]) -> int:
    """Connects to (or starts) a cluster if needed; returns the number of workers."""
    if not api.is_initialized():
        address = address or os.environ.get("FLEET_ADDRESS") or os.environ.get("RAY_ADDRESS")
        if address and address != "local":
            api.init(address=address)
        else:
            api.init(num_cpus=processes)
    cpus = int(api.cluster_resources().get("CPU", 0))
    if processes is None:
        processes = cpus
    if processes < 1:
        raise ValueError("Processes in the pool must be >0 (the cluster has no CPUs).")
    if processes > cpus:
        raise ValueError(
            f"Tried to start a pool with {processes} processes on a cluster with only {cpus} CPUs."
        )
    return processes


__all__ = ["AsyncResult", "IMapIterator", "Pool"]
