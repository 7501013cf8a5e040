"""`import ray` gives fleet: an import shim for running Ray programs and Ray's
own test files unchanged against fleet.

Put the folder holding this package first on ``sys.path`` (``PYTHONPATH``).
``ray`` becomes a view of the ``fleet`` module, and ``ray.X.Y`` imports
``fleet.X.Y``; ``ray.tests.conftest`` is the fixture module of the
compatibility runner (``ray_fixtures.py`` beside this package). A module fleet
does not have raises ``ModuleNotFoundError`` naming both names.

A package is seen through a view (a module that reads and writes through to
the fleet package), so that importing a submodule never replaces a function
of the same name on the fleet package (``ray.util.placement_group`` is both a
function and a module, as in Ray). A plain module is the fleet module itself.
"""

import copyreg
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

_SPECIAL = {
    "ray.tests.conftest": "ray_fixtures",
    "ray.tests": "ray_tests",
    # Ray Client (ray://): not part of fleet; using it fails with a clear error.
    "ray._private.client_mode_hook": "ray_client_unsupported",
    "ray.util.client": "ray_client_unsupported",
    "ray.util.client.ray_client_helpers": "ray_client_unsupported",
}


class _PackageView(types.ModuleType):
    def __init__(self, name, real):
        super().__init__(name, real.__doc__)
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_replaced", {})
        object.__setattr__(self, "__path__", list(getattr(real, "__path__", [])))

    def __getattr__(self, attr):
        return getattr(object.__getattribute__(self, "_real"), attr)

    def __setattr__(self, attr, value):
        real = object.__getattribute__(self, "_real")
        if attr.startswith("__") or (
            isinstance(value, types.ModuleType) and hasattr(real, attr)
        ):
            # Import machinery bookkeeping, or a submodule being bound over a
            # name the fleet package already defines: keep the package's own.
            object.__setattr__(self, attr, value)
            if attr.startswith("__") or not hasattr(real, attr):
                return
            object.__delattr__(self, attr)
            return
        if hasattr(real, attr):
            # Remember what a test's patch (unittest.mock) replaces: it
            # undoes the patch of an attribute it did not find in our
            # __dict__ by deleting it, which restores the original here.
            object.__getattribute__(self, "_replaced").setdefault(attr, getattr(real, attr))
        setattr(real, attr, value)

    def __delattr__(self, attr):
        saved = object.__getattribute__(self, "_replaced")
        if attr in saved:
            setattr(object.__getattribute__(self, "_real"), attr, saved.pop(attr))
            return
        object.__delattr__(self, attr)

    def __dir__(self):
        return dir(object.__getattribute__(self, "_real"))


def _reduce_view(view):
    # A function that uses `ray` pickles the module by reference; the view is
    # a ModuleType subclass, which cloudpickle does not treat as a module:
    # pickle it as the fleet module it shows (workers import that).
    return importlib.import_module, (object.__getattribute__(view, "_real").__name__,)


copyreg.pickle(_PackageView, _reduce_view)


def _target(name):
    if name in _SPECIAL:
        return _SPECIAL[name]
    if name.startswith("ray.tests."):
        return "ray_tests" + name[len("ray.tests"):]
    return "fleet" + name[3:]


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target, is_package):
        self._target = target
        self._is_package = is_package

    def create_module(self, spec):
        real = importlib.import_module(self._target)
        return _PackageView(spec.name, real) if self._is_package else real

    def exec_module(self, module):
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if not name.startswith("ray."):
            return None
        real = _target(name)
        try:
            found = importlib.util.find_spec(real)
        except ModuleNotFoundError:
            found = None
        if found is None:
            raise ModuleNotFoundError(
                f"No module named {name!r} (fleet has no {real!r})", name=name
            )
        is_package = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(
            name, _AliasLoader(real, is_package), is_package=is_package
        )


sys.meta_path.insert(0, _AliasFinder())
sys.modules["ray"] = _PackageView("ray", importlib.import_module("fleet"))
