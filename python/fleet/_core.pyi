"""Type stub of fleet._core, the nanobind binding of the C++ core library
(python/bindings/core_module.cc). Started from ``python -m nanobind.stubgen
-m fleet._core``, then given parameter names and precise types by hand;
tests/test_core_stub.py checks that it names everything the module defines.

Ids are bytes (16 for tasks, actors and nodes; 20 for objects). A value
crosses as ``(data, flags)``: ``data`` pickle bytes (or, with FLAG_IN_STORE,
a StoreBuffer of the node's shared memory), ``flags`` the FLAG_* bits.
"""

import enum
from collections.abc import Mapping, Sequence
from typing import Optional, Union

_Value = tuple[Union[bytes, "StoreBuffer"], int]

FLAG_PICKLED_ERROR: int = 1

FLAG_WORKER_CRASHED: int = 2

FLAG_OBJECT_LOST: int = 4

FLAG_OWNER_DIED: int = 8

FLAG_TASK_CANCELLED: int = 16

FLAG_SYSTEM_ERROR: int = 32

FLAG_ACTOR_DIED: int = 64

FLAG_GENERATOR_END: int = 128

FLAG_IN_STORE: int = 256

ERROR_FLAGS: int = 127

INLINE_THRESHOLD: int = 102400

class TaskKind(enum.IntEnum):
    """What a task is (TaskSpec.kind)."""

    NORMAL_TASK = 0

    ACTOR_CREATION = 1

    ACTOR_TASK = 2

    ACTOR_EXIT = 3

class ActorState(enum.IntEnum):
    """An actor's state (ActorInfo.State)."""

    PENDING = 0

    ALIVE = 1

    RESTARTING = 2

    DEAD = 3

class PlacementGroupState(enum.IntEnum):
    """A placement group's state (PlacementGroupInfo.State)."""

    PENDING = 0

    CREATED = 1

    REMOVED = 2

    RESCHEDULING = 3

class Task(tuple):
    """One task pushed to this worker (read-only): a struct sequence, a tuple
    with named fields. handle == 0: a cancel notice for the running call
    task_id."""

    def __new__(cls, fields: tuple, /) -> Task: ...
    n_fields: int
    n_sequence_fields: int
    n_unnamed_fields: int

    @property
    def handle(self) -> int:
        """Names the task to finish_task and encode_return."""

    @property
    def task_id(self) -> bytes: ...
    @property
    def job_id(self) -> int: ...
    @property
    def function_key(self) -> str:
        """Key of the pickled function or class."""

    @property
    def function_name(self) -> str: ...
    @property
    def args(self) -> bytes:
        """Pickled (args, kwargs[, positions]); empty: no arguments."""

    @property
    def deps(self) -> list[_Value]:
        """(data, flags) of each top-level ObjectRef argument."""

    @property
    def num_returns(self) -> int: ...
    @property
    def retry_exceptions(self) -> bytes: ...
    @property
    def env_vars(self) -> dict[str, str]: ...
    @property
    def gpu_ids(self) -> list[int]: ...
    @property
    def attempt(self) -> int: ...
    @property
    def resources(self) -> str:
        """The resource shape, as "CPU=1;GPU=0.5"."""

    @property
    def max_calls(self) -> int: ...
    @property
    def actor_id(self) -> bytes: ...
    @property
    def method_name(self) -> str: ...
    @property
    def kind(self) -> int:
        """A TaskKind value."""
    @property
    def actor_options(self) -> bytes: ...
    @property
    def concurrency_group(self) -> str: ...
    @property
    def streaming(self) -> bool: ...
    @property
    def dynamic_returns(self) -> bool:
        """num_returns="dynamic": return 0 is a DynamicObjectRefGenerator."""
    @property
    def generator_backpressure(self) -> int:
        """Items a generator may have not yet taken by its reader (0: any)."""
    def __repr__(self) -> str: ...

class StoreBuffer:
    def __len__(self) -> int: ...
    @property
    def object_id(self) -> bytes: ...

def random_id() -> bytes: ...
def return_object_id(task_id: bytes, index: int, /) -> bytes: ...
def frame(inband: bytes, buffers: list, /) -> bytes: ...
def generator_item_id(task_id: bytes, index: int, /) -> bytes: ...
def probe_nodes(
    gcs_address: str, token: str, version: str, timeout_ms: int = 10000
) -> list[dict]: ...

class TaskTemplate:
    def __init__(
        self,
        function_key: str,
        function_name: str,
        num_returns: int,
        resources: Mapping[str, float],
        retry_exceptions: bytes,
        env_vars: Mapping[str, str],
        max_calls: int,
        streaming: bool = False,
        dynamic_returns: bool = False,
        generator_backpressure_num_objects: int = 0,
    ) -> None: ...
    def set_strategy(
        self,
        strategy: str,
        node_id: bytes,
        soft: bool,
        pg_id: bytes,
        bundle_index: int,
        capture: bool,
        /,
    ) -> None: ...
    def set_label_selector(self, selector: Mapping[str, str], /) -> None: ...

class ActorCallTemplate:
    def __init__(
        self,
        actor_id: bytes,
        method: str,
        function_name: str,
        num_returns: int,
        concurrency_group: str,
        streaming: bool,
        max_task_retries: int,
        dynamic_returns: bool = False,
        generator_backpressure_num_objects: int = 0,
    ) -> None: ...

class Core:
    def __init__(self, options: Mapping[str, str], /) -> None: ...
    def shutdown(self) -> None: ...
    @property
    def address(self) -> str: ...
    @property
    def worker_id(self) -> bytes: ...
    @property
    def node_id(self) -> bytes: ...
    @property
    def job_id(self) -> int: ...
    @job_id.setter
    def job_id(self, arg: int, /) -> None: ...
    def next_task_id(self) -> bytes: ...
    def put(self, data: bytes, flags: int, /) -> bytes: ...
    def put_value(self, inband: bytes, buffers: list, call_site: str = "") -> bytes: ...
    def encode_return(
        self, handle: int, index: int, generator_item: bool, inband: bytes, buffers: list
    ) -> tuple[bytes, int]: ...
    def store_list(self) -> dict: ...
    def get(
        self, ids: Sequence[bytes], timeout_ms: int, interruptible: bool = False
    ) -> list[_Value]: ...
    def wait(
        self,
        ids: Sequence[bytes],
        num_returns: int,
        timeout_ms: int,
        fetch_local: bool,
        interruptible: bool = False,
    ) -> list[bool]: ...
    def add_ref(self, object_id: bytes, /) -> None: ...
    def remove_ref(self, object_id: bytes, /) -> None: ...
    def register_borrowed(self, object_id: bytes, owner: str, /) -> bool: ...
    def register_return_refs(
        self, handle: int, index: int, ids: Sequence[bytes], generator_item: bool = False
    ) -> None: ...
    def flush_borrows(self) -> None: ...
    def set_contains(self, outer: bytes, inner: Sequence[bytes], /) -> None: ...
    def mark_escaped(self, object_id: bytes, /) -> None: ...
    def num_objects(self) -> int: ...
    def submit(
        self,
        template: TaskTemplate,
        max_retries: int,
        args: bytes,
        deps: Sequence[bytes],
        nested: Sequence[bytes] = [],
        parent: bytes = b"",
    ) -> Union[bytes, list[bytes]]: ...
    def register_actor(
        self,
        actor_id: bytes,
        name: str,
        ns: str,
        class_name: str,
        max_restarts: int,
        detached: bool,
        handle_meta: bytes,
        resources: Mapping[str, float],
        placement: Mapping[str, float],
        get_if_exists: bool,
        strategy: str = "",
        affinity_node_id: bytes = ...,
        affinity_soft: bool = False,
        label_selector: Mapping[str, str] = ...,
        fallback_strategy: Sequence[Mapping[str, str]] = ...,
    ) -> tuple[bytes, bool, bytes]: ...
    def create_actor(
        self,
        template: TaskTemplate,
        actor_id: bytes,
        args: bytes,
        deps: Sequence[bytes],
        actor_options: bytes,
        /,
    ) -> None: ...
    def submit_actor_task(
        self,
        template: ActorCallTemplate,
        args: bytes,
        deps: Sequence[bytes],
        nested: Sequence[bytes] = [],
        parent: bytes = b"",
    ) -> Union[bytes, list[bytes], None]: ...
    def own_actor_handle(self, actor_id: bytes, /) -> bytes: ...
    def hold_owned_actor_handle(self, actor_id: bytes, /) -> Optional[bytes]: ...
    def release_actor_handle(self, actor_id: bytes, ref_id: bytes, /) -> None: ...
    def kill_actor(self, actor_id: bytes, no_restart: bool, reason: str, /) -> bool: ...
    def get_named_actor(self, name: str, namespace: str, /) -> Optional[dict]: ...
    def list_actors(self) -> list[dict]: ...
    def actor_exiting(self, actor_id: bytes, reason: str, /) -> None: ...
    def actor_state(self, actor_id: bytes, /) -> str: ...
    def cancel(
        self, task_id: bytes, force: bool, recursive: bool, object_id: bytes = b""
    ) -> bool: ...
    def take_cancel_request(self, task_id: bytes, keep: bool = False) -> bool: ...
    def actor_call_pending(self, task_id: bytes, /) -> bool: ...
    def actor_pending_calls(self, actor_id: bytes, /) -> int: ...
    def set_concurrent(self, concurrent: bool, /) -> None: ...
    def send_generator_item(self, handle: int, index: int, data: bytes, flags: int, /) -> None: ...
    def generator_release(self, task_id: bytes, from_index: int, /) -> None: ...
    def hold_generator_items(self, handle: int, count: int, /) -> str:
        """Return 0 of `handle` holds items 0..count-1; returns the caller's address."""
    def generator_next(
        self, task_id: bytes, index: int, timeout_ms: int, interruptible: bool = False
    ) -> Optional[bytes]: ...
    def next_task(self) -> Optional[Task]:
        """Waits for the next task; None: the worker must exit."""

    def enable_task_events(self) -> int: ...
    def try_next_task(self) -> Union[Task, None, bool]:
        """None: nothing queued; False: the worker must exit."""

    def finish_task(
        self,
        handle: int,
        returns: Sequence[tuple[bytes, int]],
        retryable: bool,
        worker_exiting: bool = False,
    ) -> None: ...
    def kv_put(self, key: str, value: bytes, overwrite: bool, /) -> bool: ...
    def kv_get(self, key: str, /) -> Optional[bytes]: ...
    def kv_del(self, key: str, /) -> int: ...
    def kv_keys(self, prefix: str, /) -> list[str]: ...
    def nodes(self) -> list[dict]: ...
    def object_locations(
        self, ids: Sequence[bytes], timeout_ms: int, /
    ) -> list[Optional[dict]]: ...
    def create_placement_group(
        self,
        pg_id: bytes,
        name: str,
        namespace: str,
        strategy: str,
        bundles: Sequence[Mapping[str, float]],
        detached: bool,
        job_id: int,
        /,
    ) -> None: ...
    def remove_placement_group(self, pg_id: bytes, /) -> bool: ...
    def wait_placement_group(self, pg_id: bytes, timeout_ms: int, /) -> tuple[bool, str]: ...
    def placement_groups(self, pg_id: bytes, name: str, namespace: str, /) -> list[dict]: ...
    def node_stats(self) -> dict: ...
