"""Entry point of a worker process (started by fleet-node).

Connects the core library, then runs what is pushed to it: tasks one at a
time (look up the function, fetched once per job from the control store,
rebuild the arguments, run, send back the pickled returns or the error), or,
once an actor's creation task arrives, that actor's method calls: on this
thread for a plain actor, on a thread pool for a threaded one
(max_concurrency > 1, concurrency groups), on an asyncio event loop for an
async one.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import os
import pickle
import signal
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from fleet import _core
from fleet._private import proctitle, serialization, state, task_context
from fleet._private.task_context import TaskContext
from fleet._private.version import version_tag
from fleet.actor import _ActorExit, _method_table
from fleet.exceptions import AsyncioActorExit
from fleet.object_ref import collect_refs

FLAG_PICKLED_ERROR = _core.FLAG_PICKLED_ERROR
FLAG_TASK_CANCELLED = _core.FLAG_TASK_CANCELLED
FLAG_GENERATOR_END = _core.FLAG_GENERATOR_END
_pickle_dumps = pickle.dumps

# Task.kind is a plain int (a TaskKind value): compared as ints per task.
NORMAL_TASK = int(_core.TaskKind.NORMAL_TASK)
ACTOR_CREATION = int(_core.TaskKind.ACTOR_CREATION)
ACTOR_TASK = int(_core.TaskKind.ACTOR_TASK)
ACTOR_EXIT = int(_core.TaskKind.ACTOR_EXIT)

Returns = List[Tuple[bytes, int]]

# A task's `streaming` argument: 0 (plain returns), STREAMING (an
# ObjectRefGenerator reads the items as they come) or DYNAMIC
# (num_returns="dynamic": the items are also sent as they come, and the
# return value is a DynamicObjectRefGenerator holding them all).
STREAMING = 1
DYNAMIC = 2

_canceled = task_context.canceled  # concurrent actors: calls fleet.cancel() was asked for
# task_context.enter/leave without a Python call around each (per call of a
# concurrent actor).
_enter = task_context._current.set
_leave = task_context._current.reset
_CAPTURE_ENV = "FLEET_PLACEMENT_GROUP_CAPTURE"
# A graceful exit's cleanup (__ray_shutdown__, __del__, atexit) may take this
# long before the process ends anyway (Ray's actor_graceful_shutdown_timeout_ms).
_GRACEFUL_SHUTDOWN_TIMEOUT_S = float(
    os.environ.get("RAY_actor_graceful_shutdown_timeout_ms", "30000")) / 1000
# The task whose user code runs on the main thread now: the only time a
# cancel's SIGINT may raise KeyboardInterrupt (a late signal must not hit the
# loop, another task, or a reply on its way out).
_interruptible_task: Optional[bytes] = None


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _on_sigint(signum: int, frame: Any) -> None:
    task = _interruptible_task
    core = state.core
    if task is not None and core is not None and core.take_cancel_request(task, True):
        raise KeyboardInterrupt
    # Otherwise: a cancel that arrived too late, or the driver's Ctrl-C sent to
    # the whole process group; the worker goes on.


_set_title = proctitle.set
_MISSING = object()


def _class_attribute(cls: type, name: str) -> Any:
    """`name` as the class defines it (the raw descriptor), or _MISSING."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _MISSING


def _ray_call(instance: Any, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return fn(instance, *args, **kwargs)


class Executor:
    def __init__(self, core: Any):
        self.core = core
        self.functions: Dict[str, Any] = state.functions  # (runtime context reads it)
        self.jobs_seen: set = set()
        self.job_id = -1
        self.calls: Dict[str, int] = {}
        self.exiting = False
        self.pid = os.getpid()
        self.ip = os.environ.get("FLEET_NODE_IP", "127.0.0.1")
        self.node_id = os.environ.get("FLEET_NODE_ID", "")
        # Actor state, once a creation task arrived.
        self.actor: Any = None
        self.actor_id: Optional[bytes] = None
        self.descriptors: Dict[str, Any] = {}  # method name -> the class's attribute
        # The actor's context (no task): each call's context is made from it.
        self.actor_ctx: Optional[TaskContext] = None
        self.concurrent = False  # calls may overlap (threaded or async actor)
        self.class_name = ""
        # asyncio and thread pools are imported only by actors that use them
        # (they cost every worker's start otherwise).
        self.pools: Dict[str, Any] = {}  # threaded actor: group -> ThreadPoolExecutor
        self.loop: Any = None  # async actor: its asyncio event loop
        self.semaphores: Dict[str, Any] = {}
        self.running_async: Dict[bytes, Any] = {}  # task id -> asyncio.Task
        # Async actor calls whose generator items may wait for the reader
        # (backpressure): sent from a thread, not the event loop.
        self.backpressured: set = set()
        self.actor_exiting = False  # exit_actor() called: start no more calls
        self.is_async = False
        self.exit_scheduled = False  # async actor: _exit_when_idle is on its way
        self.exit_calls: set = set()  # ids of the calls that called exit_actor()
        import threading

        self.exit_lock = threading.Lock()  # held by the thread ending the process
        self.running_lock = threading.Lock()
        self.running_calls = 0  # threaded actor: calls running on the pools
        self.exiting_calls = 0  # ... of which called exit_actor()
        # OMP_NUM_THREADS as Ray sets it: the call's whole CPUs (at least 1),
        # unless the user set it in the environment. Cached per resource shape.
        self.omp_auto = "OMP_NUM_THREADS" not in os.environ
        self.omp_by_shape: Dict[str, str] = {}
        self.omp_now = ""

    # ---- shared -------------------------------------------------------------------

    def _setup_job(self, job_id: int) -> None:
        self.jobs_seen.add(job_id)
        blob = self.core.kv_get(f"job:{job_id}:sys_path")
        if blob:
            for p in reversed(pickle.loads(blob)):
                if p not in sys.path:
                    sys.path.insert(0, p)
        ns = self.core.kv_get(f"job:{job_id}:namespace")
        if ns:
            state.namespace = ns.decode()
        config = self.core.kv_get(f"job:{job_id}:config")
        if config:  # the driver's JobConfig: what its tasks' own submissions inherit
            job = json.loads(config)
            state.job_runtime_env = job.get("runtime_env") or {}
            state.default_actor_lifetime = job.get("default_actor_lifetime") or "non_detached"

    def _function(self, key: str, name: str) -> Any:
        fn = self.functions.get(key)
        if fn is None:
            blob = self.core.kv_get(key)
            if blob is None:
                raise RuntimeError(f"function '{name}' ({key}) is not in the function table")
            fn = pickle.loads(blob)
            self.functions[key] = fn
        return fn

    def _error(self, fn_name: str, e: BaseException) -> bytes:
        actor_id = self.actor_id
        return serialization.serialize_task_error(fn_name, e, self.pid, self.ip, self.node_id,
                                                  actor_id.hex() if actor_id else None)

    def _errors(self, fn_name: str, e: BaseException, num_returns: int) -> Returns:
        """`e` as the value of every return (at least one)."""
        return [(self._error(fn_name, e), FLAG_PICKLED_ERROR)] * max(1, num_returns)

    def _call(self, handle: int, task_id: bytes, fn_name: str, fn: Any, args_blob: bytes,
              deps: list, num_returns: int, streaming: int,
              retry_blob: bytes) -> Tuple[Returns, bool]:
        """Runs fn on this thread; returns (returns, retryable)."""
        global _interruptible_task
        main = _is_main_thread()
        try:
            if main:  # fleet.cancel may interrupt it from here on (see _on_sigint)
                _interruptible_task = task_id
            if args_blob:
                args, kwargs = serialization.deserialize_args(args_blob, deps)
                result = fn(*args, **kwargs)
            else:
                result = fn()
            if streaming:
                returns = self._stream(handle, task_id, fn_name, result, streaming, retry_blob)
            else:
                returns = self._returns(handle, fn_name, result, num_returns, retry_blob)
            if main:
                _interruptible_task = None
            return returns, False
        except KeyboardInterrupt as e:
            _interruptible_task = None
            if self.core.take_cancel_request(task_id):
                return self._cancelled(fn_name, task_id, num_returns), False
            return self._errors(fn_name, e, num_returns), False
        except _ActorExit:  # the caller ends the actor once this frame is gone
            if main:
                _interruptible_task = None
            return None, False  # type: ignore[return-value]
        except BaseException as e:  # every other failure goes back to the caller
            if main:
                _interruptible_task = None
            retryable = self._retryable(e, retry_blob)
            return self._errors(fn_name, e, num_returns), retryable

    def _cancelled(self, fn_name: str, task_id: bytes, num_returns: int) -> Returns:
        text = f"Task {fn_name} (id {task_id.hex()}) was cancelled by fleet.cancel() while running."
        return [(text.encode(), FLAG_TASK_CANCELLED)] * max(1, num_returns)

    def _stream(self, handle: int, task_id: bytes, fn_name: str, result: Any, mode: int,
                retry_blob: bytes = b"") -> Returns:
        """Sends a generator's values one by one, as items; the final return
        is the count (STREAMING) or the DynamicObjectRefGenerator (DYNAMIC).
        An exception ends the stream as its last item, unless the task is to
        be retried for it (retry_exceptions): then the next attempt sends the
        items again (the caller keeps the first copy of each)."""
        import inspect

        if not inspect.isgenerator(result):
            if mode == DYNAMIC:
                raise ValueError(
                    'Functions with @ray.remote(num_returns="dynamic" must return a generator'
                )
            raise TypeError(
                f"'{fn_name}' has num_returns='streaming' but returned "
                f"{type(result).__name__}, not a generator"
            )
        n = 0
        try:
            for value in result:
                self.core.send_generator_item(
                    handle, n, *self._dump_return(handle, n, True, fn_name, value)
                )
                n += 1
        except KeyboardInterrupt:
            raise
        except _ActorExit:
            raise
        except BaseException as e:  # the error is the next item; the stream ends
            if self._retryable(e, retry_blob):
                raise
            self.core.send_generator_item(handle, n, self._error(fn_name, e), FLAG_PICKLED_ERROR)
            n += 1
        return self._stream_end(handle, task_id, n, mode)

    def _stream_end(self, handle: int, task_id: bytes, n: int, mode: int) -> Returns:
        """The final return of a generator task that sent `n` items."""
        if mode != DYNAMIC:
            return [(_pickle_dumps(n), FLAG_GENERATOR_END)]
        from fleet._private.generator import DynamicObjectRefGenerator
        from fleet.object_ref import ObjectRef

        # The caller owns the items (they went back as generator items) and
        # the return value holds them; the refs name the caller as owner.
        owner = self.core.hold_generator_items(handle, n)
        refs = []
        for i in range(n):
            r = ObjectRef.__new__(ObjectRef)
            r._id, r._owner, r._core = _core.generator_item_id(task_id, i), owner, None
            refs.append(r)
        data, buffers = serialization.serialize(DynamicObjectRefGenerator(refs), [])
        if serialization.is_inline(data, buffers):
            return [(data, 0)]
        return [self.core.encode_return(handle, 0, False, data, buffers)]

    def _returns(self, handle: int, fn_name: str, result: Any, num_returns: int,
                 retry_blob: bytes = b"") -> Returns:
        if num_returns == 1:
            nested: List[bytes] = []
            prev = collect_refs(nested)
            try:  # the common case, inlined: plain pickle of a small value
                data = _pickle_dumps(result, 5)
                if len(data) < 65536 and b"__main__" not in data:
                    if nested:
                        self.core.register_return_refs(handle, 0, nested)
                    return [(data, 0)]
            except Exception:
                pass
            finally:
                collect_refs(prev)
            if type(result).__name__ == "generator":
                return self._generator_returns(handle, fn_name, result, 1, retry_blob)
            return [self._dump_return(handle, 0, False, fn_name, result)]
        if num_returns == 0:
            return []
        if type(result).__name__ == "generator":
            return self._generator_returns(handle, fn_name, result, num_returns, retry_blob)
        if not isinstance(result, (tuple, list)) or len(result) != num_returns:
            raise ValueError(
                f"Task '{fn_name}' has num_returns={num_returns} but returned "
                f"{type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            )
        return [self._dump_return(handle, i, False, fn_name, r) for i, r in enumerate(result)]

    def _generator_returns(self, handle: int, fn_name: str, gen: Any, num_returns: int,
                           retry_blob: bytes) -> Returns:
        """A generator's values as a fixed number of returns (as Ray): each
        value is stored as it is yielded, so the ones before an exception
        stay readable and only the later positions hold the error. Too few
        values: the missing positions hold a ValueError. Too many: the first
        `num_returns` are kept and the surplus is reported on stderr."""
        returns: Returns = []
        try:
            for value in gen:
                if len(returns) == num_returns:
                    print(
                        f"ValueError: Task '{fn_name}' returned more than "
                        f"num_returns={num_returns} objects; the extra values are dropped.",
                        file=sys.stderr,
                    )
                    break
                returns.append(self._dump_return(handle, len(returns), False, fn_name, value))
            if len(returns) < num_returns:
                raise ValueError(
                    f"Task returned {len(returns)} objects, but num_returns={num_returns}."
                )
        except (KeyboardInterrupt, _ActorExit):
            raise
        except BaseException as e:
            if self._retryable(e, retry_blob):
                raise
            err = (self._error(fn_name, e), FLAG_PICKLED_ERROR)
            returns.extend([err] * (num_returns - len(returns)))
        return returns

    def _dump_return(
        self, handle: int, index: int, generator_item: bool, fn_name: str, value: Any
    ) -> Tuple[bytes, int]:
        """(data, flags) of a return value or generator item: inline, or
        written to the node's object store (owned by the caller)."""
        # Refs inside a return value or generator item are handed to the
        # caller (registered as its borrows; its object holds them).
        nested: List[bytes] = []
        try:
            data, buffers = serialization.serialize(value, nested)
        except TypeError as e:
            raise TypeError(
                f"Could not serialize the return value of task '{fn_name}': {e}"
            ) from None
        if nested:
            self.core.register_return_refs(handle, index, nested, generator_item)
        if serialization.is_inline(data, buffers):
            return data, 0
        return self.core.encode_return(handle, index, generator_item, data, buffers)

    @staticmethod
    def _retryable(e: BaseException, retry_blob: bytes) -> bool:
        if not retry_blob:
            return False
        if retry_blob == b"1":
            return True
        try:
            types = pickle.loads(retry_blob)
        except Exception:
            return False
        return isinstance(e, tuple(types))

    # ---- dispatch -------------------------------------------------------------------

    def run(self, t: Any) -> None:
        """Runs (or, for a concurrent actor, starts) one task: a fleet._core.Task."""
        handle = t.handle
        if handle == 0:  # a cancel notice for a call running concurrently
            self._cancel_running(t.task_id)
            return
        task_id = t.task_id
        job_id = t.job_id
        fn_name = t.function_name
        kind = t.kind
        if fn_name:
            _set_title(fn_name)  # fleet::<task name> (no system call when unchanged)
        if job_id != self.job_id:
            self.core.job_id = job_id  # nested tasks and puts belong to the caller's job
            self.job_id = job_id
        # This call's context: seen by its code, and by the asyncio task or
        # pool thread it runs on (they copy the context current here).
        actor_ctx = self.actor_ctx
        if kind == ACTOR_TASK and actor_ctx is not None:
            ctx = actor_ctx.for_call(task_id, job_id, fn_name, t.method_name)
        else:
            env_vars = t.env_vars
            capture = env_vars.get(_CAPTURE_ENV) if env_vars else None
            ctx = TaskContext(task_id, job_id, fn_name,
                              t.actor_id if kind == ACTOR_CREATION else None, t.resources,
                              t.gpu_ids, bytes.fromhex(capture) if capture else None,
                              t.function_key if kind == NORMAL_TASK else "__init__")
        sequential = not self.concurrent
        if sequential:
            # One call at a time: the process's context is the call's, for
            # its code and the threads it starts (no ContextVar to set).
            task_context._process = ctx
        else:
            token = _enter(ctx)
        try:
            if kind == ACTOR_TASK:
                streaming = t.streaming
                if streaming:
                    if t.dynamic_returns:
                        streaming = DYNAMIC
                    if t.generator_backpressure > 0:
                        self.backpressured.add(handle)  # its items may wait for the reader
                self._actor_call(handle, task_id, fn_name, t.method_name, t.args, t.deps,
                                 t.num_returns, streaming, t.concurrency_group)
            elif kind == NORMAL_TASK:
                self._task(t, handle, task_id, job_id, fn_name)
            elif kind == ACTOR_CREATION:
                self._create_actor(t, handle, job_id, fn_name)
            elif kind == ACTOR_EXIT:
                if self.loop is not None:
                    self.loop.create_task(
                        self._exit_when_idle("all references to it went out of scope"))
                    return
                self._drain()
                self._exit_actor("all references to it went out of scope", graceful=True)
                return
        finally:
            if sequential:
                task_context._process = self.actor_ctx
            else:
                _leave(token)

    def _task(self, t: Any, handle: int, task_id: bytes, job_id: int, fn_name: str) -> None:
        fn_key = t.function_key
        num_returns = t.num_returns
        env_vars = t.env_vars
        gpu_ids = t.gpu_ids
        if self.omp_auto:
            self._set_omp_threads(t.resources)
        changed_env = self._apply_env(env_vars, gpu_ids) if (env_vars or gpu_ids) else None
        try:
            if job_id not in self.jobs_seen:
                self._setup_job(job_id)
            fn = self.functions.get(fn_key) or self._function(fn_key, fn_name)
            streaming = t.streaming
            if streaming and t.dynamic_returns:
                streaming = DYNAMIC
            returns, retryable = self._call(handle, task_id, fn_name, fn, t.args, t.deps,
                                            num_returns, streaming, t.retry_exceptions)
            if returns is None:  # fleet.actor._ActorExit raised by hand in a task
                raise TypeError("exit_actor API is called on a non-actor worker")
        except BaseException as e:  # the function could not even be loaded
            returns = self._errors(fn_name, e, num_returns)
            retryable = False
        finally:
            if changed_env:
                self._restore_env(changed_env)
        exiting = False
        max_calls = t.max_calls
        if max_calls:
            n = self.calls.get(fn_key, 0) + 1
            self.calls[fn_key] = n
            exiting = n >= max_calls
        self.core.finish_task(handle, returns, retryable, exiting)
        if exiting:
            self.exiting = True  # max_calls reached: this worker leaves

    # ---- actors ---------------------------------------------------------------------

    def _create_actor(self, t: Any, handle: int, job_id: int, fn_name: str) -> None:
        env_vars, gpu_ids, actor_id = t.env_vars, t.gpu_ids, t.actor_id
        # This process is the actor's for good: its environment is set once.
        if self.omp_auto:
            self._set_omp_threads(t.resources)
        os.environ.update(env_vars)
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        state.actor_restarts = t.attempt
        self.actor_id = actor_id
        ctx = task_context.current()
        assert ctx is not None  # run() entered this call's context
        self.actor_ctx = TaskContext(None, job_id, "", actor_id, t.resources, gpu_ids,
                                     ctx.capture_group)
        opts = pickle.loads(t.actor_options)
        self.class_name = opts["class_name"]
        state.actor_name = opts.get("name") or ""
        self.is_async = bool(opts["is_async"])
        state.actor_exit_hook = self._request_exit
        exit_in_constructor = False
        try:
            if job_id not in self.jobs_seen:
                self._setup_job(job_id)
            cls = self._function(t.function_key, self.class_name)
            state.actor_class = cls
            if t.args:
                args, kwargs = serialization.deserialize_args(t.args, t.deps)
            else:
                args, kwargs = (), {}
            state.actor_meta = {"class_name": self.class_name, "methods": _method_table(cls),
                                "max_task_retries": 0}
            self.actor = cls(*args, **kwargs)
        except (_ActorExit, AsyncioActorExit):
            exit_in_constructor = True
        except BaseException as e:  # the actor is dead; fleet-gcs ends this process
            if not self.exit_calls:
                self.core.finish_task(handle, self._errors(fn_name, e, 1), False)
                return
        if exit_in_constructor or self.exit_calls:  # (caught by the constructor: exits anyway)
            self._exit_actor("exit_actor() is called in its constructor.", graceful=True)
        _set_title(self.class_name.rpartition(".")[2])  # fleet::<Class>, as Ray titles actors
        max_concurrency = opts["max_concurrency"]
        groups = opts["concurrency_groups"]
        if opts["is_async"]:
            import asyncio

            # The main thread runs this loop from now on (serve_async).
            self.loop = asyncio.new_event_loop()
            self.semaphores = {"": asyncio.Semaphore(max_concurrency)}
            for g, n in groups.items():
                self.semaphores[g] = asyncio.Semaphore(n)
        elif max_concurrency > 1 or groups:
            from concurrent.futures import ThreadPoolExecutor

            if max_concurrency > 1:
                self.pools[""] = ThreadPoolExecutor(max_concurrency, "fleet-actor")
            for g, n in groups.items():
                self.pools[g] = ThreadPoolExecutor(n, f"fleet-actor-{g}")
        if self.loop is not None or self.pools:  # calls may run concurrently
            self.core.set_concurrent(True)
            self.concurrent = True
        self.core.finish_task(handle, [(_pickle_dumps(None), 0)], False)

    def _actor_call(self, handle: int, task_id: bytes, fn_name: str, method_name: str,
                    args_blob: bytes, deps: list, num_returns: int, streaming: int,
                    group: str) -> None:
        if self.actor is None:
            err = RuntimeError(f"this worker hosts no actor (call {fn_name})")
            self.core.finish_task(handle, self._errors(fn_name, err, 1), False)
            return
        if self.actor_exiting:
            return  # exit_actor() was called: this call fails when the process ends
        if method_name == "__ray_ready__":
            self.core.finish_task(handle, [(_pickle_dumps(True), 0)], False)
            return
        if method_name == "__ray_terminate__":
            reason = "it was terminated by __ray_terminate__()"
            if self.loop is not None:
                self.actor_exiting = True
                self.loop.create_task(self._exit_when_idle(reason))
                return
            self._drain()
            self._exit_actor(reason, graceful=True)
            return
        if self.loop is not None:
            if group and group not in self.semaphores:
                self._bad_group(handle, fn_name, group, num_returns)
                return
            coro = self._call_async(handle, task_id, fn_name, method_name, args_blob, deps,
                                    num_returns, streaming, group)
            self.loop.create_task(coro)  # we are on the loop's thread (serve_async)
            return
        pool = self.pools.get(group)
        if pool is None and group:
            self._bad_group(handle, fn_name, group, num_returns)
            return
        if pool is not None:
            # In a copy of this call's context (a pool thread keeps none of its own).
            pool.submit(contextvars.copy_context().run, self._call_method, handle, task_id,
                        fn_name, method_name, args_blob, deps, num_returns, streaming)
        else:
            self._call_method(handle, task_id, fn_name, method_name, args_blob, deps,
                              num_returns, streaming)

    def _method(self, name: str) -> Any:
        """The actor's method `name`, bound to the instance. Looked up on
        the class, as Ray does: an instance attribute of the same name does
        not hide it. ``__ray_call__`` (Ray's built-in) calls a function
        given with the actor instance as first argument."""
        actor = self.actor
        desc = self.descriptors.get(name)
        if desc is None:
            desc = self.descriptors[name] = _class_attribute(type(actor), name)
        if desc is not _MISSING:
            get = getattr(desc, "__get__", None)
            return get(actor, type(actor)) if get is not None else desc
        try:
            return getattr(actor, name)  # made by __getattr__, or set on the instance
        except AttributeError:
            if name == "__ray_call__":
                return functools.partial(_ray_call, actor)
            raise

    @staticmethod
    def _on_pool_thread() -> bool:
        import threading

        return threading.current_thread() is not threading.main_thread()

    def _bad_group(self, handle: int, fn_name: str, group: str, num_returns: int) -> None:
        err = ValueError(f"'{fn_name}' asked for concurrency group '{group}', which the actor "
                         "class does not define (concurrency_groups=...)")
        self.core.finish_task(
            handle, self._errors(fn_name, err, num_returns), False
        )

    def _call_method(self, handle: int, task_id: bytes, fn_name: str, method_name: str,
                     args_blob: bytes, deps: list, num_returns: int, streaming: int) -> None:
        if task_id in _canceled:  # cancelled while it waited for a pool thread
            _canceled.discard(task_id)
            self.core.finish_task(handle, self._cancelled(fn_name, task_id, num_returns), False)
            return
        with self.running_lock:
            self.running_calls += 1
        exiting = False
        try:
            try:
                fn = self._method(method_name)
            except AttributeError as e:
                returns: Returns = self._errors(fn_name, e, num_returns)
            else:
                returns, _ = self._call(handle, task_id, fn_name, fn, args_blob, deps,
                                        num_returns, streaming, b"")
                fn = None  # a bound method holds the instance (its __del__ on exit)
            _canceled.discard(task_id)
            # exit_actor() was called (maybe caught by the method): no reply,
            # the caller sees the actor's death.
            exiting = returns is None or (self.actor_exiting and task_id in self.exit_calls)
            if not exiting:
                self.core.finish_task(handle, returns, False)
        finally:
            with self.running_lock:
                self.running_calls -= 1
        if exiting:
            self._exit_actor("exit_actor() is called.", graceful=True)

    async def _call_async(self, handle: int, task_id: bytes, fn_name: str, method_name: str,
                          args_blob: bytes, deps: list, num_returns: int, streaming: int,
                          group: str) -> None:
        import asyncio

        me = asyncio.current_task()
        self.running_async[task_id] = me
        try:
            async with self.semaphores[group]:
                if task_id in _canceled:  # cancelled while it waited for its turn
                    raise asyncio.CancelledError
                returns = await self._run_async(handle, task_id, fn_name, method_name,
                                                args_blob, deps, num_returns, streaming)
        except asyncio.CancelledError:
            returns = self._cancelled(fn_name, task_id, num_returns)
        finally:
            self.running_async.pop(task_id, None)
            self.backpressured.discard(handle)
            _canceled.discard(task_id)
        if returns is not None and not (self.actor_exiting and task_id in self.exit_calls):
            self.core.finish_task(handle, returns, False)

    async def _run_async(self, handle: int, task_id: bytes, fn_name: str, method_name: str,
                         args_blob: bytes, deps: list, num_returns: int,
                         streaming: int) -> Optional[Returns]:
        import asyncio
        import inspect

        try:
            fn = self._method(method_name)
            if args_blob:
                args, kwargs = serialization.deserialize_args(args_blob, deps)
            else:
                args, kwargs = (), {}
            result = fn(*args, **kwargs)
            if streaming and inspect.isasyncgen(result):
                n = 0
                waits = handle in self.backpressured
                try:
                    async for value in result:
                        item = self._dump_return(handle, n, True, fn_name, value)
                        if waits:  # may block until the reader catches up: not on the loop
                            await asyncio.get_running_loop().run_in_executor(
                                None, self.core.send_generator_item, handle, n, *item)
                        else:
                            self.core.send_generator_item(handle, n, *item)
                        n += 1
                except asyncio.CancelledError:
                    raise
                except BaseException as e:
                    if isinstance(e, (_ActorExit, AsyncioActorExit)):
                        raise
                    self.core.send_generator_item(handle, n, self._error(fn_name, e),
                                                  FLAG_PICKLED_ERROR)
                    n += 1
                return self._stream_end(handle, task_id, n, streaming)
            if inspect.isawaitable(result):
                result = await result
            if streaming:
                return self._stream(handle, task_id, fn_name, result, streaming)
            return self._returns(handle, fn_name, result, num_returns)
        except asyncio.CancelledError:
            raise
        except (_ActorExit, AsyncioActorExit):
            # exit_actor() scheduled the exit (the calls already running
            # finish first); this call gets no reply: its caller sees the
            # actor's death.
            return None
        except BaseException as e:
            return self._errors(fn_name, e, num_returns)

    def _cancel_running(self, task_id: bytes) -> None:
        _canceled.add(task_id)
        t = self.running_async.get(task_id)
        if t is not None:
            t.cancel()  # on the loop's thread

    def _drain(self) -> None:
        """Waits for the calls running on thread pools (before an orderly exit)."""
        for pool in self.pools.values():
            pool.shutdown(wait=True)

    async def _exit_when_idle(self, reason: str) -> None:
        import asyncio

        while self.running_async:
            await asyncio.sleep(0.01)
        self._exit_actor(reason, graceful=True)

    def serve_async(self) -> None:
        """Async actor: the main thread runs the event loop; tasks arrive via
        an eventfd the core signals, so no thread hop sits between the socket
        and the loop."""
        import asyncio

        loop = self.loop
        asyncio.set_event_loop(loop)
        core = self.core
        fd = core.enable_task_events()
        try_next = core.try_next_task
        run = self.run

        def on_ready() -> None:
            try:
                os.read(fd, 8)
            except BlockingIOError:
                pass
            while True:
                t = try_next()
                if t is None:
                    return
                if t is False:  # the worker must exit
                    loop.stop()
                    return
                run(t)

        loop.add_reader(fd, on_ready)
        loop.run_forever()

    def _request_exit(self) -> bool:
        """exit_actor() was called: this actor exits once the call unwinds
        (even if its code catches the exception). True for an async actor,
        whose exit is scheduled on its event loop here."""
        ctx = task_context.current()
        self.exit_calls.add(ctx.task_id if ctx is not None else None)
        self.actor_exiting = True
        if not self.is_async:
            return False
        if self.loop is not None and not self.exit_scheduled:
            self.exit_scheduled = True
            self.loop.call_soon_threadsafe(
                lambda: self.loop.create_task(self._exit_when_idle("exit_actor() is called.")))
        return True

    def _exit_actor(self, reason: str, graceful: bool = False) -> None:
        """Ends this actor's process; fleet-gcs marks it dead (no restart).

        Calls already running on other threads finish first; calls not
        started fail (the process is gone) with an ActorDiedError. A graceful
        exit (exit_actor, __ray_terminate__, last handle gone; not
        fleet.kill, which kills the process) first runs the actor's
        ``__ray_shutdown__``, then lets the instance go (``__del__``), then
        the ``atexit`` handlers, as Ray does, within
        ``_GRACEFUL_SHUTDOWN_TIMEOUT_S``."""
        import time

        self.actor_exiting = True
        if not self.exit_lock.acquire(blocking=False):
            return  # another thread is ending the process
        if self.pools:
            while True:  # the calls still running on the pools finish
                with self.running_lock:
                    if self.running_calls <= 0:
                        break
                time.sleep(0.005)
        if self.actor_id is not None:
            self.core.actor_exiting(self.actor_id, reason)
        if graceful and self.actor_id is not None:
            import threading

            watchdog = threading.Timer(_GRACEFUL_SHUTDOWN_TIMEOUT_S, os._exit, (0,))
            watchdog.daemon = True
            watchdog.start()
            shutdown = getattr(self.actor, "__ray_shutdown__", None)
            if callable(shutdown):
                try:
                    shutdown()
                except BaseException as e:  # reported, the exit goes on
                    print(f"__ray_shutdown__ of {self.class_name} raised: {e!r}", file=sys.stderr)
            shutdown = None
            self.actor = None  # its __del__ runs (if nothing else holds it)
            import atexit
            import gc

            gc.collect()
            atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        self.core.shutdown()
        os._exit(0)

    # ---- environment ------------------------------------------------------------------

    def _set_omp_threads(self, resources: str) -> None:
        n = self.omp_by_shape.get(resources)
        if n is None:
            cpus = TaskContext(None, 0, "", None, resources, [], None).assigned_resources()
            n = self.omp_by_shape[resources] = str(max(1, math.floor(cpus.get("CPU", 1))))
        if n != self.omp_now:
            os.environ["OMP_NUM_THREADS"] = n
            self.omp_now = n

    def _apply_env(self, env_vars: Dict[str, str], gpu_ids: List[int]) -> Dict[str, Any]:
        if not env_vars and not gpu_ids:
            return {}
        changed: Dict[str, Any] = {}
        for k, v in env_vars.items():
            changed[k] = os.environ.get(k)
            os.environ[k] = v
        if gpu_ids:
            changed.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        return changed

    @staticmethod
    def _restore_env(changed: Dict[str, Any]) -> None:
        for k, v in changed.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    # fleet.cancel interrupts a running task with SIGINT -> KeyboardInterrupt,
    # raised only while that task's code runs (_on_sigint).
    signal.signal(signal.SIGINT, _on_sigint)
    session_dir = os.environ["FLEET_SESSION_DIR"]
    worker_hex = os.environ["FLEET_WORKER_ID"]
    core = _core.Core(
        {
            "is_worker": "1",
            "node_address": os.environ["FLEET_NODE_ADDRESS"],
            "gcs_address": os.environ["FLEET_GCS_ADDRESS"],
            "token": os.environ["FLEET_CLUSTER_TOKEN"],
            "session_dir": session_dir,
            "worker_id": worker_hex,
            "listen_path": os.path.join(session_dir, "sockets", f"worker-{worker_hex[:16]}.sock"),
            "node_ip": os.environ.get("FLEET_NODE_IP", "127.0.0.1"),
            "version": version_tag(),
        }
    )
    os.environ.pop("FLEET_CLUSTER_TOKEN", None)  # user code need not see it
    state.core = core
    state.mode = "worker"
    state.session_dir = session_dir
    state.gcs_address = os.environ["FLEET_GCS_ADDRESS"]
    state.node_ip = os.environ.get("FLEET_NODE_IP", "127.0.0.1")
    proctitle.set("IDLE")
    ex = Executor(core)
    next_task = core.next_task
    run = ex.run
    while not ex.exiting:
        try:
            t = next_task()
            if t is None:
                break
            run(t)
            t = None  # its arguments may pin objects in the store: let go now
            if ex.loop is not None:  # became an async actor: the event loop takes over
                ex.serve_async()
                break
        except KeyboardInterrupt:
            # A cancel that arrived just as its task finished: not for us.
            continue
    core.shutdown()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
