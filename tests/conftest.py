"""Shared fixtures for fleet's test suite.

The suite checks fleet against Ray's documented core-API behaviour, through
the public API only (plus ``fleet._private.state`` to find the processes of a
cluster for the orphan checks).

Nothing may hang: every test gets a pytest-timeout marker that also covers its
fixtures (the project's ini sets ``timeout_func_only``), using the ``thread``
method, which works even while the main thread is blocked inside the C++ core
library (a blocking ``fleet.get`` does not return to Python for signals).
Every blocking ``get``/``wait`` in a test passes ``timeout=`` as well.
"""

from __future__ import annotations

import warnings

import pytest

# fleet_test_utils first: it puts ../python on sys.path when fleet is not installed.
from fleet_test_utils import shutdown_checked  # isort: skip

import fleet  # isort: skip

DEFAULT_TIMEOUT = 120


# --------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Gives every test a timeout that covers setup, call and teardown."""
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = DEFAULT_TIMEOUT
        if marker is not None:
            if marker.args:
                seconds = marker.args[0]
            elif "timeout" in marker.kwargs:
                seconds = marker.kwargs["timeout"]
        item.add_marker(
            pytest.mark.timeout(seconds, method="thread", func_only=False), append=False
        )


# --------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------


def _ensure_down() -> None:
    if fleet.is_initialized():
        fleet.shutdown()


@pytest.fixture(scope="module")
def fleet_cluster():
    """One local 2-CPU cluster shared by the tests of a module."""
    _ensure_down()
    ctx = fleet.init(num_cpus=2)
    try:
        yield ctx
    finally:
        left = shutdown_checked(5.0)
        if left:
            warnings.warn(
                f"processes of the module's cluster outlived shutdown: {left}", stacklevel=1
            )


@pytest.fixture
def fresh():
    """For tests that start (and configure) their own cluster.

    Makes sure no cluster is connected before the test and shuts down whatever
    the test started afterwards. Yields the fleet module.
    """
    _ensure_down()
    try:
        yield fleet
    finally:
        fleet.shutdown()
