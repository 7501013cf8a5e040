"""fleet._private.utils.DeferSigint (Ray's name): a SIGINT (how a
cancellation reaches a running task) arriving inside the block is handled
once, when the block ends, by the newest handler."""

import _thread
import signal
import threading
import time

import pytest

from fleet._private.utils import DeferSigint

pytestmark = pytest.mark.timeout(30)


def _interrupt_and_settle():
    _thread.interrupt_main()
    time.sleep(0.2)  # (the handler runs between bytecodes of the main thread)


def test_sigint_is_raised_after_the_block():
    original = signal.getsignal(signal.SIGINT)
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with DeferSigint():
            _interrupt_and_settle()
            reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is original


def test_handler_set_inside_runs_once_at_exit():
    original = signal.getsignal(signal.SIGINT)
    calls = []
    try:
        with DeferSigint():
            signal.signal(signal.SIGINT, lambda s, f: calls.append("first"))
            signal.signal(signal.SIGINT, lambda s, f: calls.append("second"))
            for _ in range(3):
                _interrupt_and_settle()
            assert calls == []
        assert calls == ["second"]
    finally:
        signal.signal(signal.SIGINT, original)


def test_no_deferral_off_the_main_thread():
    seen = []
    t = threading.Thread(target=lambda: seen.append(DeferSigint.create_if_main_thread()))
    t.start()
    t.join(10)
    assert seen and not isinstance(seen[0], DeferSigint)
    assert isinstance(DeferSigint.create_if_main_thread(), DeferSigint)
