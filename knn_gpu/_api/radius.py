"""The functional radius search: ``radius_neighbors(queries, train, radius)``.

Checks the inputs, builds the index and hands the search to the engine
(:mod:`knn_gpu._engine.radius_direct` chooses the product or the direct
engine by metric); :func:`to_object_arrays` turns the flat result into
scikit-learn's per-query format.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .._engine.index import build_neighbors_index
from .._engine.metrics import check_input_for, resolve
from .._lib.backends import to_host
from .._lib.validation import (
    as_feature_matrix,
    check_batch_size,
    check_memory_budget,
    check_precomputed_inputs,
    check_radius,
    check_radius_shape,
    check_same_namespace,
    floating_dtype,
    prepare_queries,
)

__all__ = ["radius_neighbors", "to_object_arrays"]


def to_object_arrays(distances: Any, indices: Any, offsets: Any) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's format of a radius search: host object arrays holding one 1-D array per query.

    Parameters
    ----------
    distances, indices : arrays, shape (n_neighbours,)
    offsets : array of int, shape (n_queries + 1,)
        As :func:`knn_gpu.radius_neighbors` returns them, in any namespace.

    Returns
    -------
    distances, indices : numpy arrays of dtype object, shape (n_queries,)
        Element ``i`` is query ``i``'s NumPy array (a view of one host copy).

    Examples
    --------
    >>> import numpy as np
    >>> dist, ind = to_object_arrays(np.array([0.5, 1.0, 0.0]), np.array([2, 0, 1]), np.array([0, 2, 2, 3]))
    >>> [row.tolist() for row in ind]
    [[2, 0], [], [1]]
    """

    host_offsets = to_host(offsets)
    result = []
    for values in (to_host(distances), to_host(indices)):
        per_query = np.empty(host_offsets.shape[0] - 1, dtype=object)
        for query, (begin, end) in enumerate(zip(host_offsets[:-1], host_offsets[1:])):
            per_query[query] = values[begin:end]
        result.append(per_query)
    return result[0], result[1]


def radius_neighbors(
    queries: Any,
    train: Any,
    radius: Any,
    *,
    metric: Any = "euclidean",
    p: float | None = None,
    metric_params: dict | None = None,
    sort_results: bool = False,
    return_distance: bool = True,
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> tuple:
    """Every training row within ``radius`` of each query, exactly.

    A training row is a neighbour of a query where their distance is
    ``<= radius`` (scikit-learn's rule). For ``"euclidean"``,
    ``"sqeuclidean"`` and ``"cosine"`` it is decided on distances recomputed
    exactly (float64 direct differences where the device has float64): the
    float32 ranking product only proposes candidates, with a safety margin
    that covers its rounding. The directly computed
    metrics decide on their exact keys, ``sum |q - t|^p <= radius ** p`` as
    scikit-learn's brute search does.

    Parameters
    ----------
    queries : array, shape (n_queries, n_features)
    train : array, shape (n_samples, n_features)
        From the same array library and on the same device as ``queries``
        (NumPy, CuPy, torch, array_api_strict, ...). Lists are converted
        with NumPy.
    radius : float or array of shape (n_queries,)
        ``>= 0`` (infinity allowed), in the metric's units: a distance for
        every metric but ``"sqeuclidean"`` (a squared distance) and
        ``"cosine"`` (``1 - cos``). An array (any library; a list) gives
        each query its own radius; it is moved to the queries' device once.
    metric : str, BlockMetric or callable, default "euclidean"
        ``"euclidean"`` (``"l2"``), ``"sqeuclidean"``, ``"cosine"``, or the
        directly computed ``"minkowski"`` (power ``p``), ``"manhattan"``
        (``"l1"``, ``"cityblock"``), ``"chebyshev"`` (``"infinity"``) and
        ``"precomputed"`` (``train`` a square matrix of distances, ``queries``
        rows of distances to the training samples), and every other metric
        :func:`knn_gpu.kneighbors` takes (the registry's). ``"inner_product"`` is a
        similarity without a radius in scikit-learn's sense, and is refused.
    p : float, optional
        The Minkowski power for ``metric="minkowski"`` (``> 0``, infinity allowed, ``0 < p < 1`` with a warning, as
        :func:`knn_gpu.kneighbors`; None: 2); ignored by the other metrics.
    metric_params : dict, optional
        The metric's parameters (``V``, ``VI``, ...), as for
        :func:`knn_gpu.kneighbors`.
    sort_results : bool
        List each query's neighbours by ascending (distance, index) instead
        of ascending index. Needs ``return_distance=True``, as in
        scikit-learn.
    return_distance : bool
        Return the distances too (the default).
    batch_size : int, optional
        Queries per batch; by default chosen from ``memory_budget``.
    memory_budget : int, optional
        Bytes for the temporaries of the search (keys, masks, index arrays,
        re-scoring chunks); 256 MiB on the host, half the free memory of the
        data's GPU by default. The result itself, whose size depends on the
        data, is not bounded by it.

    Returns
    -------
    distances : array, shape (n_neighbours,)
        In the inputs' floating dtype (float32 for half-precision input);
        left out when ``return_distance=False``.
    indices : array of int64, shape (n_neighbours,)
        Training row indices.
    offsets : array of int64, shape (n_queries + 1,)
        Query ``i``'s neighbours are ``indices[offsets[i]:offsets[i + 1]]``
        (and their distances ``distances[offsets[i]:offsets[i + 1]]``).

    All three are flat arrays in the queries' namespace and on their device.
    :func:`to_object_arrays` turns them into scikit-learn's format (host
    object arrays, one array per query).

    Notes
    -----
    The number of neighbours depends on the data, so each batch of queries
    reads its number of candidates to the host once, and the search reads
    the total number of neighbours once at the end: on a GPU those are its
    only synchronisations.

    Examples
    --------
    >>> import numpy as np
    >>> import knn_gpu
    >>> train = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> distances, indices, offsets = knn_gpu.radius_neighbors(np.array([[0.0, 0.0], [5.0, 5.0]]), train, 1.0)
    >>> indices, offsets
    (array([0, 1]), array([0, 2, 2]))
    >>> distances
    array([0., 1.])
    >>> knn_gpu.radius_neighbors(np.array([[0.0, 0.0]]), train, 2.0, metric="manhattan")
    (array([0., 1., 2.]), array([0, 1, 2]), array([0, 3]))
    >>> knn_gpu.radius_neighbors(np.array([[0.0, 0.0], [0.0, 0.0]]), train, [0.5, 1.0], return_distance=False)
    (array([0, 0, 1]), array([0, 1, 3]))
    """
    resolved = resolve(metric, p, metric_params)
    engine_metric, p = resolved.name, resolved.p
    if resolved.entry.similarity:
        msg = (
            f"metric={metric!r} has no radius search: it is a similarity, not a distance; "
            "use 'euclidean', 'sqeuclidean', 'cosine' or a directly computed metric"
        )
        raise ValueError(msg)
    radius = check_radius(radius)
    for name, value in (("sort_results", sort_results), ("return_distance", return_distance)):
        if not isinstance(value, bool):
            msg = f"{name} must be True or False, got {value!r}"
            raise TypeError(msg)
    if sort_results and not return_distance:
        msg = "return_distance must be True if sort_results is True"
        raise ValueError(msg)
    batch_size = check_batch_size(batch_size)
    memory_budget = check_memory_budget(memory_budget)
    if array_api_compat.is_dask_array(train) or array_api_compat.is_dask_array(queries):
        msg = "radius_neighbors does not take Dask arrays yet; compute() them, or search chunk by chunk"
        raise TypeError(msg)
    precomputed = engine_metric == "precomputed"
    # A sparse precomputed pair is a neighbour graph: missing entries are no neighbours (infinity).
    allow_nan = resolved.entry.allows_nan
    train = as_feature_matrix(train, "train", distances=precomputed, allow_nan=allow_nan)
    queries = as_feature_matrix(queries, "queries", allow_empty=True, distances=precomputed, allow_nan=allow_nan)
    check_input_for(resolved.entry, train, "train")
    check_input_for(resolved.entry, queries, "queries")
    if precomputed:
        check_precomputed_inputs(queries, train)
    if not isinstance(radius, float):
        check_radius_shape(radius, queries.shape[0])
    xp = check_same_namespace(queries, train, ("queries", "train"))
    device = array_api_compat.device(train)
    if array_api_compat.device(queries) != device:
        msg = f"queries and train must be on the same device, got {array_api_compat.device(queries)} and {device}"
        raise ValueError(msg)
    dtype = floating_dtype(xp.result_type(queries.dtype, train.dtype), xp, device)
    queries = prepare_queries(queries, train.shape[1], dtype, xp=xp, name="queries")
    train = xp.astype(train, dtype, copy=False)
    index = build_neighbors_index(train, resolved, host_views=True)  # CPU tensors: NumPy on views of them
    distances, indices, offsets = index.radius(
        queries, radius, sort_results=sort_results, batch_rows=batch_size, memory_budget=memory_budget
    )
    return (distances, indices, offsets) if return_distance else (indices, offsets)
