"""The Ray compatibility shim under its own name (for pickling its classes in
workers): importing ``ray`` installs the shim and registers it as ray_shim."""

import ray  # noqa: F401
