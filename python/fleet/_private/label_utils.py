"""Node labels and label selectors, with Ray's syntax (Kubernetes label rules).

A label key is ``[prefix/]name``: the name is 1-63 characters, alphanumeric
at both ends with ``-``, ``_`` and ``.`` between; the optional prefix is a
DNS subdomain of at most 253 characters. A value follows the name's rules
(or is empty). Keys under ``ray.io/`` are Ray's own (``ray.io/node-id`` on
every node) and cannot be set by users.

A selector maps a key to one of ``"v"``, ``"!v"``, ``"in(a, b)"`` or
``"!in(a, b)"``; the node daemons and fleet-gcs match them
(cpp/src/common/label_selector.h). Validation here returns an error text or
None, as the option tables expect.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

RESERVED_PREFIX = "ray.io/"

_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_NAME_RE = re.compile(_NAME)
_PREFIX_RE = re.compile(rf"(?:{_NAME})?(?:\.(?:{_NAME})?)*")
_SELECTOR_RE = re.compile(rf"!?(?:in)?\({_NAME}(?:, ?{_NAME})*\)|!?{_NAME}")

_NAME_RULE = (
    "must be 63 chars or less beginning and ending with an alphanumeric character "
    "([a-z0-9A-Z]) with dashes (-), underscores (_), dots (.), and alphanumerics between."
)


def label_key_error(key: Any) -> Optional[str]:
    """Why `key` is not a valid label key, or None."""
    if not isinstance(key, str):
        return f"Label keys must be strings, got {key!r}."
    name = key
    if "/" in key:
        prefix, name = key.rsplit("/", 1)
        if len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix):
            return (
                f"Invalid label key prefix `{prefix}`. Prefix must be a series of DNS labels "
                "separated by dots (.), not longer than 253 characters in total."
            )
    if len(name) > 63 or not _NAME_RE.fullmatch(name):
        return f"Invalid label key name `{name}`. Name {_NAME_RULE}"
    return None


def label_value_error(value: Any) -> Optional[str]:
    """Why `value` is not a valid label value, or None (empty is valid)."""
    if not isinstance(value, str):
        return f"Label values must be strings, got {value!r}."
    if value and (len(value) > 63 or not _NAME_RE.fullmatch(value)):
        return f"Invalid label value `{value}`. Value {_NAME_RULE}"
    return None


def label_selector_error(selector: Any) -> Optional[str]:
    """Why `selector` is not a valid ``label_selector``, or None."""
    if selector is None:
        return None
    if not isinstance(selector, dict):
        return f"label_selector must be a dict of label key to selector, got {selector!r}"
    for key, value in selector.items():
        err = label_key_error(key)
        if err:
            return err
        if not isinstance(value, str):
            return f"Label selector values must be strings, got {value!r} for `{key}`."
        if value and not _SELECTOR_RE.fullmatch(value):
            return (
                f"Invalid label selector value `{value}`. The label selector value should "
                "contain optional operators and a label value. Supported operators are: ! and "
                f"in(...). Value {_NAME_RULE}"
            )
    return None


def fallback_strategy_error(strategy: Any) -> Optional[str]:
    """Why `strategy` is not a valid ``fallback_strategy`` (a list of
    ``{"label_selector": {...}}``, tried in order), or None."""
    if strategy is None:
        return None
    if not isinstance(strategy, list):
        return f"fallback_strategy must be a list of dicts, got {strategy!r}"
    for entry in strategy:
        if not isinstance(entry, dict):
            return "Each element in fallback_strategy must be a dictionary."
        if not entry:
            return "Empty dictionary found in `fallback_strategy`."
        for option in entry:
            if option != "label_selector":
                return (
                    f"Unsupported option found: '{option}'. Only ['label_selector'] is "
                    "currently supported."
                )
        selector = entry.get("label_selector")
        if selector is not None and not isinstance(selector, dict):
            return 'The value of "label_selector" must be a dictionary.'
        err = label_selector_error(selector)
        if err:
            return err
    return None


def validate_node_labels(
    labels: Optional[Dict[str, str]], allow_reserved: bool = False
) -> Dict[str, str]:
    """The user's node labels, checked (syntax, and no ``ray.io/`` keys
    unless `allow_reserved`: ``cluster_utils.Cluster.add_node`` may set
    them, as Ray's may); raises ValueError."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ValueError(f"labels must be a dict of str to str, got {labels!r}")
    for key, value in labels.items():
        err = label_key_error(key) or label_value_error(value)
        if err:
            raise ValueError(err)
        if key.startswith(RESERVED_PREFIX) and not allow_reserved:
            raise ValueError(
                f"Custom label keys `{key}` cannot start with the prefix `{RESERVED_PREFIX}`. "
                "This is reserved for Ray defined labels."
            )
    return dict(labels)


def parse_node_labels_string(text: str) -> Dict[str, str]:
    """``"k1=v1,k2=v2"`` (the ``--labels`` flag) as a dict, validated."""
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1]
    labels: Dict[str, str] = {}
    if not text:
        return labels
    for pair in text.split(","):
        parts = pair.split("=")
        if len(parts) != 2:
            raise ValueError(f"Label string is not a key-value pair: {pair!r}")
        labels[parts[0].strip()] = parts[1].strip()
    return validate_node_labels(labels)


def encode_node_labels(labels: Dict[str, str]) -> str:
    """The ``--labels`` flag value for fleet-node (validated labels cannot
    contain ``,`` or ``=``)."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def selectors_of(fallback: Optional[List[Dict[str, Any]]]) -> List[Dict[str, str]]:
    """The label selectors of a validated fallback_strategy, in order."""
    return [dict(entry.get("label_selector") or {}) for entry in (fallback or [])]
