"""scikit-learn's radius queries on a fitted estimator, and per-query reductions of their flat result.

:class:`RadiusQueries` gives the drop-in classes ``radius_neighbors`` and
``radius_neighbors_graph`` over the radius engine
(:func:`knn_gpu._engine.radius_direct.radius_search`: the matrix-product engine for a
``TrainIndex``, the direct one for a ``DirectIndex``, on the estimator's index;
:func:`knn_gpu._engine.radius_streamed.radius_search_streamed` for a model fitted out
of core).
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
from .._lib.validation import (
    check_batch_size,
    check_memory_budget,
    check_radius,
    check_radius_shape,
)
from .metrics import lookup
from .radius import query_numbers, read_counts
from .radius_direct import radius_search
from .radius_streamed import radius_search_streamed
from .streaming import StreamedTrain
from .topk import positions_of_true

__all__ = ["RadiusQueries", "segment_sums", "query_numbers", "csr_from_flat", "GRAPH_MODES"]

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


def _exclude_self_flat(distances: Any, indices: Any, offsets: Any, *, xp: ModuleType) -> tuple[Any, Any, Any]:
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


def _per_query(values: Any, bounds: list[int]) -> np.ndarray:
    """scikit-learn's container: a NumPy object array holding query ``i``'s slice of ``values``."""
    per_query = np.empty(len(bounds) - 1, dtype=object)
    for query in range(len(bounds) - 1):
        per_query[query] = values[bounds[query] : bounds[query + 1]]
    return per_query


class RadiusQueries:
    """``radius_neighbors`` and ``radius_neighbors_graph`` for the drop-in classes (``self.radius`` by default)."""

    def _radius_flat(self, X: Any, radius: Any, sort_results: bool = False) -> tuple[Any, Any, Any, Any]:
        """``(distances, indices, offsets, validated X)`` on the model's backend; ``X=None``: leave-one-out."""
        index = self._check_fitted()
        if index is None:
            msg = (
                f"radius queries of {type(self).__name__} need the training rows in memory or streamed from it; "
                "this model was fitted on Dask arrays (pass X.compute())"
            )
            raise ValueError(msg)
        streamed = isinstance(index, StreamedTrain)
        if streamed and X is None:
            msg = (
                f"radius queries of {type(self).__name__} without X (each training point against the others) need the "
                "training rows in memory; this model was fitted out of core: pass the rows as X"
            )
            raise ValueError(msg)
        if lookup(self._engine_metric()).similarity:
            msg = f"metric={self.metric!r} has no radius search (a similarity, not a distance); use another metric"
            raise ValueError(msg)
        radius = check_radius(self.radius if radius is None else radius)
        xp = index.xp
        if X is None:
            queries = self._engine_X
        else:
            X, queries = self._validated_queries(X, index)
        if not isinstance(radius, float):
            check_radius_shape(radius, queries.shape[0])
        if streamed:
            distances, indices, offsets = radius_search_streamed(
                index, queries, radius, sort_results=sort_results, batch_rows=check_batch_size(self.batch_size)
            )
        else:
            distances, indices, offsets = radius_search(
                index,
                queries,
                radius,
                sort_results=sort_results,
                batch_rows=check_batch_size(self.batch_size),
                memory_budget=check_memory_budget(self.memory_budget),
                train=self._engine_X,
            )
        if X is None:
            distances, indices, offsets = _exclude_self_flat(distances, indices, offsets, xp=xp)
        return distances, indices, offsets, X

    def radius_neighbors(
        self, X: Any = None, radius: float | None = None, return_distance: bool = True, sort_results: bool = False
    ) -> Any:
        """Every training row within ``radius`` (distance ``<= radius``) of each row of ``X``, as scikit-learn's.

        Parameters
        ----------
        X : array, shape (n_queries, n_features), optional
            ``None``: the training set, each point excluding itself (its
            exact duplicates stay).
        radius : float or array of shape (n_queries,), optional
            Defaults to the constructor's ``radius``; an array (any library,
            or a list) gives each query its own radius, as scikit-learn's
            tree searches accept (its brute search does not).
        return_distance : bool, default True
        sort_results : bool, default False
            Each query's neighbours by ascending distance (else by ascending
            index); needs ``return_distance=True``.

        Returns
        -------
        neigh_dist : ndarray of dtype object, shape (n_queries,)
            Only if ``return_distance``. Element ``i`` holds query ``i``'s
            distances.
        neigh_ind : ndarray of dtype object, shape (n_queries,)
            Element ``i`` holds query ``i``'s training indices (int64).

        The containers are NumPy object arrays, as scikit-learn's; their
        elements are arrays of the namespace and device of ``X`` (of the
        training data for ``X=None``): NumPy for NumPy, lists and DataFrames,
        and for CuPy, torch and array_api_strict slices of one flat result
        left on the device (no copy of the neighbours to the host, only of the
        ``n_queries + 1`` offsets, once). :func:`knn_gpu.radius_neighbors`
        returns the flat ``(distances, indices, offsets)`` itself.
        """
        if not isinstance(return_distance, bool) or not isinstance(sort_results, bool):
            msg = f"return_distance and sort_results must be True or False, got {return_distance!r}, {sort_results!r}"
            raise TypeError(msg)
        if sort_results and not return_distance:
            msg = "return_distance must be True if sort_results is True."
            raise ValueError(msg)
        self._check_same_namespace(X, "radius_neighbors")
        distances, indices, offsets, X = self._radius_flat(X, radius, sort_results)
        xp = self._index.xp
        bounds = read_counts(offsets, xp=xp)
        neigh_ind = _per_query(self._like_input(indices, X), bounds)
        if not return_distance:
            return neigh_ind
        return _per_query(self._like_input(distances, X), bounds), neigh_ind

    def radius_neighbors_graph(
        self, X: Any = None, radius: float | None = None, mode: str = "connectivity", sort_results: bool = False
    ) -> Any:
        """Sparse graph of the neighbours within ``radius``: row i lists row i of ``X``'s.

        Parameters
        ----------
        X : array, shape (n_queries, n_features), optional
            ``None``: the training set, each point excluding itself.
        radius : float or array of shape (n_queries,), optional
            Defaults to the constructor's ``radius``; one per query as an array.
        mode : {"connectivity", "distance"}
        sort_results : bool, default False
            In "distance" mode, each row's entries by ascending distance.

        Returns
        -------
        sparse matrix in CSR format, shape (n_queries, n_samples_fit_)
            Built from the flat result without a loop over queries;
            ``cupyx.scipy.sparse.csr_matrix`` on the GPU for CuPy, else
            ``scipy.sparse.csr_matrix`` on the host.
        """
        if mode not in GRAPH_MODES:
            msg = f'Unsupported mode, must be one of "connectivity", or "distance" but got "{mode}" instead'
            raise ValueError(msg)
        self._check_same_namespace(X, "radius_neighbors_graph")
        distance_mode = mode == "distance"
        distances, indices, offsets, _ = self._radius_flat(X, radius, sort_results and distance_mode)
        return csr_from_flat(distances if distance_mode else None, indices, offsets, self.n_samples_fit_)
