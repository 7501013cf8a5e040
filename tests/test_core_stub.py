"""fleet._core ships a type stub (_core.pyi, installed beside the module)
that names every class, function, constant and member the module defines,
and the schema enums it exports carry the generated protobuf values."""

from __future__ import annotations

import ast
import inspect
import os
from typing import Dict, Set

import pytest

from fleet import _core

STUB = os.path.join(os.path.dirname(os.path.abspath(_core.__file__)), "_core.pyi")


def _stub() -> Dict[str, Set[str]]:
    """Top-level name -> the names defined in its body (empty for non-classes)."""
    with open(STUB, encoding="utf-8") as f:
        tree = ast.parse(f.read(), STUB)
    out: Dict[str, Set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            out[node.name] = members
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = set()
        elif isinstance(node, ast.Assign):
            out.update({t.id: set() for t in node.targets if isinstance(t, ast.Name)})
    return out


def _public(names) -> Set[str]:
    return {n for n in names if not n.startswith("_")}


def test_stub_is_installed_beside_the_module():
    assert os.path.isfile(STUB), STUB
    assert os.path.isfile(os.path.join(os.path.dirname(STUB), "py.typed"))


def test_stub_names_everything_the_module_defines():
    stub = _stub()
    module = _public(n for n in dir(_core))
    assert module - set(stub) == set(), "missing from _core.pyi"
    assert _public(stub) - module == set(), "in _core.pyi but not in fleet._core"
    for name in module:
        obj = getattr(_core, name)
        if inspect.isclass(obj):
            if issubclass(obj, int):  # an enum: its values
                members = {m.name for m in obj}
            else:
                members = _public(vars(obj))
            assert members == _public(stub[name]), f"{name}: _core.pyi differs"


@pytest.mark.parametrize("enum_name, values", [
    ("TaskKind", {"NORMAL_TASK": 0, "ACTOR_CREATION": 1, "ACTOR_TASK": 2, "ACTOR_EXIT": 3}),
    ("ActorState", {"PENDING": 0, "ALIVE": 1, "RESTARTING": 2, "DEAD": 3}),
    ("PlacementGroupState", {"PENDING": 0, "CREATED": 1, "REMOVED": 2, "RESCHEDULING": 3}),
])
def test_schema_enums_match_the_proto(enum_name, values):
    enum = getattr(_core, enum_name)
    assert {m.name: int(m) for m in enum} == values
    # The stub lists the same values.
    with open(STUB, encoding="utf-8") as f:
        tree = ast.parse(f.read(), STUB)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == enum_name)
    stub_values = {a.targets[0].id: a.value.value for a in cls.body if isinstance(a, ast.Assign)}
    assert stub_values == values


def test_task_fields_are_named_and_read_only():
    fields = _core.Task.__match_args__
    assert {"handle", "task_id", "job_id", "function_key", "function_name", "args", "deps",
            "num_returns", "kind", "actor_id", "method_name", "streaming"} <= set(fields)
    t = _core.Task(tuple(range(len(fields))))
    for i, name in enumerate(fields):
        assert getattr(t, name) == i
        with pytest.raises(AttributeError):
            setattr(t, name, -1)
