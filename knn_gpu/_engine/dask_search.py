"""Scale-out: the same search on every chunk of a Dask array, merged by a tree.

Each training chunk (NumPy or CuPy) is searched with the single-machine
search for each block of queries, giving k candidates per query with *global*
training indices; ``dask.array.reduction`` then merges candidate lists pairwise
up a tree, keeping the k best, as FAISS merges shards and ``dask.array.topk``
reduces. Only ``(n_queries, k)``-sized pieces ever move; no task holds
``n_queries x n_train``.

Candidates travel as one float64 array per block: ``k`` distances, ``k``
indices (exact in float64 below 2**53) and, for the estimators, ``k`` rows of
each neighbour's payload (targets or class codes), so that predictions never
gather the training set.

Importing knn_gpu never imports Dask; this module is imported only when a
Dask array is passed.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .._lib.backends import convert_like
from .merge import merge_neighbor_lists
from .search import build_index, search_index

__all__ = ["dask_kneighbors", "dask_reduce_neighbors", "encode_labels"]

#: Index given to padding candidates of chunks with fewer than k rows.
_PADDING_INDEX = 2.0**52


def _chunk_candidates(queries, train, payload, chunk_offset, *, k, metric, dtype_name):
    """k candidates per query from one training chunk: [distances | indices | payload]."""
    xp = array_api_compat.array_namespace(train)
    dtype = getattr(xp, dtype_name)
    queries = convert_like(queries, train)  # e.g. host queries against CuPy chunks
    payload = convert_like(payload, train)
    queries = xp.astype(queries, dtype)
    train = xp.astype(train, dtype)
    rows = queries.shape[0]
    chunk_k = min(k, train.shape[0])
    index = build_index(train, metric, xp=xp)
    # Dask owns the parallelism here: one thread per chunk task.
    distances, indices = search_index(index, queries, chunk_k, n_jobs=1)
    float64 = xp.float64
    distances = xp.astype(distances, float64)
    neighbor_payload = xp.reshape(
        xp.take(xp.astype(payload, float64), xp.reshape(indices, (-1,)), axis=0),
        (rows, chunk_k * payload.shape[1]),
    )
    # chunk_offset is a host array built from the chunk sizes: float() reads no device.
    indices = xp.astype(indices, float64) + float(chunk_offset[0])
    if chunk_k < k:
        missing = k - chunk_k
        device = array_api_compat.device(distances)
        distances = xp.concat([distances, xp.full((rows, missing), xp.inf, dtype=float64, device=device)], axis=1)
        indices = xp.concat([indices, xp.full((rows, missing), _PADDING_INDEX, dtype=float64, device=device)], axis=1)
        neighbor_payload = xp.concat(
            [neighbor_payload, xp.zeros((rows, missing * payload.shape[1]), dtype=float64, device=device)], axis=1
        )
    return xp.concat([distances, indices, neighbor_payload], axis=1)


def _merge_candidates(candidates, axis=None, keepdims=None, *, k, payload_width):
    """Keep the k best of concatenated packed candidate lists (the rule of :mod:`knn_gpu._engine.merge`)."""
    xp = array_api_compat.array_namespace(candidates)
    rows = candidates.shape[0]
    group = k * (2 + payload_width)
    groups = candidates.shape[1] // group
    blocks = xp.reshape(candidates, (rows, groups, group))
    # Lists are in chunk order (ascending global indices), each sorted by (distance, index).
    distances, indices, payload = merge_neighbor_lists(
        xp.reshape(blocks[:, :, :k], (rows, groups * k)),
        xp.reshape(blocks[:, :, k : 2 * k], (rows, groups * k)),
        k,
        xp=xp,
        payload=xp.reshape(blocks[:, :, 2 * k :], (rows, groups * k, payload_width)),
    )
    return xp.concat([distances, indices, xp.reshape(payload, (rows, k * payload_width))], axis=1)


def dask_neighbor_candidates(queries, train, k, *, metric, dtype_name, payload=None):
    """Lazy ``(n_queries, k * (2 + payload_width))`` float64 array of the k best candidates.

    Parameters
    ----------
    queries : dask array or array, shape (n_queries, n_features)
    train : dask array, shape (n_samples, n_features), chunked along rows
    k : int
    metric : str
    dtype_name : str
        ``"float32"`` or ``"float64"``: the search's working precision.
    payload : dask array, shape (n_samples, width), optional
        Per-row values carried with each neighbour (targets, class codes).
    """
    import dask.array as da

    train = train.rechunk({1: -1})
    if not isinstance(queries, da.Array):
        queries = da.from_array(queries, chunks=(max(1, min(queries.shape[0], 4096)), -1))
    queries = queries.rechunk({1: -1})
    if payload is None:
        payload = da.zeros((train.shape[0], 1), chunks=(train.chunks[0], 1), dtype="float64")
    payload = payload.rechunk((train.chunks[0], -1))
    payload_width = payload.shape[1]
    group = k * (2 + payload_width)
    starts = np.cumsum((0,) + train.chunks[0][:-1]).astype(np.int64)
    chunk_offsets = da.from_array(starts, chunks=1)
    per_chunk = da.blockwise(
        _chunk_candidates,
        "qt",
        queries,
        "qf",
        train,
        "tf",
        payload,
        "tp",
        chunk_offsets,
        "t",
        adjust_chunks={"t": group},
        align_arrays=False,
        concatenate=True,
        dtype="float64",
        meta=train._meta.astype("float64"),
        k=k,
        metric=metric,
        dtype_name=dtype_name,
    )
    merge = _merge_function(k, payload_width)
    return da.reduction(
        per_chunk,
        chunk=_identity,
        combine=merge,
        aggregate=merge,
        axis=1,
        keepdims=True,
        concatenate=True,
        output_size=group,
        dtype="float64",
        meta=per_chunk._meta,
    )


def _identity(x, axis=None, keepdims=None):
    return x


class _merge_function:
    """Picklable merge with its parameters bound."""

    def __init__(self, k: int, payload_width: int) -> None:
        self.k, self.payload_width = k, payload_width

    def __call__(self, candidates, axis=None, keepdims=None):
        return _merge_candidates(candidates, k=self.k, payload_width=self.payload_width)


def dask_kneighbors(queries, train, k, *, metric, dtype_name):
    """``kneighbors`` for Dask arrays: lazy ``(distances, indices)``, the search's own distances.

    For ``"inner_product"`` they are the negated inner products, ascending;
    :func:`knn_gpu.kneighbors` flips them with
    :func:`knn_gpu._engine.distances.public_distances`.
    """
    candidates = dask_neighbor_candidates(queries, train, k, metric=metric, dtype_name=dtype_name)
    return candidates[:, :k].astype(dtype_name), candidates[:, k : 2 * k].astype("int64")


def working_dtype_name(*arrays: Any) -> str:
    """float32 if every input is float32 or float16, else float64.

    Half-precision chunks are converted to float32 in each task (a chunk-sized
    copy), so the results are float32, as for in-memory half-precision data.
    """
    return "float32" if all(str(array.dtype) in ("float32", "float16") for array in arrays) else "float64"


def _predict_block(candidates, *, k, payload_width, weights, num_classes, metric):
    from .predictions import mean_of_neighbors, neighbor_weights, votes_of_neighbors

    xp = array_api_compat.array_namespace(candidates)
    rows = candidates.shape[0]
    distances = candidates[:, :k]
    payload = xp.reshape(candidates[:, 2 * k :], (rows, k, payload_width))
    neighbor_weight = neighbor_weights(distances, weights, xp=xp, metric=metric)
    if num_classes is None:
        return mean_of_neighbors(payload, neighbor_weight, xp=xp)
    return votes_of_neighbors(xp.astype(payload[:, :, 0], xp.int64), neighbor_weight, num_classes, xp=xp)


def dask_reduce_neighbors(queries, train, payload, k, *, metric, weights, num_classes=None):
    """Lazy per-query predictions: targets' weighted mean, or vote shares if ``num_classes``.

    ``payload``: the targets (n_samples,) or (n_samples, n_outputs), or the
    class codes (n_samples,), Dask or NumPy; carried as float64.
    """
    import dask.array as da

    payload = da.asarray(payload)
    if payload.ndim == 1:
        payload = da.reshape(payload, (payload.shape[0], 1))
    dtype_name = working_dtype_name(train)
    candidates = dask_neighbor_candidates(queries, train, k, metric=metric, dtype_name=dtype_name, payload=payload)
    width = payload.shape[1] if num_classes is None else num_classes
    return candidates.map_blocks(
        _predict_block,
        k=k,
        payload_width=payload.shape[1],
        weights=weights,
        num_classes=num_classes,
        metric=metric,
        chunks=(candidates.chunks[0], (width,)),
        dtype="float64",
    )


def encode_labels(y: Any) -> tuple[Any, Any]:
    """Sorted classes (small, computed) and lazy int codes, without gathering ``y``."""
    import dask.array as da

    classes = da.unique(y).compute()
    classes_host = classes.get() if hasattr(classes, "get") else classes
    codes = y.map_blocks(_searchsorted_block, classes_host, dtype="float64")
    return classes_host, da.reshape(codes, (y.shape[0], 1)).rechunk((y.chunks[0], 1))


def _searchsorted_block(block, classes):
    xp = array_api_compat.array_namespace(block)
    return xp.astype(xp.searchsorted(xp.asarray(classes), block), xp.float64)
