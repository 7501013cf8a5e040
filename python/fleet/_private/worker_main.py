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
import json
import math
import os
import pickle
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

from fleet import _core
from fleet._private import serialization, state, task_context
from fleet._private.task_context import TaskContext
from fleet._private.version import version_tag
from fleet.actor import _ActorExit, _method_table
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

_canceled = task_context.canceled  # concurrent actors: calls fleet.cancel() was asked for
# task_context.enter/leave without a Python call around each (per call of a
# concurrent actor).
_enter = task_context._current.set
_leave = task_context._current.reset
_CAPTURE_ENV = "FLEET_PLACEMENT_GROUP_CAPTURE"
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


class Executor:
    def __init__(self, core: Any):
        self.core = core
        self.functions: Dict[str, Any] = {}
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
        self.actor_exiting = False  # exit_actor() called: start no more calls
        import threading

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
        return serialization.serialize_task_error(fn_name, e, self.pid, self.ip, self.node_id)

    def _errors(self, fn_name: str, e: BaseException, num_returns: int) -> Returns:
        """`e` as the value of every return (at least one)."""
        return [(self._error(fn_name, e), FLAG_PICKLED_ERROR)] * max(1, num_returns)

    def _call(self, handle: int, task_id: bytes, fn_name: str, fn: Any, args_blob: bytes,
              deps: list, num_returns: int, streaming: bool,
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
                returns = self._stream(handle, fn_name, result)
            else:
                returns = self._returns(handle, fn_name, result, num_returns)
            if main:
                _interruptible_task = None
            return returns, False
        except KeyboardInterrupt as e:
            _interruptible_task = None
            if self.core.take_cancel_request(task_id):
                return self._cancelled(fn_name, task_id, num_returns), False
            return self._errors(fn_name, e, num_returns), False
        except _ActorExit:
            self._exit_actor("it called fleet.actor.exit_actor()")
            raise  # not reached
        except BaseException as e:  # every other failure goes back to the caller
            if main:
                _interruptible_task = None
            retryable = self._retryable(e, retry_blob)
            return self._errors(fn_name, e, num_returns), retryable

    def _cancelled(self, fn_name: str, task_id: bytes, num_returns: int) -> Returns:
        text = f"Task {fn_name} (id {task_id.hex()}) was cancelled by fleet.cancel() while running."
        return [(text.encode(), FLAG_TASK_CANCELLED)] * max(1, num_returns)

    def _stream(self, handle: int, fn_name: str, result: Any) -> Returns:
        """Sends a generator's values one by one; the final return is the count."""
        import inspect

        if not inspect.isgenerator(result):
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
            self.core.send_generator_item(handle, n, self._error(fn_name, e), FLAG_PICKLED_ERROR)
            n += 1
        return [(_pickle_dumps(n), FLAG_GENERATOR_END)]

    def _returns(self, handle: int, fn_name: str, result: Any, num_returns: int) -> Returns:
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
            return [self._dump_return(handle, 0, False, fn_name, result)]
        if num_returns == 0:
            return []
        if type(result).__name__ == "generator":
            result = list(result)
        if not isinstance(result, (tuple, list)) or len(result) != num_returns:
            raise ValueError(
                f"Task '{fn_name}' has num_returns={num_returns} but returned "
                f"{type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            )
        return [self._dump_return(handle, i, False, fn_name, r) for i, r in enumerate(result)]

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
        if job_id != self.job_id:
            self.core.job_id = job_id  # nested tasks and puts belong to the caller's job
            self.job_id = job_id
        # This call's context: seen by its code, and by the asyncio task or
        # pool thread it runs on (they copy the context current here).
        actor_ctx = self.actor_ctx
        if kind == ACTOR_TASK and actor_ctx is not None:
            ctx = actor_ctx.for_call(task_id, job_id, fn_name)
        else:
            env_vars = t.env_vars
            capture = env_vars.get(_CAPTURE_ENV) if env_vars else None
            ctx = TaskContext(task_id, job_id, fn_name,
                              t.actor_id if kind == ACTOR_CREATION else None, t.resources,
                              t.gpu_ids, bytes.fromhex(capture) if capture else None)
        sequential = not self.concurrent
        if sequential:
            # One call at a time: the process's context is the call's, for
            # its code and the threads it starts (no ContextVar to set).
            task_context._process = ctx
        else:
            token = _enter(ctx)
        try:
            if kind == ACTOR_TASK:
                self._actor_call(handle, task_id, fn_name, t.method_name, t.args, t.deps,
                                 t.num_returns, t.streaming, t.concurrency_group)
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
            returns, retryable = self._call(handle, task_id, fn_name, fn, t.args, t.deps,
                                            num_returns, t.streaming, t.retry_exceptions)
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
        try:
            if job_id not in self.jobs_seen:
                self._setup_job(job_id)
            cls = self._function(t.function_key, self.class_name)
            if t.args:
                args, kwargs = serialization.deserialize_args(t.args, t.deps)
            else:
                args, kwargs = (), {}
            state.actor_meta = {"class_name": self.class_name, "methods": _method_table(cls),
                                "max_task_retries": 0}
            self.actor = cls(*args, **kwargs)
        except _ActorExit:
            self._exit_actor("it called fleet.actor.exit_actor() in its constructor")
        except BaseException as e:  # the actor is dead; fleet-gcs ends this process
            self.core.finish_task(handle, self._errors(fn_name, e, 1), False)
            return
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
                    args_blob: bytes, deps: list, num_returns: int, streaming: bool,
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
                self.loop.create_task(self._exit_when_idle(reason))
                return
            self._drain()
            self._exit_actor(reason, graceful=True)
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
                     args_blob: bytes, deps: list, num_returns: int, streaming: bool) -> None:
        if task_id in _canceled:  # cancelled while it waited for a pool thread
            _canceled.discard(task_id)
            self.core.finish_task(handle, self._cancelled(fn_name, task_id, num_returns), False)
            return
        with self.running_lock:
            self.running_calls += 1
        try:
            try:
                fn = getattr(self.actor, method_name)
            except AttributeError as e:
                returns: Returns = self._errors(fn_name, e, num_returns)
            else:
                returns, _ = self._call(handle, task_id, fn_name, fn, args_blob, deps,
                                        num_returns, streaming, b"")
            _canceled.discard(task_id)
            self.core.finish_task(handle, returns, False)
        finally:
            with self.running_lock:
                self.running_calls -= 1

    async def _call_async(self, handle: int, task_id: bytes, fn_name: str, method_name: str,
                          args_blob: bytes, deps: list, num_returns: int, streaming: bool,
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
            _canceled.discard(task_id)
        if returns is not None:
            self.core.finish_task(handle, returns, False)

    async def _run_async(self, handle: int, task_id: bytes, fn_name: str, method_name: str,
                         args_blob: bytes, deps: list, num_returns: int,
                         streaming: bool) -> Optional[Returns]:
        import asyncio
        import inspect

        try:
            fn = getattr(self.actor, method_name)
            if args_blob:
                args, kwargs = serialization.deserialize_args(args_blob, deps)
            else:
                args, kwargs = (), {}
            result = fn(*args, **kwargs)
            if streaming and inspect.isasyncgen(result):
                n = 0
                try:
                    async for value in result:
                        self.core.send_generator_item(
                            handle, n, *self._dump_return(handle, n, True, fn_name, value)
                        )
                        n += 1
                except asyncio.CancelledError:
                    raise
                except BaseException as e:
                    if isinstance(e, _ActorExit):
                        raise
                    self.core.send_generator_item(handle, n, self._error(fn_name, e),
                                                  FLAG_PICKLED_ERROR)
                    n += 1
                return [(_pickle_dumps(n), FLAG_GENERATOR_END)]
            if inspect.isawaitable(result):
                result = await result
            if streaming:
                return self._stream(handle, fn_name, result)
            return self._returns(handle, fn_name, result, num_returns)
        except asyncio.CancelledError:
            raise
        except _ActorExit:
            # The calls already running finish first (as Ray); this call gets
            # no reply: its caller sees the actor's death.
            self.actor_exiting = True
            self.loop.create_task(self._exit_when_idle("it called fleet.actor.exit_actor()"))
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

    def _exit_actor(self, reason: str, graceful: bool = False) -> None:
        """Ends this actor's process; fleet-gcs marks it dead (no restart).

        Calls already running on other threads finish first; calls not
        started fail (the process is gone) with an ActorDiedError."""
        self.actor_exiting = True
        if self.pools:
            import time

            with self.running_lock:
                if self._on_pool_thread():
                    self.exiting_calls += 1  # calls that called exit_actor() do not finish
            while True:
                with self.running_lock:
                    if self.running_calls <= self.exiting_calls:
                        break
                time.sleep(0.005)
        if self.actor_id is not None:
            shutdown = getattr(self.actor, "__ray_shutdown__", None)
            if graceful and callable(shutdown):
                try:
                    shutdown()
                except Exception as e:  # reported, the exit goes on
                    print(f"__ray_shutdown__ of {self.class_name} raised: {e!r}", file=sys.stderr)
            self.core.actor_exiting(self.actor_id, reason)
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
