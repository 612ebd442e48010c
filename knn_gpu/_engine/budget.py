"""Memory budget and threads: how much a search may hold, and how many threads run it.

One module for the two resources every search plans with, so that the
product, direct, radius and streamed searches read the same rules:
the default budget (a fixed amount on the host, a share of the free memory
on a GPU), the cores this process may use, and :func:`run_in_shares`, the
thread pool that runs batches in round-robin shares.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

from threadpoolctl import threadpool_limits

from .._lib.devices import free_device_bytes

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "GPU_MEMORY_SHARE",
    "available_cores",
    "default_memory_budget",
    "dtype_itemsize",
    "run_in_shares",
]

#: Bytes that the temporaries of the batches in flight may take on the host,
#: unless told otherwise (all of them: see :func:`batch_bytes_per_query`).
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: Share of the free device memory a GPU search budgets for its batches.
GPU_MEMORY_SHARE = 0.5


def default_memory_budget(xp: ModuleType, device: Any) -> int:
    """:data:`GPU_MEMORY_SHARE` of the free memory of a GPU ``device`` (read now), else :data:`DEFAULT_MEMORY_BUDGET`."""
    free_bytes = free_device_bytes(xp, device)
    return DEFAULT_MEMORY_BUDGET if free_bytes is None else int(free_bytes * GPU_MEMORY_SHARE)


def dtype_itemsize(xp: ModuleType, dtype: Any) -> int:
    if hasattr(xp, "finfo") and xp.isdtype(dtype, "real floating"):
        return xp.finfo(dtype).bits // 8
    return xp.iinfo(dtype).bits // 8


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_in_shares(
    starts: list[int],
    search_share: Callable[[list[int]], list[tuple]],
    num_workers: int,
    *,
    one_blas_thread: bool = False,
) -> list[tuple]:
    """``search_share`` over round-robin shares of the batch ``starts``, on ``num_workers`` threads.

    ``search_share(share)`` returns a ``(start, result)`` pair per start of
    its share; the pairs come back in the order of ``starts``. One thread
    (the caller's) when there is one worker or one batch; at most
    ``num_workers`` batches are in flight. ``one_blas_thread`` limits BLAS to
    one thread while the workers run (the product search: each worker's
    products would otherwise start a thread per core).
    """
    num_workers = min(num_workers, len(starts))
    if num_workers <= 1:
        return search_share(starts)
    shares = [starts[worker::num_workers] for worker in range(num_workers)]
    limits = threadpool_limits(limits=1, user_api="blas") if one_blas_thread else contextlib.nullcontext()
    with limits, ThreadPoolExecutor(num_workers) as pool:
        share_results = list(pool.map(search_share, shares))
    return sorted((batch for share in share_results for batch in share), key=lambda batch: batch[0])
