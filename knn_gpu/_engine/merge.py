"""Merging candidate neighbour lists: one rule for Dask blocks and streamed chunks.

A search split over pieces of the training set (Dask chunks, chunks streamed
from host memory, FAISS's shards) gives each query one candidate list per
piece, each sorted by (distance, index), with global indices. The k best of
their union, under the same ordering contract as a single search (ascending
distance, equal distances -> lower training index), are the first k of one
*stable* sort by distance of the lists concatenated in ascending order of the
pieces' index ranges: among equal distances the concatenation already lists
the lower index first.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["merge_neighbor_lists"]


def merge_neighbor_lists(
    distances: Any, indices: Any, k: int, *, xp: ModuleType, payload: Any = None
) -> tuple[Any, Any, Any]:
    """The ``k`` best of concatenated candidate lists, in the search's order.

    Parameters
    ----------
    distances : array, shape (rows, m)
        Candidate lists side by side, each sorted by (distance, index), in
        ascending order of the index ranges they come from.
    indices : array, shape (rows, m)
        Their global training indices (any numeric dtype).
    k : int
        ``k <= m``.
    xp : namespace
    payload : array, shape (rows, m, width), optional
        Values carried along with each candidate (targets, class codes).

    Returns
    -------
    distances, indices : arrays, shape (rows, k)
    payload : array, shape (rows, k, width), or None

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> distances = xp.asarray([[1.0, 2.0, 1.0, 3.0]])   # lists [1, 2] (rows 0, 1) and [1, 3] (rows 5, 7)
    >>> indices = xp.asarray([[0, 1, 5, 7]])
    >>> merge_neighbor_lists(distances, indices, 3, xp=xp)[1]
    array([[0, 5, 1]])
    """
    order = xp.argsort(distances, axis=1, stable=True)[:, :k]
    best_payload = None
    if payload is not None:
        rows, width = payload.shape[0], payload.shape[2]
        best_payload = xp.take_along_axis(payload, xp.broadcast_to(order[:, :, None], (rows, k, width)), axis=1)
    return xp.take_along_axis(distances, order, axis=1), xp.take_along_axis(indices, order, axis=1), best_payload
