"""Distances: the matrix-product form for ranking, direct differences for values.

Ranking uses one matrix product per batch of queries. Each training row is
stored *augmented* with one extra column, and each query row likewise, so
that the product alone yields the ranking key:

* euclidean and sqeuclidean: ``[t, ||t||^2] . [-2 q, 1] = ||t||^2 - 2 q.t``,
  which is ``||q - t||^2`` less ``||q||^2`` (the same for every training row,
  so it does not change the order and is never computed);
* cosine: ``[t / ||t||, 0] . [-q, 1] = -q.t / ||t||``, which orders rows as
  ``1 - cos(q, t)`` does (zero vectors get similarity 0, as in scikit-learn).

Padding rows carry the largest finite value in the extra column, so they rank
last (an infinity would make BLAS raise floating-point flags on its own
zero padding).

The expansion loses precision in float32 far from the origin, so the training
data is first shifted by its mean rounded to whole numbers (exact for integer
data, and exact by Sterbenz's lemma for points clustered far from the
origin). The few selected candidates then get their distances recomputed by
direct differences in float64 (where the device has it), which is what the
search returns and orders by.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

__all__ = [
    "augment_train",
    "augment_queries",
    "ranking_keys",
    "exact_distances",
]


def augment_train(train: Any, metric: str, *, xp: ModuleType, exact: Any) -> tuple[Any, Any]:
    """Training rows prepared for the ranking product.

    Parameters
    ----------
    train : array, shape (n_samples, n_features), floating
    metric : {"euclidean", "sqeuclidean", "cosine"}
    xp : namespace
    exact : dtype
        The dtype used for the shift (float64 where available).

    Returns
    -------
    rows : array, shape (n_samples, n_features + 1), dtype of ``train``
    offset : array, shape (n_features,)
        The shift subtracted from every row (zeros for cosine).
    """
    dtype = train.dtype
    if metric == "cosine":
        offset = xp.zeros(train.shape[1], dtype=dtype, device=array_api_compat.device(train))
        norms = xp.linalg.vector_norm(train, axis=1, keepdims=True)
        unit = train / xp.where(norms == 0, xp.ones_like(norms), norms)
        return xp.concat([unit, xp.zeros_like(norms)], axis=1), offset
    offset = xp.astype(xp.round(xp.mean(xp.astype(train, exact), axis=0)), dtype)
    centred = train - offset
    sq_norms = xp.sum(centred * centred, axis=1, keepdims=True)
    return xp.concat([centred, sq_norms], axis=1), offset


def augment_queries(queries: Any, metric: str, offset: Any, *, xp: ModuleType) -> Any:
    """Query rows prepared for the ranking product (see the module notes)."""
    ones = xp.ones((queries.shape[0], 1), dtype=queries.dtype, device=array_api_compat.device(queries))
    if metric == "cosine":
        return xp.concat([-queries, ones], axis=1)
    return xp.concat([-2 * (queries - offset), ones], axis=1)


def ranking_keys(query_rows: Any, train_rows: Any, *, xp: ModuleType, out: Any = None) -> Any:
    """Keys whose order per row is the order of distances: one matrix product.

    ``out`` (NumPy and CuPy only) reuses one buffer across batches, which
    spares the allocator and the page faults of a fresh block per batch.
    """
    if out is not None:
        if array_api_compat.is_cupy_namespace(xp):
            import cupy as native
        else:
            import numpy as native
        return native.matmul(query_rows, train_rows.T, out=out)
    return xp.matmul(query_rows, xp.matrix_transpose(train_rows))


def exact_distances(
    queries: Any,
    candidates: Any,
    metric: str,
    offset: Any,
    *,
    xp: ModuleType,
    exact: Any,
) -> Any:
    """Distances from each query to its candidate rows, by direct differences.

    Parameters
    ----------
    queries : array, shape (rows, n_features)
        Raw (unshifted) queries.
    candidates : array, shape (rows, num_candidates, n_features)
        Stored training rows (shifted for the Euclidean metrics, unit length
        for cosine), without the augmented column.
    metric : str
    offset : array, shape (n_features,)
    xp : namespace
    exact : dtype
        Precision of the computation.

    Returns
    -------
    array, shape (rows, num_candidates), dtype ``exact``
        In the metric's own units: never negative, never NaN.
    """
    queries = xp.astype(queries, exact)
    candidates = xp.astype(candidates, exact)
    if metric == "cosine":
        query_norms = xp.linalg.vector_norm(queries, axis=1, keepdims=True)
        unit_queries = queries / xp.where(query_norms == 0, xp.ones_like(query_norms), query_norms)
        candidate_norms = xp.linalg.vector_norm(candidates, axis=2)
        dots = xp.sum(unit_queries[:, None, :] * candidates, axis=2)
        safe_norms = xp.where(candidate_norms == 0, xp.ones_like(candidate_norms), candidate_norms)
        return xp.clip(1 - dots / safe_norms, 0.0, 2.0)
    differences = (queries - xp.astype(offset, exact))[:, None, :] - candidates
    squared = xp.sum(differences * differences, axis=2)
    if metric == "euclidean":
        return xp.sqrt(squared)
    return squared
