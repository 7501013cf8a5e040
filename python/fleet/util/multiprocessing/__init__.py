"""A drop-in ``multiprocessing.Pool`` whose workers are fleet actors.

``from fleet.util.multiprocessing import Pool`` replaces
``from multiprocessing import Pool``: the same methods and results, with the
work spread over a fleet cluster (started on first use if none is connected).
"""

from multiprocessing import JoinableQueue, TimeoutError

from fleet.util.multiprocessing.pool import AsyncResult, IMapIterator, Pool

__all__ = ["AsyncResult", "IMapIterator", "JoinableQueue", "Pool", "TimeoutError"]
