"""``ray.cloudpickle``: the cloudpickle fleet pickles functions and classes
with (Ray vendors its own copy under this name; fleet uses the installed one)."""

from cloudpickle import *  # noqa: F401,F403
from cloudpickle import dumps, loads  # noqa: F401
