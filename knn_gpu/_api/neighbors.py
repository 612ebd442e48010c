"""The functional entry point: ``kneighbors(queries, train, k)``."""

from __future__ import annotations

from typing import Any

import array_api_compat

from .._engine.direct import is_direct
from .._engine.distances import public_distances
from .._engine.index import build_neighbors_index
from .._engine.metrics import PRODUCT_METRICS, check_input_for, resolve
from .._engine.streaming import is_host_array
from .._lib.sparse_input import check_stored_neighbors, fewest_stored_per_row, is_sparse
from .._lib.validation import (
    as_feature_matrix,
    check_batch_size,
    check_dask_features,
    check_feature_count,
    check_memory_budget,
    check_n_jobs,
    check_num_neighbors,
    check_out_of_core,
    check_precomputed_inputs,
    check_same_namespace,
    dtype_in,
    floating_dtype,
    prepare_queries,
)

__all__ = ["kneighbors"]


def kneighbors(
    queries: Any,
    train: Any,
    k: int,
    *,
    metric: Any = "euclidean",
    p: float | None = None,
    metric_params: dict | None = None,
    batch_size: int | None = None,
    n_jobs: int | None = None,
    memory_budget: int | None = None,
    out_of_core: bool | None = None,
) -> tuple[Any, Any]:
    """Exact k nearest training rows of each query.

    Parameters
    ----------
    queries : array, shape (n_queries, n_features)
    train : array, shape (n_samples, n_features)
        From the same array library and on the same device as ``queries``
        (NumPy, CuPy, torch, array_api_strict, ...); or in host memory
        (NumPy, torch on the CPU) while the queries are on a GPU: then the
        training rows stream through the GPU in chunks (out of core).
        Lists are converted with NumPy.
    k : int
        Number of neighbours, ``1 <= k <= n_samples``.
    metric : str, BlockMetric or callable, default "euclidean"
        ``"euclidean"`` (``"l2"``), ``"sqeuclidean"``, ``"cosine"`` and
        ``"inner_product"`` rank through one matrix product.
        ``"inner_product"`` is maximum inner product search (as FAISS's
        ``IndexFlatIP``): the neighbours are the training rows with the
        largest ``q . t``, and the values returned are those inner products.
        ``"minkowski"`` (``(sum |q - t|^p)^(1/p)``, power ``p``),
        ``"manhattan"`` (``"l1"``, ``"cityblock"``: p = 1) and
        ``"chebyshev"`` (``"infinity"``: p = infinity) are computed directly,
        block by block of training rows, in float64 (float32 where the
        device has no float64). ``"precomputed"``: ``train`` is a square
        (n_samples, n_samples) matrix of distances and ``queries`` are
        (n_queries, n_samples) rows of distances to the training samples;
        the search only selects. Dask arrays and out-of-core streaming take
        the four matrix-product metrics only.

        Every other metric of scikit-learn's brute force is computed directly
        too, on the data's device: ``"braycurtis"``, ``"canberra"``,
        ``"correlation"``, ``"hamming"``, ``"nan_euclidean"`` (NaN in the
        input are missing values), ``"seuclidean"`` (``metric_params={"V": ...}``),
        ``"mahalanobis"`` (``{"VI": ...}``), ``"haversine"`` (2 columns:
        latitude, longitude in radians) and the boolean metrics
        (``"jaccard"``, ``"dice"``, ``"rogerstanimoto"``, ``"russellrao"``,
        ``"sokalsneath"``, ``"yule"``; the data are read as ``x != 0``).
        A :class:`knn_gpu.BlockMetric` wraps a vectorised
        ``f(queries_block, train_block) -> distances_block`` run on the data's
        device; a plain callable of two rows (or a
        ``sklearn.metrics.DistanceMetric``) runs on the host, pair by pair
        (slow, as in scikit-learn). Every metric: the guide's Metrics page.

        Sparse input (SciPy, ``cupyx.scipy.sparse``, torch) is densified
        in its own library: missing features
        are 0; with ``"precomputed"`` a sparse matrix is a neighbour graph,
        as in scikit-learn: missing entries are no neighbours, and each query
        row must store at least ``k`` entries.
    p : float, optional
        The Minkowski power for ``metric="minkowski"``: ``p > 0``,
        ``float("inf")`` allowed, ``0 < p < 1`` (a semi-metric) with
        scikit-learn's ``UserWarning`` (the one rule of the functions and
        the estimators); None (the default) is 2, the euclidean
        distance (matrix-product path). Ignored by the other metrics, as
        scikit-learn ignores it.
    metric_params : dict, optional
        The metric's parameters: ``{"V": ...}`` for ``"seuclidean"``,
        ``{"VI": ...}`` for ``"mahalanobis"``, ``{"p": ...}`` for
        ``"minkowski"``; keyword arguments of a callable metric. A parameter
        the metric does not take is a ``ValueError``.
    batch_size : int, optional
        Queries per batch; by default chosen so that all the temporaries of
        the batches in flight stay within ``memory_budget``.
    n_jobs : int, optional
        Threads searching batches side by side on the NumPy backend, each
        with a single-threaded BLAS, so that the selection does not leave
        cores idle. None (the default) uses every available core when the
        search is large enough to gain (at least 512 queries and 2**26
        distances per thread) and one thread otherwise; -1 always uses every
        core; a positive number that many threads. Other libraries manage
        their own parallelism and ignore it; Dask arrays use Dask's workers.
    memory_budget : int, optional
        Bytes the search may allocate for its temporaries (and, out of core,
        for the chunk of training rows on the device). Default: 256 MiB on
        the host, half the free memory of the data's GPU.
    out_of_core : bool, optional
        ``None`` (default): stream when ``train`` is in host memory and the
        queries are on another device. ``True``: stream in any case (chunks
        sized by ``memory_budget``). ``False``: never; ``train`` and
        ``queries`` must then share namespace and device.

    Returns
    -------
    distances : array, shape (n_queries, k)
        Ascending along each row, in the metric's units, in the inputs'
        floating dtype (the result type of the two; integer input: the
        namespace's default float). Half-precision input (float16, torch's
        bfloat16) is stored and searched as given, ranked in float32 and
        re-scored in float64; its distances are float32, as FAISS returns
        them (half-precision distances would overflow above 65504). Out of
        core, the chunks stream in half precision too (half the bytes to
        copy); Dask searches half-precision chunks in float32.
        For ``"inner_product"``: the inner products, *descending* (the
        nearest, i.e. largest, first).
    indices : array of int64, shape (n_queries, k)
        Training row indices; equal distances (inner products) list the
        lower index first.

    Examples
    --------
    >>> import numpy as np
    >>> import knn_gpu
    >>> train = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> distances, indices = knn_gpu.kneighbors(np.array([[0.9, 0.1]]), train, 2)
    >>> indices
    array([[1, 0]])
    >>> np.round(distances, 3)
    array([[0.141, 0.906]])
    >>> knn_gpu.kneighbors(np.array([[1.0, 1.0]]), train, 2, metric="inner_product")
    (array([[2., 1.]]), array([[2, 1]]))
    >>> knn_gpu.kneighbors(np.array([[0.9, 0.1]]), train, 2, metric="manhattan")
    (array([[0.2, 1. ]]), array([[1, 0]]))
    >>> knn_gpu.kneighbors(np.array([[0.9, 0.1]]), train, 2, metric="minkowski", p=float("inf"))[1]
    array([[1, 0]])
    """
    resolved = resolve(metric, p, metric_params)
    engine_metric, p = resolved.name, resolved.p
    batch_size = check_batch_size(batch_size)
    n_jobs = check_n_jobs(n_jobs)
    memory_budget = check_memory_budget(memory_budget)
    out_of_core = check_out_of_core(out_of_core)
    is_dask = array_api_compat.is_dask_array(train) or array_api_compat.is_dask_array(queries)
    if is_dask and is_direct(engine_metric):
        msg = f"metric={metric!r} is not supported for Dask arrays; use one of {', '.join(map(repr, PRODUCT_METRICS))}"
        raise ValueError(msg)
    if is_dask:
        distances, indices = _dask_kneighbors(queries, train, k, engine_metric)
        return public_distances(distances, engine_metric), indices
    precomputed = engine_metric == "precomputed"
    graph = precomputed and is_sparse(queries)
    allow_nan = resolved.entry.allows_nan
    train = as_feature_matrix(train, "train", distances=precomputed, allow_nan=allow_nan)
    queries = as_feature_matrix(queries, "queries", allow_empty=True, distances=precomputed, allow_nan=allow_nan)
    check_input_for(resolved.entry, train, "train")
    check_input_for(resolved.entry, queries, "queries")
    k = check_num_neighbors(k, train.shape[0], name="k")
    if precomputed:
        check_precomputed_inputs(queries, train)
    if graph:
        check_stored_neighbors(fewest_stored_per_row(queries, array_api_compat.array_namespace(queries)), k)
    streams = out_of_core or (out_of_core is None and _streams(queries, train))
    if streams and is_direct(engine_metric):
        msg = (
            f"metric={metric!r} has no out-of-core search (training rows streamed from host memory); "
            f"move train to the queries' device, or use one of {', '.join(map(repr, PRODUCT_METRICS))}"
        )
        raise ValueError(msg)
    if streams:
        xp = array_api_compat.array_namespace(queries)
        device = array_api_compat.device(queries)
        dtype = floating_dtype(xp.result_type(queries.dtype, dtype_in(xp, train.dtype)), xp, device)
        queries = prepare_queries(queries, train.shape[1], dtype, xp=xp, name="queries")
        index = build_neighbors_index(
            train, resolved, stream=True, anchor=queries[:0, ...], dtype=dtype, memory_budget=memory_budget
        )
        distances, indices = index.kneighbors(queries, k, batch_rows=batch_size, n_jobs=n_jobs)
        return public_distances(distances, engine_metric), indices
    xp = check_same_namespace(queries, train, ("queries", "train"))
    device = array_api_compat.device(train)
    if array_api_compat.device(queries) != device:
        msg = f"queries and train must be on the same device, got {array_api_compat.device(queries)} and {device}" + (
            "" if out_of_core is False else " (train is not in host memory, so it cannot stream)"
        )
        raise ValueError(msg)
    dtype = floating_dtype(xp.result_type(queries.dtype, train.dtype), xp, device)
    queries = prepare_queries(queries, train.shape[1], dtype, xp=xp, name="queries")
    # CPU torch tensors are searched by NumPy, on views of them (faster than torch's CPU kernels).
    index = build_neighbors_index(xp.astype(train, dtype, copy=False), resolved, host_views=True)
    distances, indices = index.kneighbors(queries, k, batch_rows=batch_size, n_jobs=n_jobs, memory_budget=memory_budget)
    return public_distances(distances, engine_metric), indices


def _streams(queries: Any, train: Any) -> bool:
    """Stream by default when train is in host memory and the queries are on a device (a GPU).

    Two host arrays of different libraries are a mistake to report, not a
    reason to stream.
    """
    return is_host_array(train) and not is_host_array(queries)


def _dask_kneighbors(queries: Any, train: Any, k: int, metric: str) -> tuple[Any, Any]:
    """Lazy results for Dask arrays: the search per training chunk, merged by a tree."""
    if not array_api_compat.is_dask_array(train):
        msg = "with Dask queries, train must be a Dask array too (chunked along rows)"
        raise TypeError(msg)
    train = check_dask_features(train, "train")
    if array_api_compat.is_dask_array(queries):
        check_dask_features(queries, "queries")
    else:
        queries = as_feature_matrix(queries, "queries")
    check_feature_count(queries, train.shape[1], name="queries", expected_by="train")
    k = check_num_neighbors(k, train.shape[0], name="k")
    return build_neighbors_index(train, metric).kneighbors(queries, k)
