"""`import ray` gives fleet: an import shim for running Ray programs and Ray's
own test files unchanged against fleet.

Put the folder holding this package first on ``sys.path`` (``PYTHONPATH``).
``ray`` becomes a view of the ``fleet`` module, and ``ray.X.Y`` imports
``fleet.X.Y``; ``ray.tests.conftest`` is the fixture module of the
compatibility runner (``ray_fixtures.py`` beside this package).

A package is seen through a view (a module that reads and writes through to
the fleet package), so that importing a submodule never replaces a function
of the same name on the fleet package (``ray.util.placement_group`` is both a
function and a module, as in Ray). Modules are seen through views too.

What fleet lacks does not stop a file from importing: a missing module, or a
missing name imported from a view, is a *placeholder* that raises
``MissingInRayShim`` when a test uses it (calls it, reads from it, subclasses
it). The error says whether the name is one of Ray's internals (a path with a
``_``-prefixed part, or one of ``INTERNAL``) or public API fleet lacks, so the
runner counts a test by what it actually uses.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

# ray.test_utils: where Ray 1.x kept what is now ray._private.test_utils.
_SPECIAL = {
    "ray.tests.conftest": "ray_fixtures",
    "ray.tests": "ray_tests",
    "ray.test_utils": "fleet._private.test_utils",
}

# Ray modules without a leading underscore that are nonetheless internal.
INTERNAL = (
    "ray.core", "ray.autoscaler", "ray.dashboard", "ray.experimental.internal_kv",
    "ray.ray_constants", "ray.worker", "ray.state", "ray.util.client", "ray.util.debug",
    "ray.experimental.state", "ray.tests", "ray.test_utils", "ray.internal",
    "ray.experimental.client", "ray.services", "ray.node",
)


def is_internal(name):
    parts = name.split(".")
    if any(p.startswith("_") and not p.startswith("__") for p in parts[1:]):
        return True
    return any(name == p or name.startswith(p + ".") for p in INTERNAL)


class MissingInRayShim(NotImplementedError):
    """A test used a part of Ray that fleet does not provide."""


def _missing(name):
    kind = "internal" if is_internal(name) else "public"
    return MissingInRayShim(f"[{kind}] {name} is not provided by fleet")


# While test files are being imported (pytest's collection), a placeholder
# called or tested for truth at module level (``skipif(internal_flag())``,
# a decorator) gives another placeholder, false, instead of raising, so one
# module-level use of an internal does not hide every test of the file.
_lenient = [True]


def set_lenient(on):
    """Placeholders are lenient while test modules import, strict in tests."""
    _lenient[0] = bool(on)


class _Placeholder:
    """Stands for a Ray name fleet lacks; any real use raises."""

    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Placeholder(object.__getattribute__(self, "_name") + "." + attr)

    def _fail(self, *args, **kwargs):
        raise _missing(object.__getattribute__(self, "_name"))

    def __call__(self, *args, **kwargs):
        if _lenient[0]:
            if len(args) == 1 and callable(args[0]) and not kwargs:
                return args[0]  # used as a decorator at import time
            result = _Placeholder(object.__getattribute__(self, "_name") + "()")
            object.__setattr__(result, "_falsy", True)  # (a skipif reads it later)
            return result
        self._fail()

    def __bool__(self):
        if _lenient[0] or self.__dict__.get("_falsy"):
            return False
        self._fail()

    __iter__ = __len__ = __getitem__ = __enter__ = __mro_entries__ = _fail
    __int__ = __float__ = __eq__ = __lt__ = __contains__ = _fail
    __hash__ = object.__hash__

    def __repr__(self):
        return f"<missing in fleet: {object.__getattribute__(self, '_name')}>"


class _PlaceholderModule(types.ModuleType):
    def __init__(self, name):
        super().__init__(name)
        self.__path__ = []

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Placeholder(self.__name__ + "." + attr)


class _PackageView(types.ModuleType):
    def __init__(self, name, real):
        super().__init__(name, real.__doc__)
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "__path__", list(getattr(real, "__path__", [])))

    def __getattr__(self, attr):
        real = object.__getattribute__(self, "_real")
        try:
            value = getattr(real, attr)
        except AttributeError:
            if attr.startswith("__") and attr.endswith("__"):
                raise
        else:
            mod = getattr(value, "__name__", "")
            if isinstance(value, types.ModuleType) and mod.startswith("fleet."):
                return importlib.import_module("ray." + mod[len("fleet."):])
            return value
        name = object.__getattribute__(self, "__name__") + "." + attr
        try:
            found = importlib.util.find_spec(_target(name))
        except ImportError:
            found = None
        return importlib.import_module(name) if found is not None else _Placeholder(name)

    def __setattr__(self, attr, value):
        real = object.__getattribute__(self, "_real")
        if attr.startswith("__") or (
            isinstance(value, types.ModuleType) and hasattr(real, attr)
        ):
            # Import machinery bookkeeping, or a submodule being bound over a
            # name the fleet package already defines: keep the package's own.
            if attr.startswith("__"):
                object.__setattr__(self, attr, value)
            return
        setattr(real, attr, value)

    def __dir__(self):
        return dir(object.__getattribute__(self, "_real"))

    def __reduce__(self):
        # A function that captures `ray` pickles it by name, like a module.
        return importlib.import_module, (self.__name__,)


def _target(name):
    if name in _SPECIAL:
        return _SPECIAL[name]
    if name.startswith("ray.tests."):
        return "ray_tests" + name[len("ray.tests"):]
    return "fleet" + name[3:]


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target, view):
        self._target = target
        self._view = view

    def create_module(self, spec):
        if self._target is None:
            return _PlaceholderModule(spec.name)
        real = importlib.import_module(self._target)
        return _PackageView(spec.name, real) if self._view else real

    def exec_module(self, module):
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if not name.startswith("ray."):
            return None
        real = _target(name)
        try:
            found = importlib.util.find_spec(real)
        except ImportError:
            found = None
        if found is None:
            return importlib.machinery.ModuleSpec(name, _AliasLoader(None, False),
                                                  is_package=True)
        is_package = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(name, _AliasLoader(real, True),
                                              is_package=is_package)


sys.meta_path.insert(0, _AliasFinder())
sys.modules["ray_shim"] = sys.modules[__name__]  # (the shim itself, for set_lenient)
sys.modules["ray"] = _PackageView("ray", importlib.import_module("fleet"))
