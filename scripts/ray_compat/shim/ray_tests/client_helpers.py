"""Ray's test helper for running a test with or without the Ray client.

fleet has no Ray client: the client variant is one of Ray's internals here.
"""

import contextlib


@contextlib.contextmanager
def connect_to_client_or_not(connect_to_client: bool):
    if connect_to_client:
        import ray_shim

        raise ray_shim.MissingInRayShim("[internal] ray.util.client (Ray client mode)")
    yield
