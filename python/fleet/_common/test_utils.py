"""Test helpers under Ray's ``ray._common.test_utils`` name (see
``fleet._private.test_utils``)."""

from fleet._private.test_utils import (  # noqa: F401
    Semaphore,
    SignalActor,
    async_wait_for_condition,
    wait_for_condition,
)
