"""Checking call arguments against a remote function's or actor method's
signature at ``.remote()``, as Ray does: arguments that would not bind raise
TypeError in the caller instead of failing the task later.

A Signature is a picklable summary of the parameters (it travels in actor
handles). Invariant: ``check`` raises exactly when ``inspect.Signature.bind``
would. Cost: the common call (positional arguments only, a count the
function accepts) is decided by two comparisons; anything else binds a full
``inspect.Signature``, rebuilt once and cached. Immutable after creation
except that cache, so safe to share between threads (the cache is written
idempotently).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
_KIND = type(_P.POSITIONAL_ONLY)


class Signature:
    """The parameters of a callable: (name, kind, has a default) each."""

    __slots__ = ("params", "min_pos", "max_pos", "_sig")

    def __init__(self, params: Tuple[Tuple[str, int, bool], ...]):
        self.params = params
        positional = [p for p in params if p[1] in _POSITIONAL]
        kw_only_required = any(p[1] == _P.KEYWORD_ONLY and not p[2] for p in params)
        # Positional-only calls with a count in [min_pos, max_pos] bind;
        # min_pos > max_pos when a required keyword-only parameter rules
        # the fast path out.
        self.min_pos = sum(1 for p in positional if not p[2])
        self.max_pos = (
            1 << 30 if any(p[1] == _P.VAR_POSITIONAL for p in params) else len(positional)
        )
        if kw_only_required:
            self.min_pos, self.max_pos = 1, 0
        self._sig: Optional[inspect.Signature] = None

    def check(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        """Raises TypeError (the text bind gives) if the arguments do not bind."""
        if not kwargs and self.min_pos <= len(args) <= self.max_pos:
            return
        sig = self._sig
        if sig is None:
            sig = self._sig = inspect.Signature(
                [_P(name, _KIND(kind), default=0 if has_default else _P.empty)
                 for name, kind, has_default in self.params]
            )
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(str(e)) from None

    def __reduce__(self) -> Any:
        return Signature, (self.params,)


def extract(fn: Callable, skip_first: bool = False) -> Optional[Signature]:
    """The signature of `fn` (without its first parameter if `skip_first`:
    an unbound method's self), or None if Python cannot tell it (then any
    arguments pass)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [(p.name, int(p.kind), p.default is not _P.empty) for p in sig.parameters.values()]
    if skip_first:
        if params and params[0][1] in _POSITIONAL:
            params = params[1:]
        elif not params or params[0][1] != _P.VAR_POSITIONAL:
            return None
    return Signature(tuple(params))


def for_method(cls: type, name: str) -> Optional[Signature]:
    """The signature of method `name` of `cls` as callers see it (without
    self, or cls for a classmethod)."""
    raw = inspect.getattr_static(cls, name, None)
    if isinstance(raw, staticmethod):
        return extract(raw.__func__)
    if isinstance(raw, classmethod):
        return extract(raw.__func__, skip_first=True)
    member = getattr(cls, name, None)
    if member is None:
        return None
    if name == "__init__" and member is object.__init__:
        return Signature(())  # a class without __init__ takes no arguments
    return extract(member, skip_first=True)


__all__ = ["Signature", "extract", "for_method"]
