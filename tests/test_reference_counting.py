"""Distributed reference counting: when the owner of an object frees it.

Ray docs: https://docs.ray.io/en/latest/ray-core/scheduling/memory-management.html
("ObjectRef reference counting": an object is kept while a Python ObjectRef,
a pending task, a serialized ObjectRef inside another object, or a borrower
in another process refers to it) and
https://docs.ray.io/en/latest/ray-core/objects.html ("Passing object
arguments": refs nested in an argument are not resolved, and the object
stays alive while the task holds them).

Freeing is observed in the node's shared-memory store
(``fleet.util.state.list_objects``), so every tracked object is a numpy array
larger than the inline threshold (100 KiB). A borrower lets go
asynchronously (its releases are batched), so "freed" is polled with a
deadline, and "still alive" is checked after a grace period long enough for
a release to arrive, and by reading the value through its remaining holder.

Refs inside task and actor-call return values are borrowed by the caller
(its return object holds them), so those are checked to be freed too. Known,
deliberate gaps not tested here as freed: refs inside generator items and
actor-constructor arguments escape (kept until the owner exits); they are
only checked to stay alive and readable.
"""

import gc
import time

import numpy as np
import pytest

from fleet_test_utils import fresh_cluster, wait_until  # isort: skip

import fleet  # isort: skip
from fleet._private import state as _state  # isort: skip
from fleet.util.state import list_objects  # isort: skip

pytestmark = pytest.mark.timeout(60)

T = 30  # timeout (s) for every get in this module
MiB = 1 << 20
STORE = 200 * MiB
N = 256 * 1024  # elements of a tracked array: 256 KiB of uint8, well above 100 KiB
GRACE = 0.4  # s: long enough for a batched release to reach the owner
KILL_WAIT = 6.0  # s: for an owner to notice that a killed borrower is gone


@pytest.fixture(scope="module")
def cluster():
    """One 2-CPU cluster with a 200 MiB store for the whole module."""
    with fresh_cluster(num_cpus=2, object_store_memory=STORE) as ctx:
        yield ctx


@pytest.fixture
def rc(cluster, request):
    """Per test: checks that the test left no object of its own behind
    (unless the test failed already: one report of a leak is enough)."""
    gc.collect()
    before = {o.object_id for o in list_objects() if not o.freed}
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        return
    gc.collect()
    _wait(
        lambda: not ({o.object_id for o in list_objects() if not o.freed} - before),
        3.0,
        lambda: f"the test's objects to be freed; left: "
        f"{[o for o in list_objects() if o.object_id not in before]}",
    )


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _array(fill):
    return np.full(N, fill, dtype=np.uint8)


def _record(hex_id):
    found = list_objects(filters=[("object_id", "=", hex_id)])
    return found[0] if found else None


def _alive(hex_id):
    """Whether the object is in the store and its owner has not let it go."""
    o = _record(hex_id)
    return o is not None and not o.freed


def _wait(cond, timeout=10.0, what=""):
    """Polls `cond` until true; `what` (text, or a function giving it) says what failed."""
    if not wait_until(cond, timeout, 0.02):
        text = what() if callable(what) else what
        raise AssertionError(f"timed out after {timeout} s waiting for {text}")


def _wait_freed(hex_id, timeout=10.0):
    gc.collect()
    _wait(
        lambda: not _alive(hex_id),
        timeout,
        lambda: f"object {hex_id} to be freed; it is {_record(hex_id)}",
    )


def _assert_stays(hex_id, seconds=GRACE):
    """The object stays alive for `seconds` (long enough for a release to arrive)."""
    gc.collect()
    deadline = time.monotonic() + seconds
    while True:
        assert _alive(hex_id), f"object {hex_id} was freed too early: {_record(hex_id)}"
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def _put(fill):
    """Puts a tracked array; returns its ref and hex id."""
    ref = fleet.put(_array(fill))
    h = ref.hex()
    assert _alive(h), f"a {N}-byte array should live in the store: {_record(h)}"
    return ref, h


def _check(value, fill):
    assert isinstance(value, np.ndarray) and value.shape == (N,), value
    assert int(value[0]) == fill and int(value[-1]) == fill
    assert int(value.sum()) == fill * N


@fleet.remote
class Holder:
    """An actor that borrows refs passed to it (nested, so not resolved)."""

    def __init__(self):
        self.refs = []

    def hold(self, refs):
        self.refs.extend(refs)
        return len(self.refs)

    def read(self):
        return [int(fleet.get(r, timeout=T)[0]) for r in self.refs]

    def read_sum(self):
        return [int(fleet.get(r, timeout=T).sum()) for r in self.refs]

    def drop(self):
        self.refs = []
        gc.collect()
        return True

    def hold_from(self, outer_ref):
        """Gets a put value holding refs; keeps the refs, not the value."""
        self.refs.extend(fleet.get(outer_ref[0], timeout=T))
        return len(self.refs)

    def pass_on(self, other):
        """Hands the refs it holds to another actor (nested) and drops them."""
        n = fleet.get(other.hold.remote(list(self.refs)), timeout=T)
        self.refs = []
        gc.collect()
        return n

    def ready(self):
        return True

    def make(self, fill):
        """Puts an array (owned by this actor) and returns it nested."""
        return [fleet.put(_array(fill))]

    def give(self, other, fill):
        """Puts an array (owned here) and lends it to `other`; keeps no ref."""
        ref = fleet.put(_array(fill))
        assert fleet.get(other.hold.remote([ref]), timeout=T) == 1
        return ref.hex()

    def keep_returned(self, fill):
        """Calls a task that puts an array and returns it nested; keeps that
        return value (so this actor borrows the task worker's object without
        ever registering the borrow itself)."""
        self.out = put_and_return.remote(fill)
        self.refs.extend(fleet.get(self.out, timeout=T))
        return self.refs[-1].hex()

    def give_back(self):
        """Returns the refs it holds (nested in the return value)."""
        return list(self.refs)

    def keep_from(self, other):
        """Takes the refs `other` returns and keeps them."""
        self.refs.extend(fleet.get(other.give_back.remote(), timeout=T))
        return len(self.refs)

    def pass_on_nowait(self, other):
        """Hands its refs to `other` without waiting for the call, then drops them."""
        other.hold.remote(list(self.refs))
        self.refs = []
        gc.collect()
        return True


@fleet.remote
def first_after(refs, delay):
    time.sleep(delay)
    return int(fleet.get(refs[0], timeout=T)[0])


@fleet.remote
def top_level_after(value, delay):
    time.sleep(delay)
    return int(value[0])


@fleet.remote
def read_nested(refs):
    return int(fleet.get(refs[0], timeout=T)[-1])


@fleet.remote
def echo(refs):
    return refs


@fleet.remote
def put_and_return(fill):
    return [fleet.put(_array(fill))]


@fleet.remote
def echo_via(refs):
    return fleet.get(echo.remote(refs), timeout=T)


@fleet.remote(num_returns=2)
def echo_twice(refs):
    return list(refs), {"again": refs[0]}


def _new_holder():
    h = Holder.remote()
    assert fleet.get(h.ready.remote(), timeout=T)
    return h


# --------------------------------------------------------------------------
# Local references
# --------------------------------------------------------------------------


def test_deleting_the_only_ref_frees_the_object(rc):
    base = _state.core.num_objects()
    ref, h = _put(1)
    assert _state.core.num_objects() == base + 1
    _check(fleet.get(ref, timeout=T), 1)
    del ref
    _wait_freed(h)
    assert _state.core.num_objects() == base


def test_a_copy_of_the_ref_keeps_the_object(rc):
    ref, h = _put(2)
    other = ref
    del ref
    _assert_stays(h, 0.1)
    _check(fleet.get(other, timeout=T), 2)
    del other
    _wait_freed(h)


def test_a_ref_kept_in_a_list_keeps_the_object(rc):
    ref, h = _put(3)
    kept = [ref]
    del ref
    _assert_stays(h, 0.1)
    _check(fleet.get(kept[0], timeout=T), 3)
    kept.clear()
    _wait_freed(h)


def test_a_value_from_get_outlives_its_ref(rc):
    ref, h = _put(4)
    value = fleet.get(ref, timeout=T)
    del ref
    # The zero-copy view may pin the store copy; the owner has let go.
    _wait(lambda: _record(h) is None or _record(h).freed, 10.0, "the owner to let go")
    _check(value, 4)
    del value
    _wait(lambda: _record(h) is None, 10.0, "the object to leave the store")


# --------------------------------------------------------------------------
# Refs inside put() values
# --------------------------------------------------------------------------


def test_ref_nested_in_a_put_lives_while_the_outer_object_lives(rc):
    inner, hi = _put(5)
    outer = fleet.put([inner])  # small: lives in this process, not the store
    del inner
    _assert_stays(hi, 0.1)
    got = fleet.get(outer, timeout=T)
    _check(fleet.get(got[0], timeout=T), 5)
    del got
    _assert_stays(hi, 0.1)
    del outer
    _wait_freed(hi)


def test_large_outer_and_inner_both_go_when_outer_is_deleted(rc):
    inner, hi = _put(6)
    outer = fleet.put({"inner": inner, "pad": _array(7)})
    ho = outer.hex()
    assert _alive(ho), "the outer value is large: in the store"
    del inner
    _assert_stays(hi, 0.1)
    del outer
    _wait_freed(ho)
    _wait_freed(hi)


def test_inner_ref_from_get_outlives_the_outer_object(rc):
    inner, hi = _put(8)
    outer = fleet.put([inner])
    del inner
    value = fleet.get(outer, timeout=T)  # the driver now holds the inner ref itself
    del outer
    gc.collect()
    _assert_stays(hi)
    _check(fleet.get(value[0], timeout=T), 8)
    del value
    _wait_freed(hi)


def test_chain_of_nested_puts_is_freed_with_the_outermost(rc):
    inner, hi = _put(9)
    mid = fleet.put({"inner": inner, "pad": _array(10)})
    hm = mid.hex()
    outer = fleet.put([mid])
    del inner, mid
    _assert_stays(hi, 0.1)
    _assert_stays(hm, 0.1)
    got_mid = fleet.get(outer, timeout=T)[0]
    _check(fleet.get(fleet.get(got_mid, timeout=T)["inner"], timeout=T), 9)
    del got_mid
    del outer
    _wait_freed(hm)
    _wait_freed(hi)


def test_a_thousand_nested_refs_go_with_their_outer_object(rc):
    gc.collect()
    base = _state.core.num_objects()
    small = [fleet.put(i) for i in range(1000)]
    outer = fleet.put(small)
    assert _state.core.num_objects() == base + 1001
    del small
    gc.collect()
    assert _state.core.num_objects() == base + 1001, "held by the outer object"
    got = fleet.get(outer, timeout=T)
    assert fleet.get(got[::97], timeout=T) == list(range(0, 1000, 97))
    del got
    gc.collect()
    assert _state.core.num_objects() == base + 1001
    del outer
    gc.collect()
    _wait(
        lambda: _state.core.num_objects() == base,
        10.0,
        lambda: f"the object count to return to {base}; now {_state.core.num_objects()}",
    )


# --------------------------------------------------------------------------
# Refs passed to tasks
# --------------------------------------------------------------------------


def test_nested_ref_in_a_task_arg_outlives_the_callers_ref(rc):
    ref, h = _put(11)
    out = first_after.remote([ref], 1.0)
    del ref  # while the task sleeps
    gc.collect()
    _assert_stays(h, 0.2)
    assert fleet.get(out, timeout=T) == 11
    _wait_freed(h)


def test_top_level_ref_arg_outlives_the_callers_ref(rc):
    ref, h = _put(12)
    out = top_level_after.remote(ref, 0.5)
    del ref
    assert fleet.get(out, timeout=T) == 12
    _wait_freed(h)


def test_same_ref_nested_in_many_tasks_is_freed_after_all_finish(rc):
    ref, h = _put(13)
    outs = [read_nested.remote([ref]) for _ in range(200)]
    del ref
    assert fleet.get(outs, timeout=T) == [13] * 200
    del outs
    _wait_freed(h)


def test_a_returned_container_holding_a_received_ref(rc):
    ref, h = _put(14)
    out = echo.remote([ref])
    back = fleet.get(out, timeout=T)
    assert back == [ref]
    del ref
    _assert_stays(h)
    _check(fleet.get(back[0], timeout=T), 14)
    # Through a task twice: the ref is still the same object.
    out2 = echo.remote(back)
    again = fleet.get(out2, timeout=T)
    del back, out
    _assert_stays(h)
    _check(fleet.get(again[0], timeout=T), 14)
    del again, out2
    _wait_freed(h)


def test_a_ref_put_by_a_task_and_returned_nested(rc):
    out = put_and_return.remote(22)
    got = fleet.get(out, timeout=T)
    h = got[0].hex()
    # The task (its owner) let go of its own ref when it returned.
    _assert_stays(h)
    _check(fleet.get(got[0], timeout=T), 22)
    del got
    _assert_stays(h, 0.1)  # the return object still holds it
    _check(fleet.get(fleet.get(out, timeout=T)[0], timeout=T), 22)
    del out
    _wait_freed(h)


def test_a_ref_returned_through_two_tasks(rc):
    ref, h = _put(23)
    out = echo_via.remote([ref])
    del ref
    back = fleet.get(out, timeout=T)
    _assert_stays(h)
    _check(fleet.get(back[0], timeout=T), 23)
    del back, out
    _wait_freed(h)


def test_refs_in_several_return_values(rc):
    ref, h = _put(32)
    first, second = echo_twice.remote([ref])
    del ref
    _check(fleet.get(fleet.get(second, timeout=T)["again"], timeout=T), 32)
    del second
    _assert_stays(h)
    _check(fleet.get(fleet.get(first, timeout=T)[0], timeout=T), 32)
    del first
    _wait_freed(h)


# --------------------------------------------------------------------------
# Borrowers (actors)
# --------------------------------------------------------------------------


def test_actor_borrowing_a_ref_keeps_it_until_it_drops_it(rc):
    a = _new_holder()
    try:
        ref, h = _put(15)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        del ref
        _assert_stays(h)
        assert fleet.get(a.read_sum.remote(), timeout=T) == [15 * N]
        _assert_stays(h, 0.1)
        assert fleet.get(a.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)


def test_two_borrowers_one_drops_then_both(rc):
    a, b = _new_holder(), _new_holder()
    try:
        ref, h = _put(16)
        assert fleet.get([a.hold.remote([ref]), b.hold.remote([ref])], timeout=T) == [1, 1]
        del ref
        _assert_stays(h)
        assert fleet.get(a.drop.remote(), timeout=T)
        _assert_stays(h)
        assert fleet.get(b.read.remote(), timeout=T) == [16]
        assert fleet.get(b.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)
        fleet.kill(b)


def test_borrower_holding_the_ref_twice_counts_once_per_release(rc):
    a = _new_holder()
    try:
        ref, h = _put(17)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        assert fleet.get(a.hold.remote([ref, ref]), timeout=T) == 3
        del ref
        _assert_stays(h)
        assert fleet.get(a.read.remote(), timeout=T) == [17, 17, 17]
        assert fleet.get(a.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)


def test_borrowed_ref_returned_to_its_owner(rc):
    a = _new_holder()
    try:
        ref, h = _put(33)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        del ref
        out = a.give_back.remote()
        back = fleet.get(out, timeout=T)
        assert fleet.get(a.drop.remote(), timeout=T)
        _assert_stays(h)
        _check(fleet.get(back[0], timeout=T), 33)
        del back, out
        _wait_freed(h)
    finally:
        fleet.kill(a)


def test_killed_borrower_releases_its_borrows(rc):
    a = _new_holder()
    ref, h = _put(18)
    assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
    del ref
    _assert_stays(h)
    fleet.kill(a)
    _wait_freed(h, KILL_WAIT)


def test_borrower_of_a_borrower_keeps_the_object(rc):
    a, b = _new_holder(), _new_holder()
    try:
        ref, h = _put(19)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        del ref
        _assert_stays(h, 0.1)
        # a passes its borrowed ref (nested) to b, then drops its own.
        assert fleet.get(a.pass_on.remote(b), timeout=T) == 1
        _assert_stays(h)
        assert fleet.get(a.read.remote(), timeout=T) == []
        assert fleet.get(b.read_sum.remote(), timeout=T) == [19 * N]
        assert fleet.get(b.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)
        fleet.kill(b)


def test_borrower_that_got_the_ref_from_a_put_value(rc):
    a = _new_holder()
    try:
        inner, h = _put(20)
        outer = fleet.put([inner])
        del inner
        # [outer] nested: the actor gets the outer value and keeps only the inner ref.
        assert fleet.get(a.hold_from.remote([outer]), timeout=T) == 1
        del outer
        gc.collect()
        _assert_stays(h)
        assert fleet.get(a.read.remote(), timeout=T) == [20]
        assert fleet.get(a.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)


def test_borrow_outlives_many_calls_and_caller_refs(rc):
    """Many short borrows by the same (reused) borrower balance out."""
    a = _new_holder()
    try:
        ref, h = _put(21)
        for _ in range(20):
            assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
            assert fleet.get(a.drop.remote(), timeout=T)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        del ref
        _assert_stays(h)
        assert fleet.get(a.read.remote(), timeout=T) == [21]
        assert fleet.get(a.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)


def test_borrower_passing_the_ref_on_without_waiting(rc):
    a, b = _new_holder(), _new_holder()
    try:
        ref, h = _put(24)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        del ref
        assert fleet.get(a.pass_on_nowait.remote(b), timeout=T)
        _wait(lambda: fleet.get(b.read.remote(), timeout=T) == [24], 10.0, "b to get the ref")
        _assert_stays(h)
        assert fleet.get(b.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)
        fleet.kill(b)


def test_object_owned_by_an_actor_and_borrowed_by_another(rc):
    a, b = _new_holder(), _new_holder()
    try:
        h = fleet.get(a.give.remote(b, 25), timeout=T)
        _assert_stays(h)  # its owner keeps no ref; b borrows it
        assert fleet.get(b.read_sum.remote(), timeout=T) == [25 * N]
        assert fleet.get(b.drop.remote(), timeout=T)
        _wait_freed(h)
    finally:
        fleet.kill(a)
        fleet.kill(b)


def test_object_owned_by_an_actor_returned_nested_to_the_driver(rc):
    a = _new_holder()
    try:
        out = a.make.remote(26)
        got = fleet.get(out, timeout=T)
        h = got[0].hex()
        _assert_stays(h)
        _check(fleet.get(got[0], timeout=T), 26)
        del got, out
        _wait_freed(h)
    finally:
        fleet.kill(a)


def test_killed_borrower_of_a_returned_ref_releases_it(rc):
    """The caller of a task whose return value holds a ref borrows it (the
    executor registers it with the owner); if the caller dies, the owner must
    drop that borrow as for any other dead borrower."""
    a = _new_holder()
    h = fleet.get(a.keep_returned.remote(30), timeout=T)
    _assert_stays(h)
    assert fleet.get(a.read.remote(), timeout=T) == [30]
    fleet.kill(a)
    _wait_freed(h, KILL_WAIT)


def test_killed_borrower_of_a_ref_returned_by_another_borrower_releases_it(rc):
    """As above, with the owner (the driver) a third process: b gets the
    driver's ref only from a's return value, so a registered b with the
    driver; b's death must drop that borrow."""
    a, b = _new_holder(), _new_holder()
    try:
        ref, h = _put(31)
        assert fleet.get(a.hold.remote([ref]), timeout=T) == 1
        del ref
        assert fleet.get(b.keep_from.remote(a), timeout=T) == 1
        assert fleet.get(a.drop.remote(), timeout=T)
        _assert_stays(h)
        assert fleet.get(b.read.remote(), timeout=T) == [31]
        fleet.kill(b)
        _wait_freed(h, KILL_WAIT)
    finally:
        fleet.kill(a)
        fleet.kill(b)


# --------------------------------------------------------------------------
# Escapes (kept until the owner exits, for now): alive and readable
# --------------------------------------------------------------------------


@fleet.remote
class InitHolder:
    def __init__(self, refs):
        self.refs = refs

    def read(self):
        return [int(fleet.get(r, timeout=T)[0]) for r in self.refs]


@fleet.remote(num_returns="streaming")
def yield_refs(refs, n):
    for _ in range(n):
        yield refs


def test_ref_in_actor_constructor_args_stays_readable(cluster):
    ref, h = _put(27)
    a = InitHolder.remote([ref])
    try:
        del ref
        _assert_stays(h)
        assert fleet.get(a.read.remote(), timeout=T) == [27]
    finally:
        fleet.kill(a)
    _assert_stays(h, 0.1)


def test_ref_in_generator_items_stays_readable(cluster):
    ref, h = _put(28)
    items = [fleet.get(item, timeout=T) for item in yield_refs.remote([ref], 3)]
    del ref
    assert len(items) == 3
    _assert_stays(h)
    for item in items:
        _check(fleet.get(item[0], timeout=T), 28)
