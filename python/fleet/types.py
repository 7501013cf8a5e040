"""Ray's ``ray.types``: the ObjectRef type for annotations
(``def f() -> ObjectRef[int]``)."""

from fleet.object_ref import ObjectRef

__all__ = ["ObjectRef"]
