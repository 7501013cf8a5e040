"""The Ray Client helpers Ray's test files import (``enable_client_mode``,
``ray_start_client_server_for_address``). fleet has no Ray Client (``ray://``
addresses), so each raises NotImplementedError when used; importing them
works, so the other tests of such a file still run."""

_WHY = "fleet has no Ray Client (ray.util.client, ray:// addresses); this test needs it"


def enable_client_mode(*args, **kwargs):
    raise NotImplementedError(_WHY)


def disable_client_hook(*args, **kwargs):
    raise NotImplementedError(_WHY)


def ray_start_client_server(*args, **kwargs):
    raise NotImplementedError(_WHY)


def ray_start_client_server_for_address(*args, **kwargs):
    raise NotImplementedError(_WHY)
