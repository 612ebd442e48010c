"""The functional entry point: ``kneighbors(queries, train, k)``."""

from __future__ import annotations

from typing import Any

import array_api_compat

from .search import build_index, search_index
from .validation import (
    as_feature_matrix,
    check_batch_size,
    check_metric,
    check_n_jobs,
    check_num_neighbors,
    check_same_namespace,
    floating_dtype,
)

__all__ = ["kneighbors", "prepare_queries"]


def prepare_queries(
    queries: Any, num_features: int, dtype: Any, *, xp: Any, name: str = "X", expected_by: str = "train"
) -> Any:
    """Check the feature count of validated queries and cast them to ``dtype``."""
    check_feature_count(queries, num_features, name=name, expected_by=expected_by)
    return xp.astype(queries, dtype, copy=False)


def check_feature_count(queries: Any, num_features: int, *, name: str, expected_by: str) -> None:
    """Raise ``ValueError`` unless ``queries`` has ``num_features`` columns."""
    if queries.shape[1] != num_features:
        msg = f"{name} has {queries.shape[1]} features, but {expected_by} is expecting {num_features} features as input"
        raise ValueError(msg)


def kneighbors(
    queries: Any,
    train: Any,
    k: int,
    *,
    metric: str = "euclidean",
    batch_size: int | None = None,
    n_jobs: int | None = None,
) -> tuple[Any, Any]:
    """Exact k nearest training rows of each query.

    Parameters
    ----------
    queries : array, shape (n_queries, n_features)
    train : array, shape (n_samples, n_features)
        Both from the same array library and on the same device (NumPy,
        CuPy, torch, array_api_strict, ...). Lists are converted with NumPy.
    k : int
        Number of neighbours, ``1 <= k <= n_samples``.
    metric : {"euclidean", "sqeuclidean", "cosine"}
    batch_size : int, optional
        Queries per batch; by default chosen so that one batch's distance
        block stays under 256 MiB (a quarter of free memory on a GPU).
    n_jobs : int, optional
        Threads searching batches side by side on the NumPy backend, each
        with a single-threaded BLAS, so that the selection does not leave
        cores idle. None (the default) uses every available core when the
        search is large enough to gain (at least 512 queries and 2**26
        distances per thread) and one thread otherwise; -1 always uses every
        core; a positive number that many threads. Other libraries manage
        their own parallelism and ignore it; Dask arrays use Dask's workers.

    Returns
    -------
    distances : array, shape (n_queries, k)
        Ascending along each row, in the metric's units, in the inputs'
        floating dtype (integer input: the namespace's default float).
    indices : array of int64, shape (n_queries, k)
        Training row indices; equal distances list the lower index first.

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
    """
    metric = check_metric(metric)
    batch_size = check_batch_size(batch_size)
    n_jobs = check_n_jobs(n_jobs)
    if array_api_compat.is_dask_array(train) or array_api_compat.is_dask_array(queries):
        return _dask_kneighbors(queries, train, k, metric)
    train = as_feature_matrix(train, "train")
    queries = as_feature_matrix(queries, "queries", allow_empty=True)
    xp = check_same_namespace(queries, train, ("queries", "train"))
    k = check_num_neighbors(k, train.shape[0], name="k")
    device = array_api_compat.device(train)
    if array_api_compat.device(queries) != device:
        msg = f"queries and train must be on the same device, got {array_api_compat.device(queries)} and {device}"
        raise ValueError(msg)
    dtype = floating_dtype(xp.result_type(queries.dtype, train.dtype), xp, device)
    queries = prepare_queries(queries, train.shape[1], dtype, xp=xp, name="queries")
    index = build_index(xp.astype(train, dtype, copy=False), metric, xp=xp)
    return search_index(index, queries, k, batch_rows=batch_size, n_jobs=n_jobs)


def _dask_kneighbors(queries: Any, train: Any, k: int, metric: str) -> tuple[Any, Any]:
    """Lazy results for Dask arrays: the search per training chunk, merged by a tree."""
    from .dask_search import check_dask_features, dask_kneighbors, working_dtype_name

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
    return dask_kneighbors(queries, train, k, metric=metric, dtype_name=working_dtype_name(queries, train))
