"""Radius search for the directly computed metrics: Minkowski with p != 2 and ``"precomputed"``.

The same flow as the matrix-product engine (:mod:`knn_gpu._engine.radius`), batch by
batch of queries, without a Python loop over queries:

1. the batch's keys against every training row, block by block with the
   k-search's own block functions (:data:`knn_gpu._engine.direct.BLOCK_FUNCTIONS`):
   ``sum |q_f - t_f|^p`` without the root for a Minkowski p with a root, the
   distance itself for p = 1 and infinity, the query's row itself for
   ``"precomputed"`` (nothing computed); in the exact dtype (float64 where
   the device has it), written into one ``(rows, n_samples)`` array;
2. the neighbour mask ``key <= threshold``, the radius in key units
   (:func:`key_radius`): ``radius ** p`` for a p with a root, the radius
   itself otherwise;
3. its count, read to the host (:func:`~knn_gpu._lib.devices.read_counts`): the
   batch's one synchronisation;
4. the neighbours' flat positions (:func:`~knn_gpu._engine.topk.positions_of_true`),
   hence their queries and training indices, already in (query, index)
   order, and their keys; the p-th root of those keys only, after the final
   sort (``sort_results`` orders by key, as scikit-learn orders its reduced
   distances: a vectorised ``pow`` may round equal keys apart).

The decision is the key's, as scikit-learn's brute radius search decides
(``RadiusNeighbors64`` compares ``sum |d|^p`` with ``radius ** p``), not the
root's: on integer data a point exactly at the radius stays in (a key of 27
against ``3.0 ** 3`` = 27, where ``27 ** (1/3)`` may round to either side of
3 depending on the library's ``pow``). No candidate is re-scored: the keys
are the k-search's exact keys, so there is no safety margin to cover.

The common tail (``sort_results``, offsets) is
:func:`knn_gpu._engine.radius.finish_radius_search`; with every candidate a
neighbour there is nothing to compact and no count to read at the end:
``B`` batches read ``B`` times.

Memory: per query of a batch, its keys (exact dtype), the mask (one byte)
and, but on NumPy, the compaction's running count (16 bytes) for every
training row, on top of the block temporaries the k-search counts
(:func:`knn_gpu._engine.direct.direct_plan`, with k = 0). As in the product engine,
the result and each batch's neighbours until the end (query, index and
distance: 24 bytes each) depend on the data and are not bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.devices import device_scope, read_counts
from .batches import halving_batches
from .budget import default_memory_budget, run_in_shares
from .direct import DirectIndex, block_function, direct_plan, direct_workers
from .radius import (
    batch_radius,
    empty_radius_result,
    finish_radius_search,
    radius_on_device,
    radius_search_index,
)
from .topk import positions_of_true

__all__ = ["radius_search", "radius_search_direct", "key_radius", "radius_bytes_per_query"]


def radius_bytes_per_query(index: DirectIndex) -> int:
    """Bytes per query of a batch beyond the block temporaries: keys, mask and compaction per training row."""
    xp = index.xp
    compaction = 0 if array_api_compat.is_numpy_namespace(xp) else 2 * 8
    return index.num_samples * (xp.finfo(index.exact).bits // 8 + 1 + compaction)


def key_radius(radius: Any, p: float | None, *, xp: ModuleType, exact: Any) -> Any:
    """The radius in key units: ``radius ** p`` where the key has no root taken (1 < p or p < 1), else the radius.

    A float stays a float (a power too large for a float is infinity); an
    array (one radius per query) is raised elementwise, a radius whose power
    would pass half the exact dtype's largest value giving infinity (every
    finite key is then in).
    """
    if p is None or p == 1.0 or math.isinf(p):
        return radius
    if isinstance(radius, float):
        try:
            return radius**p
        except OverflowError:
            return math.inf
    limit = (float(xp.finfo(exact).max) / 2) ** (1 / p) if p > 1 else math.inf
    powers = xp.clip(radius, max=limit) ** p if p > 1 else radius**p
    return xp.where(radius <= limit, powers, xp.full_like(powers, math.inf))


def radius_search_direct(
    index: DirectIndex,
    queries: Any,
    radius: Any,
    *,
    sort_results: bool = False,
    batch_rows: int | None = None,
    memory_budget: int | None = None,
    distance_dtype: Any = None,
) -> tuple[Any, Any, Any]:
    """Every training row within ``radius`` of each query, for a :class:`~knn_gpu._engine.direct.DirectIndex`.

    Parameters
    ----------
    index : DirectIndex
        Minkowski (any p > 0) or ``"precomputed"`` (``queries`` are then rows
        of distances to the training samples).
    queries : array, shape (n_queries, n_features)
        Validated, in the index's namespace, device and (data) dtype.
    radius : float or array, shape (n_queries,)
        Checked by :func:`~knn_gpu._lib.validation.check_radius` (``>= 0``,
        infinity allowed); an array holds one radius per query.
    sort_results : bool
        Order each query's neighbours by (distance, index) instead of index.
    batch_rows : int, optional
        Queries per batch; by default from the memory budget.
    memory_budget : int, optional
        Bytes for a batch's temporaries (not the result); the k-search's
        default when None.
    distance_dtype : dtype, optional
        Of the returned distances; ``index.distance_dtype`` by default.

    Returns
    -------
    distances : array, shape (n_neighbours,), ``distance_dtype``
    indices : array of int64, shape (n_neighbours,)
    offsets : array of int64, shape (n_queries + 1,)
        As :func:`knn_gpu._engine.radius.radius_search_index`: query ``i``'s
        neighbours are ``indices[offsets[i]:offsets[i + 1]]``, with distance
        ``<= radius`` (decided in key units, see the module notes).
    """
    xp = index.xp
    device = index.device
    with device_scope(xp, device):
        num_queries = queries.shape[0]
        if distance_dtype is None:
            distance_dtype = index.distance_dtype
        if num_queries == 0:
            return empty_radius_result(distance_dtype, xp=xp, device=device)
        if memory_budget is None:
            memory_budget = default_memory_budget(xp, device)
        radius = radius_on_device(radius, num_queries, xp=xp, device=device, dtype=index.exact)
        thresholds = key_radius(radius, index.root, xp=xp, exact=index.exact)
        # NumPy: batches on every core, as the k-search (the block functions release the GIL).
        num_workers = direct_workers(index, num_queries, None)
        batch_rows, block_rows = direct_plan(
            index,
            num_queries,
            0,
            memory_budget,
            num_workers=num_workers,
            batch_rows=batch_rows,
            reduce_bytes_per_query=radius_bytes_per_query(index),
        )
        block_keys = block_function(index)

        def search_rows(start: int, stop: int) -> tuple:
            threshold = batch_radius(thresholds, start, stop)
            return _radius_batch(index, queries[start:stop, ...], start, threshold, block_rows, block_keys)

        def search_share(share: list[int]) -> list[tuple]:
            # A batch out of device memory is searched in halves: more, smaller parts, in query order.
            return list(
                halving_batches(
                    search_rows, share, batch_rows, num_queries, xp=xp, device=device, memory_budget=memory_budget
                )
            )

        parts = [part for _, part in run_in_shares(list(range(0, num_queries, batch_rows)), search_share, num_workers)]
        root = None
        if index.root is not None:

            def root(keys: Any) -> Any:
                return keys ** (1.0 / index.root)

        return finish_radius_search(
            parts, num_queries, sort_results=sort_results, distance_dtype=distance_dtype, distances_of=root
        )


def direct_keys(index: DirectIndex, queries: Any, block_rows: int, block_keys: Callable | None) -> Any:
    """The batch's keys against every training row, shape (rows, n_samples), exact dtype.

    Precomputed: the queries themselves. Minkowski: block by block of
    training rows into one array (a slice assignment per block, no
    concatenation of the blocks).
    """
    xp = index.xp
    if block_keys is None:
        return xp.astype(queries, index.exact)
    queries = xp.astype(queries, index.exact, copy=False)
    num_samples = index.num_samples
    if block_rows >= num_samples:
        return block_keys(queries, xp.astype(index.rows, index.exact, copy=False))
    keys = xp.empty((queries.shape[0], num_samples), dtype=index.exact, device=index.device)
    for start in range(0, num_samples, block_rows):
        stop = min(start + block_rows, num_samples)
        block = xp.astype(index.rows[start:stop, ...], index.exact, copy=False)
        keys[:, start:stop] = block_keys(queries, block)
    return keys


def _radius_batch(
    index: DirectIndex, queries: Any, start: int, threshold: Any, block_rows: int, block_keys: Callable | None
) -> tuple[Any, Any, Any, Any]:
    """One batch's neighbours: ``(query number, training index, key, None)``, by (query, index).

    Every candidate is a neighbour (``kept`` None: nothing to compact).
    """
    xp = index.xp
    num_samples = index.num_samples
    keys = direct_keys(index, queries, block_rows, block_keys)
    mask = keys <= (threshold if isinstance(threshold, float) else threshold[:, None])
    if index.metric == "precomputed":
        # An infinite precomputed distance is a missing entry of a sparse graph (dense input is checked
        # finite): no neighbour, even within radius=inf, as scikit-learn reads the graph.
        mask = mask & (keys < math.inf)
    (count,) = read_counts(xp.count_nonzero(mask), xp=xp)  # the batch's one synchronisation
    positions = positions_of_true(mask, count, xp=xp)
    del mask
    neighbor_keys = xp.take(xp.reshape(keys, (-1,)), positions)  # their root is taken after the final sort
    del keys
    query_of = positions // num_samples
    return query_of + start, positions % num_samples, neighbor_keys, None


def radius_search(
    index: Any,
    queries: Any,
    radius: Any,
    *,
    sort_results: bool = False,
    batch_rows: int | None = None,
    memory_budget: int | None = None,
    train: Any = None,
    distance_dtype: Any = None,
) -> tuple[Any, Any, Any]:
    """The radius engine of ``index``: :func:`radius_search_direct` for a DirectIndex, else the product engine.

    Same parameters and result as :func:`knn_gpu._engine.radius.radius_search_index`
    (``train``, the rows the index was built from, is used by the product
    engine's re-scoring only).
    """
    options = {
        "sort_results": sort_results,
        "batch_rows": batch_rows,
        "memory_budget": memory_budget,
        "distance_dtype": distance_dtype,
    }
    if isinstance(index, DirectIndex):
        return radius_search_direct(index, queries, radius, **options)
    return radius_search_index(index, queries, radius, train=train, **options)
