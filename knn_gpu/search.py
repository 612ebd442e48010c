"""Exact k-nearest-neighbour search in batches of queries.

Data flows one way: the training set is prepared once (:func:`build_index`),
then each batch of queries goes ranking product -> block prefilter -> top-k
candidates -> exact distances -> final order (:func:`search_index`).

The prefilter makes selection cheap. The training rows are split into blocks
of ``block_size`` consecutive rows; the k nearest neighbours lie in the k
blocks whose smallest key is smallest (ties to the lower block), so only
those ``k * block_size`` keys are searched. The rows are *stored* block-strided
(block ``j`` holds rows ``j * block_size + i``, stored at ``i * num_blocks +
j``) so that the per-block minimum is a reduction over the middle axis of a
``(rows, block_size, num_blocks)`` view, which vectorises.

Ordering contract: ascending distance, equal distances -> lower training
index. Every step breaks ties by index, so integer data gives identical
indices on every backend.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
from threadpoolctl import threadpool_limits

from .distances import augment_queries, augment_train, exact_distances, ranking_keys
from .topk import smallest_k_columns
from .validation import exact_dtype

__all__ = [
    "TrainIndex",
    "build_index",
    "search_index",
    "default_batch_rows",
    "search_workers",
    "DEFAULT_MEMORY_BUDGET",
]

#: Bytes of ranking keys one batch may hold, unless told otherwise.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: A worker thread is worth starting for at least this many ranking keys and
#: queries. Smaller shares gain less than they lose: right after a multi-threaded
#: BLAS call, OpenBLAS's idle threads spin for a while and compete with the
#: workers (2,000 queries x 25,000 rows: 90 ms after a pause, 136 ms after a
#: product, against 114 ms on one thread); thin batches also slow the product.
MIN_KEYS_PER_WORKER = 2**26
MIN_QUERIES_PER_WORKER = 512

#: Most queries per batch on NumPy: larger batches' keys spill out of the CPU
#: caches between the product and the selection (4,000 queries x 10,000-25,000
#: rows ran 15-40 % slower in batches of 1,000-2,000 than of 512).
HOST_MAX_BATCH_ROWS = 512

#: The number of candidates recomputed exactly is ``k + max(k, EXTRA_CANDIDATES)``.
EXTRA_CANDIDATES = 8


@dataclass(frozen=True)
class TrainIndex:
    """A training set prepared for searching, on its own namespace and device."""

    device: Any
    metric: str
    num_samples: int
    num_features: int
    block_size: int
    num_blocks: int
    rows: Any  # (num_blocks * block_size, num_features + 1), block-strided
    offset: Any  # (num_features,)
    exact: Any  # dtype of the exact recomputation

    @property
    def xp(self) -> ModuleType:
        """Namespace of the stored rows (derived, so that the index pickles)."""
        return array_api_compat.array_namespace(self.rows)

    @property
    def dtype(self) -> Any:
        """Floating dtype of the stored rows (and of returned distances)."""
        return self.rows.dtype


def choose_block_size(num_samples: int, typical_candidates: int = 20) -> int:
    """Rows per block: balances the blocks' minima against the candidates.

    Per query the search touches ``num_blocks`` minima plus
    ``candidates * block_size`` keys; ``sqrt(n / candidates)`` minimises the sum.
    The layout is fixed at fit, so it is tuned for k = 10 (20 candidates).
    """
    return max(1, math.isqrt(num_samples // typical_candidates))


def build_index(train: Any, metric: str, *, xp: ModuleType) -> TrainIndex:
    """Prepare validated floating training rows for :func:`search_index`."""
    device = array_api_compat.device(train)
    exact = exact_dtype(xp, device)
    num_samples, num_features = train.shape
    rows, offset = augment_train(train, metric, xp=xp, exact=exact)
    block_size = choose_block_size(num_samples)
    num_blocks = -(-num_samples // block_size)
    padding = num_blocks * block_size - num_samples
    if padding:
        pad_rows = xp.concat(
            [
                xp.zeros((padding, num_features), dtype=rows.dtype, device=device),
                xp.full((padding, 1), xp.finfo(rows.dtype).max, dtype=rows.dtype, device=device),
            ],
            axis=1,
        )
        rows = xp.concat([rows, pad_rows], axis=0)
    strided = xp.permute_dims(xp.reshape(rows, (num_blocks, block_size, num_features + 1)), (1, 0, 2))
    rows = xp.reshape(strided, (num_blocks * block_size, num_features + 1), copy=True)
    return TrainIndex(
        device=device,
        metric=metric,
        num_samples=num_samples,
        num_features=num_features,
        block_size=block_size,
        num_blocks=num_blocks,
        rows=rows,
        offset=offset,
        exact=exact,
    )


def default_batch_rows(
    index: TrainIndex, num_queries: int, memory_budget: int | None = None, *, num_workers: int = 1
) -> int:
    """Queries per batch so that the batches in flight fit ``memory_budget`` bytes.

    Each of ``num_workers`` threads holds one batch, so each gets its share of
    the budget; the batches are of equal size and come in rounds of one per
    worker, so that every worker has the same work. NumPy batches hold at
    most :data:`HOST_MAX_BATCH_ROWS` queries. On CuPy the default budget is
    a quarter of the free device memory (read once per search, before the
    loop); elsewhere :data:`DEFAULT_MEMORY_BUDGET`.
    """
    if memory_budget is None:
        memory_budget = DEFAULT_MEMORY_BUDGET
        if array_api_compat.is_cupy_namespace(index.xp):
            import cupy

            free_bytes, _ = cupy.cuda.runtime.memGetInfo()
            pool_free = cupy.get_default_memory_pool().free_bytes()
            memory_budget = max(memory_budget, (free_bytes + pool_free) // 4)
    # The keys, their block view and the candidates' bookkeeping: about 2 keys'
    # worth of bytes per stored row.
    bytes_per_query = 2 * index.rows.shape[0] * _itemsize(index)
    rows_in_budget = max(1, memory_budget // (num_workers * bytes_per_query))
    if array_api_compat.is_numpy_namespace(index.xp):
        rows_in_budget = min(rows_in_budget, HOST_MAX_BATCH_ROWS)
    # Equal batches, as many per worker: a worker left with an extra batch would idle the others.
    rounds = -(-num_queries // (num_workers * rows_in_budget))
    return max(1, -(-num_queries // (num_workers * max(rounds, 1))))


def _itemsize(index: TrainIndex) -> int:
    return 4 if index.rows.dtype == index.xp.float32 else 8


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def search_workers(index: TrainIndex, num_queries: int, n_jobs: int | None) -> int:
    """Threads that search batches side by side (NumPy only).

    NumPy runs the selection on one core, so on the host each thread takes
    whole batches (product and selection) with a single-threaded BLAS.
    Device libraries (CuPy) and libraries with their own thread pools (torch)
    get one thread. ``n_jobs=None`` uses every available core for searches
    large enough to gain (:data:`MIN_KEYS_PER_WORKER`,
    :data:`MIN_QUERIES_PER_WORKER`) and one thread below that; ``-1`` always
    uses every available core, and a positive ``n_jobs`` that many threads.
    """
    if not array_api_compat.is_numpy_namespace(index.xp):
        return 1
    if n_jobs is None:
        worth_it = min(num_queries // MIN_QUERIES_PER_WORKER, num_queries * index.rows.shape[0] // MIN_KEYS_PER_WORKER)
        return max(1, min(available_cores(), worth_it))
    wanted = available_cores() if n_jobs == -1 else n_jobs
    return max(1, min(wanted, num_queries))


def search_index(
    index: TrainIndex, queries: Any, k: int, *, batch_rows: int | None = None, n_jobs: int | None = None
) -> tuple[Any, Any]:
    """The ``k`` nearest stored rows of each query.

    Parameters
    ----------
    index : TrainIndex
    queries : array, shape (n_queries, num_features)
        Validated, in the index's namespace, device and dtype.
    k : int
        ``1 <= k <= index.num_samples``.
    batch_rows : int, optional
        Queries per batch; by default from the memory budget.
    n_jobs : int, optional
        Threads for the NumPy backend (see :func:`search_workers`).

    Returns
    -------
    distances : array, shape (n_queries, k), the index's dtype
    indices : array of int64, shape (n_queries, k)
    """
    xp = index.xp
    num_queries = queries.shape[0]
    if num_queries == 0:
        return (
            xp.zeros((0, k), dtype=index.dtype, device=index.device),
            xp.zeros((0, k), dtype=xp.int64, device=index.device),
        )
    num_workers = search_workers(index, num_queries, n_jobs)
    if batch_rows is None:
        batch_rows = default_batch_rows(index, num_queries, num_workers=num_workers)
    starts = list(range(0, num_queries, batch_rows))
    num_workers = min(num_workers, len(starts))
    if num_workers == 1:
        results = _search_batches(index, queries, k, starts, batch_rows)
    else:
        # Round-robin shares; one BLAS thread per worker so that the cores are not oversubscribed.
        shares = [starts[worker::num_workers] for worker in range(num_workers)]
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(num_workers) as pool:
            share_results = list(pool.map(lambda share: _search_batches(index, queries, k, share, batch_rows), shares))
        results = [batch for share in share_results for batch in share]
        results.sort(key=lambda batch: batch[0])
    if len(results) == 1:
        return results[0][1], results[0][2]
    return (
        xp.concat([distances for _, distances, _ in results], axis=0),
        xp.concat([indices for _, _, indices in results], axis=0),
    )


def _search_batches(index: TrainIndex, queries: Any, k: int, starts: list[int], batch_rows: int) -> list[tuple]:
    """``(start, distances, indices)`` for the batches of ``batch_rows`` queries at ``starts``, in order."""
    xp = index.xp
    num_queries = queries.shape[0]
    keys_buffer = None
    if array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp):
        # One keys block reused by every batch (matmul(out=) is native, not standard).
        keys_buffer = xp.empty(
            (min(batch_rows, num_queries), index.rows.shape[0]), dtype=index.dtype, device=index.device
        )
    results = []
    for start in starts:
        batch = queries[start : min(start + batch_rows, num_queries), ...]
        out = None if keys_buffer is None else keys_buffer[: batch.shape[0], ...]
        results.append((start, *_search_batch(index, batch, k, keys_out=out)))
    return results


def _search_batch(index: TrainIndex, queries: Any, k: int, keys_out: Any = None) -> tuple[Any, Any]:
    xp = index.xp
    rows = queries.shape[0]
    block_size, num_blocks = index.block_size, index.num_blocks
    num_candidates = min(index.num_samples, k + max(k, EXTRA_CANDIDATES))
    kept_blocks = min(num_candidates, num_blocks)

    keys = ranking_keys(augment_queries(queries, index.metric, index.offset, xp=xp), index.rows, xp=xp, out=keys_out)
    if kept_blocks < num_blocks:
        block_minima = xp.min(xp.reshape(keys, (rows, block_size, num_blocks)), axis=1)
        blocks = smallest_k_columns(block_minima, kept_blocks, xp=xp)
    else:
        blocks = xp.broadcast_to(xp.arange(num_blocks, dtype=xp.int64, device=index.device), (rows, num_blocks))
    # Gather the kept blocks' keys as (rows, kept_blocks, block_size): ascending
    # training index along each row. One flat take beats take_along_axis here.
    within_block = xp.arange(block_size, dtype=xp.int64, device=index.device)
    row_start = xp.arange(rows, dtype=xp.int64, device=index.device) * (block_size * num_blocks)
    flat = row_start[:, None, None] + within_block[None, None, :] * num_blocks + blocks[:, :, None]
    candidate_keys = xp.take(xp.reshape(keys, (-1,)), xp.reshape(flat, (-1,)))
    candidate_keys = xp.reshape(candidate_keys, (rows, kept_blocks * block_size))
    columns = smallest_k_columns(candidate_keys, num_candidates, xp=xp)
    block_of = xp.take_along_axis(blocks, columns // block_size, axis=1)
    within = columns % block_size
    train_indices = block_of * block_size + within
    stored_at = within * num_blocks + block_of

    # Take whole stored rows, then drop the augmented column: a take from the
    # column-sliced view would gather from non-contiguous rows (8x slower on NumPy).
    candidate_rows = xp.take(index.rows, xp.reshape(stored_at, (-1,)), axis=0)
    candidate_rows = xp.reshape(candidate_rows, (rows, num_candidates, index.num_features + 1))[
        ..., : index.num_features
    ]
    distances = exact_distances(queries, candidate_rows, index.metric, index.offset, xp=xp, exact=index.exact)
    # Candidates are in ascending training index, so a stable sort keeps ties in index order.
    order = xp.argsort(distances, axis=1, stable=True)[:, :k]
    distances = xp.take_along_axis(distances, order, axis=1)
    indices = xp.take_along_axis(train_indices, order, axis=1)
    return xp.astype(distances, index.dtype), indices
