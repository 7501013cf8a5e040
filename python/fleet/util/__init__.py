"""Utilities on top of the core API (scheduling strategies, ...)."""

from fleet.util import scheduling_strategies

__all__ = ["scheduling_strategies"]
