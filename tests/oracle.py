"""An exact float64 oracle written plainly: direct differences, full sort.

Nothing here calls knn_gpu. Ties are ordered by training index (a stable
sort of distances computed in float64 from the raw data). For
``"inner_product"`` the "distance" is the negated inner product ``-q.t``, so
that the same ascending sort puts the largest inner product first; the public
functions return ``q.t`` itself (see :func:`oracle_inner_products`).
"""

from __future__ import annotations

import numpy as np

#: Minkowski powers of the named direct metrics.
MINKOWSKI_NAMES = {"manhattan": 1.0, "l1": 1.0, "cityblock": 1.0, "chebyshev": np.inf, "infinity": np.inf}


def oracle_minkowski(queries: np.ndarray, train: np.ndarray, p: float) -> np.ndarray:
    """(sum_f |q_f - t_f|^p)^(1/p), feature by feature in float64 (p = inf: the largest |q_f - t_f|)."""
    queries = np.asarray(queries, dtype=np.float64)
    train = np.asarray(train, dtype=np.float64)
    total = np.zeros((queries.shape[0], train.shape[0]))
    for feature in range(queries.shape[1]):
        difference = np.abs(queries[:, feature][:, None] - train[:, feature][None, :])
        total = np.maximum(total, difference) if np.isinf(p) else total + difference**p
    return total if p == 1 or np.isinf(p) else total ** (1.0 / p)


def oracle_distances(queries: np.ndarray, train: np.ndarray, metric: str = "euclidean", p: float = 2.0) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float64)
    train = np.asarray(train, dtype=np.float64)
    if metric == "precomputed":
        return queries
    if metric in MINKOWSKI_NAMES:
        return oracle_minkowski(queries, train, MINKOWSKI_NAMES[metric])
    if metric == "minkowski" and p != 2:
        return oracle_minkowski(queries, train, p)
    if metric in ("l2", "minkowski"):
        metric = "euclidean"
    if metric == "inner_product":
        return -(queries @ train.T)
    if metric == "cosine":
        dots = np.einsum("qf,tf->qt", queries, train)
        norms = np.linalg.norm(queries, axis=1)[:, None] * np.linalg.norm(train, axis=1)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(norms == 0, 0.0, dots / np.where(norms == 0, 1.0, norms))
        return np.clip(1.0 - similarity, 0.0, 2.0)
    squared = np.zeros((queries.shape[0], train.shape[0]))
    for feature in range(queries.shape[1]):
        difference = queries[:, feature][:, None] - train[:, feature][None, :]
        squared += difference * difference
    return np.sqrt(squared) if metric == "euclidean" else squared


def oracle_kneighbors(queries, train, k, metric="euclidean", p=2.0):
    """(distances, indices), shape (n_queries, k): ascending, ties by lower index."""
    distances = oracle_distances(queries, train, metric, p)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def oracle_inner_products(queries, train, k):
    """(inner products, indices), shape (n_queries, k): largest first, ties by lower index."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(train, dtype=np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def unambiguous_rows(queries, train, k, metric="euclidean", gap=1e-9):
    """Rows whose k-th and (k+1)-th distances differ: any correct method agrees there."""
    distances = np.sort(oracle_distances(queries, train, metric), axis=1)
    if k >= distances.shape[1]:
        return np.ones(distances.shape[0], dtype=bool)
    return distances[:, k] - distances[:, k - 1] > gap * np.maximum(1.0, distances[:, k])
