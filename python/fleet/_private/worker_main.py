"""Entry point of a worker process (started by fleet-node).

Connects the core library, then runs tasks pushed to it one at a time:
look up the function (fetched once per job from the control store), rebuild
the arguments, run, and send back the pickled returns or the error.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Dict, List, Tuple

from fleet import _core
from fleet._private import serialization, state

FLAG_PICKLED_ERROR = _core.FLAG_PICKLED_ERROR
_pickle_dumps = pickle.dumps


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
        self.base_env = dict(os.environ)
        self.base_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")

    def _setup_job(self, job_id: int) -> None:
        self.jobs_seen.add(job_id)
        blob = self.core.kv_get(f"job:{job_id}:sys_path")
        if blob:
            for p in reversed(pickle.loads(blob)):
                if p not in sys.path:
                    sys.path.insert(0, p)

    def _function(self, key: str, name: str) -> Any:
        fn = self.functions.get(key)
        if fn is None:
            blob = self.core.kv_get(key)
            if blob is None:
                raise RuntimeError(f"function '{name}' ({key}) is not in the function table")
            fn = pickle.loads(blob)
            self.functions[key] = fn
        return fn

    def run(self, t: tuple) -> None:
        (handle, task_id, job_id, fn_key, fn_name, args_blob, deps, num_returns,
         retry_blob, env_vars, gpu_ids, _attempt, resources, max_calls) = t
        state.current_task_id = task_id
        state.current_function = fn_name
        state.current_gpu_ids = gpu_ids
        state.current_resources = resources
        state.current_job_id = job_id
        core = self.core
        if job_id != self.job_id:
            core.job_id = job_id  # nested tasks and puts belong to the caller's job
            self.job_id = job_id
        changed_env = self._apply_env(env_vars, gpu_ids) if (env_vars or gpu_ids) else None
        returns: List[Tuple[bytes, int]]
        retryable = False
        try:
            if job_id not in self.jobs_seen:
                self._setup_job(job_id)
            fn = self.functions.get(fn_key) or self._function(fn_key, fn_name)
            if args_blob:
                args, kwargs = serialization.deserialize_args(args_blob, deps)
                result = fn(*args, **kwargs)
            else:
                result = fn()
            returns = self._returns(fn_name, result, num_returns)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # every other failure goes back to the caller
            retryable = self._retryable(e, retry_blob)
            err = serialization.serialize_task_error(fn_name, e, self.pid, self.ip, self.node_id)
            returns = [(err, FLAG_PICKLED_ERROR)] * max(1, num_returns)
        finally:
            if changed_env:
                self._restore_env(changed_env)
            state.current_task_id = None
        exiting = False
        if max_calls:
            n = self.calls.get(fn_key, 0) + 1
            self.calls[fn_key] = n
            exiting = n >= max_calls
        core.finish_task(handle, returns, retryable, exiting)
        if exiting:
            self.exiting = True  # max_calls reached: this worker leaves

    def _returns(self, fn_name: str, result: Any, num_returns: int) -> List[Tuple[bytes, int]]:
        if num_returns == 1:
            try:  # the common case, inlined: plain pickle of a small value
                data = _pickle_dumps(result, 5)
                if len(data) < 65536 and b"__main__" not in data:
                    return [(data, 0)]
            except Exception:
                pass
            return [(self._dump_return(fn_name, result), 0)]
        if num_returns == 0:
            return []
        if not isinstance(result, (tuple, list)) or len(result) != num_returns:
            raise ValueError(
                f"Task '{fn_name}' has num_returns={num_returns} but returned "
                f"{type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            )
        return [(self._dump_return(fn_name, r), 0) for r in result]

    @staticmethod
    def _dump_return(fn_name: str, value: Any) -> bytes:
        try:
            data = serialization.dumps(value)
        except TypeError as e:
            raise TypeError(
                f"Could not serialize the return value of task '{fn_name}': {e}"
            ) from None
        serialization.check_inline_size(data, f"The return value of task '{fn_name}'")
        return data

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
        t = next_task()
        if t is None:
            break
        run(t)
    core.shutdown()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
