"""The classic "KNN from scratch" scenario, as built-in data."""

from __future__ import annotations

import numpy as np

__all__ = ["tutorial_data", "TUTORIAL_QUERY_VALUES"]

#: Each tutorial query has all 10 features equal to one of these values.
TUTORIAL_QUERY_VALUES = (1.0, 2.0, 4.0, 5.0)


def tutorial_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two Gaussian classes in 10 dimensions and four probe queries.

    30 rows drawn from N(1, 3^2) with label 0 and 20 rows from N(5, 3^2)
    with label 1; the queries have every feature equal to 1, 2, 4 and 5.

    Returns
    -------
    X : ndarray, shape (50, 10), float64
    y : ndarray, shape (50,), float64
    queries : ndarray, shape (4, 10), float64
    """
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(1.0, 3.0, size=(30, 10)), rng.normal(5.0, 3.0, size=(20, 10))])
    y = np.concatenate([np.zeros(30), np.ones(20)])
    queries = np.repeat(np.asarray(TUTORIAL_QUERY_VALUES)[:, None], 10, axis=1)
    return X, y, queries
