"""``ray.cloudpickle``: the cloudpickle fleet pickles functions and classes
with (Ray vendors its own copy; fleet uses the installed package)."""

from cloudpickle import *  # noqa: F401,F403
from cloudpickle import dumps, loads  # noqa: F401
