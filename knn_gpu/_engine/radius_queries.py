"""scikit-learn's radius queries on a fitted estimator, and per-query reductions of their flat result.

The estimators' base reaches the radius engine in one place
(:meth:`knn_gpu._estimators.knn._NeighborsBase._radius_flat`:
:func:`knn_gpu._engine.radius_direct.radius_search` for an index in memory,
:func:`knn_gpu._engine.radius_streamed.radius_search_streamed` for a model fitted out
of core); the drop-in classes' ``radius_neighbors`` and
``radius_neighbors_graph`` (:mod:`knn_gpu._estimators.drop_in`) shape its result.
Every query has its own number of neighbours, so the engine's result is flat:
``(distances, indices, offsets)``, query ``i``'s neighbours at
``offsets[i]:offsets[i + 1]``. The reductions here (:func:`segment_sums`,
:func:`query_numbers`) work on that flat form on the device, with
cumulative sums taken at the offsets: no Python loop over queries.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .._lib.backends import to_host
from .._lib.devices import read_counts
from .radius import query_numbers
from .topk import positions_of_true

__all__ = ["segment_sums", "query_numbers", "csr_from_flat", "exclude_self_flat", "per_query", "GRAPH_MODES"]

GRAPH_MODES = ("connectivity", "distance")


def _running_differences(values: Any, offsets: Any, *, xp: ModuleType) -> tuple[Any, Any]:
    """``(running sum with a leading 0, per-segment differences of it)`` along axis 0."""
    zero = xp.zeros((1, *values.shape[1:]), dtype=values.dtype, device=array_api_compat.device(values))
    running = xp.concat([zero, xp.cumulative_sum(values, axis=0)], axis=0)
    return running, xp.take(running, offsets[1:], axis=0) - xp.take(running, offsets[:-1], axis=0)


def segment_sums(values: Any, offsets: Any, *, xp: ModuleType) -> Any:
    """Per query, the sum of its neighbours' ``values`` along axis 0.

    Parameters
    ----------
    values : array, shape (n_neighbours,) or (n_neighbours, m)
    offsets : array of int64, shape (n_queries + 1,)

    Returns
    -------
    array, shape (n_queries,) or (n_queries, m), ``values``' dtype
        The difference of the running sum at each query's two offsets (0 for
        a query without neighbours), plus the difference of the running sum
        of the rounding errors of its additions: each addition's error is
        recovered exactly (TwoSum), so the rounding of a query's sum is
        relative to its own values and not to the running total, which one
        large value (the 1/d weight of a near-duplicate) makes huge for every
        later query. Infinities and NaN are summed apart (exact counts per
        query), so a query's sum is IEEE's sum of its own values: NaN, or an
        infinity, never spreads to the queries after it.
    """
    if not xp.isdtype(values.dtype, "real floating"):
        return _running_differences(values, offsets, xp=xp)[1]
    finite_values = xp.isfinite(values)
    clean = xp.where(finite_values, values, xp.zeros_like(values))
    running, sums = _running_differences(clean, offsets, xp=xp)
    before, after = running[:-1, ...], running[1:, ...]
    # Where the running sum itself overflows, no correction (the sums are then IEEE's).
    finite = xp.isfinite(before) & xp.isfinite(after)
    before, after, clean = (xp.where(finite, array, xp.zeros_like(array)) for array in (before, after, clean))
    rounded = before + clean
    part = rounded - before
    # before + clean - after, exactly up to its own rounding: TwoSum's error, plus the (Sterbenz-exact)
    # difference between that sum and the scan's (a parallel scan may associate differently).
    errors = ((before - (rounded - part)) + (clean - part)) + (rounded - after)
    sums = sums + _running_differences(errors, offsets, xp=xp)[1]
    # Non-finite values, counted per query: NaN, or +inf with -inf, give NaN; else the infinity.
    special = [values == math.inf, values == -math.inf, xp.isnan(values)]
    plus, minus, nan = (_running_differences(xp.astype(flags, xp.int64), offsets, xp=xp)[1] > 0 for flags in special)
    infinity = xp.full_like(sums, math.inf)
    sums = xp.where(plus, infinity, xp.where(minus, -infinity, sums))
    return xp.where(nan | (plus & minus), xp.full_like(sums, math.nan), sums)


def csr_from_flat(data: Any, indices: Any, offsets: Any, num_columns: int) -> Any:
    """A CSR matrix whose row i holds ``indices[offsets[i]:offsets[i + 1]]`` (ones where ``data`` is None).

    ``cupyx.scipy.sparse.csr_matrix`` on the GPU for CuPy; ``scipy.sparse.csr_matrix``
    on the host for every other library (SciPy has no sparse matrix of torch or
    array_api_strict arrays).
    """
    rows = offsets.shape[0] - 1
    if array_api_compat.is_cupy_array(indices):
        import cupy
        import cupyx.scipy.sparse

        values = cupy.ones(indices.shape[0]) if data is None else data
        return cupyx.scipy.sparse.csr_matrix((values, indices, offsets), shape=(rows, num_columns))
    try:
        import scipy.sparse
    except ImportError as exc:
        msg = "this neighbour graph needs SciPy for its sparse result: pip install 'knn-gpu[sparse]' (or scipy)"
        raise ImportError(msg) from exc
    host_indices = to_host(indices)
    values = np.ones(host_indices.shape[0]) if data is None else to_host(data)
    return scipy.sparse.csr_matrix((values, host_indices, to_host(offsets)), shape=(rows, num_columns))


def exclude_self_flat(distances: Any, indices: Any, offsets: Any, *, xp: ModuleType) -> tuple[Any, Any, Any]:
    """Drop each training point from its own neighbours (the training set as queries), as scikit-learn does.

    Only the point itself goes (by index); its exact duplicates stay. One
    read of the kept count (a synchronisation), then a compaction.
    """
    query_of = query_numbers(offsets, indices.shape[0], xp=xp)
    keep = indices != query_of
    (count,) = read_counts(xp.count_nonzero(keep), xp=xp)
    positions = positions_of_true(keep, count, xp=xp)
    zero = xp.zeros(1, dtype=xp.int64, device=array_api_compat.device(offsets))
    running = xp.concat([zero, xp.cumulative_sum(xp.astype(keep, xp.int64))])
    return xp.take(distances, positions), xp.take(indices, positions), xp.take(running, offsets)


def per_query(values: Any, bounds: list[int]) -> np.ndarray:
    """scikit-learn's container: a NumPy object array holding query ``i``'s slice of ``values``."""
    per_query = np.empty(len(bounds) - 1, dtype=object)
    for query in range(len(bounds) - 1):
        per_query[query] = values[bounds[query] : bounds[query + 1]]
    return per_query
