"""Radius search: every training row within ``radius`` of each query, exactly.

This module is the engine of the matrix-product metrics (euclidean,
sqeuclidean, cosine over a :class:`~knn_gpu._engine.search.TrainIndex`); the
directly computed ones (Minkowski with p != 2, precomputed) have theirs in
:mod:`knn_gpu._engine.radius_direct`, which shares this module's final compaction
(:func:`finish_radius_search`) and count reads. ``radius`` is one float, or
an array of one radius per query (:func:`radius_on_device`).

Data flows one way, batch by batch of queries, without a Python loop over
queries:

1. the ranking keys of the batch against every stored row
   (:func:`knn_gpu._engine.search.batch_keys`, the product of the k-search);
2. the candidate mask ``key <= threshold``: the radius turned into key units
   per query, plus a safety margin that covers the rounding of the keys
   (:func:`~knn_gpu._engine.key_bounds.key_thresholds`);
3. the mask's total count, read to the host
   (:func:`~knn_gpu._lib.devices.read_counts`): the one
   synchronisation of a batch, since the number of candidates sizes what
   follows;
4. the candidates' flat positions (:func:`knn_gpu._engine.topk.positions_of_true`,
   a nonzero of known size), hence their queries and training indices,
   ordered by (query, training index);
5. the exact re-scoring of the candidates by direct differences in float64
   (:func:`knn_gpu._engine.distances.exact_distances`), in chunks of a bounded size;
   a candidate is kept where its exact distance is ``<= radius``
   (scikit-learn's rule).

After the last batch the kept candidates are compacted batch by batch,
after one read of every batch's kept count, and the offsets come from one
``searchsorted`` of the neighbours' query numbers: no scatter, and no
data-dependent shape but those counts. A search of ``B`` batches therefore
reads to the host ``B + 1`` times, each an explicit copy of a few integers.

Safety margin: :mod:`knn_gpu._engine.key_bounds` (the k-search certifies
its candidates with the same bound).

Memory: a batch's temporaries (its keys, the mask and the running count of
the compaction, per stored row) are counted per query as the k-search counts
its own (:func:`batch_bytes_per_query`), within ``KEYS_SHARE`` of the
budget; the re-scoring runs over chunks of candidates sized to the rest
(:func:`rescore_chunk`). What the budget cannot bound is the result: its
size depends on the data (a radius that includes everything returns
``n_queries * n_samples`` neighbours), and so do the arrays per candidate
(query, training index, exact distance, kept flag: 25 bytes) that each batch
keeps until the final compaction, and the compacted parts and their
concatenation: about 50 bytes per neighbour above the budget at the peak
(tests/test_radius.py allows 64), against the 12 of the float32 result.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.backends import move_to
from .._lib.devices import device_scope, is_gpu, read_counts
from .._lib.validation import (
    check_radius_shape,
)
from .batches import halving_batches
from .distances import DEVICE_EXACT_CHUNK_FEATURES, exact_distances
from .key_bounds import key_thresholds
from .search import (
    HOST_MAX_BATCH_ROWS,
    TrainIndex,
    batch_fixed_bytes,
    batch_keys,
    default_memory_budget,
    dtype_itemsize,
    keys_bytes_per_query,
)
from .topk import positions_of_true

__all__ = [
    "radius_search_index",
    "batch_bytes_per_query",
    "rescore_chunk",
    "KEYS_SHARE",
]

#: Share of the memory budget for a batch's keys, mask and running count; the
#: rest bounds a chunk of the exact re-scoring.
KEYS_SHARE = 0.75


def batch_bytes_per_query(index: TrainIndex) -> int:
    """Bytes of a batch's temporaries per query (an upper estimate).

    Its keys and augmented row (:func:`knn_gpu._engine.search.keys_bytes_per_query`),
    the candidate mask (one byte per stored row) and, but on NumPy (whose
    compaction is ``flatnonzero``), the compaction's count and running count
    (int64 at most), plus a few exact values per query for the thresholds.
    """
    compaction = 0 if array_api_compat.is_numpy_namespace(index.xp) else 2 * 8
    thresholds = 8 * dtype_itemsize(index.xp, index.exact) * (index.num_features + 8)
    return keys_bytes_per_query(index) + index.num_stored * (1 + compaction) + thresholds


def rescore_bytes_per_candidate(index: TrainIndex) -> int:
    """Bytes of the exact re-scoring per candidate of a chunk (an upper estimate).

    The gathered row (from the rows as given, counted as a stored row and
    its exact-dtype copy: an upper bound), the query repeated for it, cast to the exact dtype and
    shifted, and on a device the re-scoring's step temporaries (on the host
    those are a fixed few MiB per step); the chunk's distances and masks.
    """
    xp = index.xp
    exact_size = dtype_itemsize(xp, index.exact)
    features = index.num_features
    gathered = index.rows.shape[1] * dtype_itemsize(xp, index.rows.dtype) + features * exact_size
    queries = features * (dtype_itemsize(xp, index.data_dtype) + 2 * exact_size)
    steps = 3 * min(features, DEVICE_EXACT_CHUNK_FEATURES) * exact_size if is_gpu(xp, index.device) else 0
    return gathered + queries + steps + 4 * 8


def rescore_chunk(index: TrainIndex, memory_budget: int) -> int:
    """Candidates re-scored at once: what ``1 - KEYS_SHARE`` of the budget holds (at least 1)."""
    share = int(memory_budget * (1 - KEYS_SHARE))
    return max(1, share // rescore_bytes_per_candidate(index))


def radius_batch_rows(index: TrainIndex, num_queries: int, memory_budget: int) -> int:
    """Queries per batch: ``KEYS_SHARE`` of the budget, less the fixed temporaries, over :func:`batch_bytes_per_query`.

    NumPy batches hold at most :data:`knn_gpu._engine.search.HOST_MAX_BATCH_ROWS`
    queries (the keys stay in the caches between the product and the mask).
    """
    share = int(memory_budget * KEYS_SHARE) - batch_fixed_bytes(index)
    rows = max(1, share // batch_bytes_per_query(index))
    if array_api_compat.is_numpy_namespace(index.xp):
        rows = min(rows, HOST_MAX_BATCH_ROWS)
    return max(1, min(rows, num_queries))


def radius_search_index(
    index: TrainIndex,
    queries: Any,
    radius: Any,
    *,
    sort_results: bool = False,
    batch_rows: int | None = None,
    memory_budget: int | None = None,
    train: Any = None,
    distance_dtype: Any = None,
) -> tuple[Any, Any, Any]:
    """Every stored row within ``radius`` of each query, as flat arrays and offsets.

    Parameters
    ----------
    index : TrainIndex
        Of a metric other than ``"inner_product"``.
    queries : array, shape (n_queries, n_features)
        Validated, in the index's namespace, device and (data) dtype.
    radius : float or array, shape (n_queries,)
        Checked by :func:`~knn_gpu._lib.validation.check_radius`: ``>= 0``,
        infinity allowed; an array holds one radius per query (any
        namespace: moved to the index's device once).
    sort_results : bool
        Order each query's neighbours by (distance, index) instead of index.
    batch_rows : int, optional
        Queries per batch; by default from the memory budget.
    memory_budget : int, optional
        Bytes for the temporaries of a batch (not the result, see the module
        notes); the k-search's default when None.
    train : array, shape (n_samples, n_features), optional
        The training rows the index was built from, in the data dtype: the
        candidates are re-scored from them (a gather, no copy of the set),
        which keeps cosine distances exact in float64 (the index stores unit
        rows rounded to the data dtype, so that orthogonal integer vectors
        would no longer be exactly at distance 1). Without it, from the
        index's stored rows, as the k-search does.
    distance_dtype : dtype, optional
        Of the returned distances; ``index.distance_dtype`` by default (the
        out-of-core search keeps the exact dtype until its final sort).

    Returns
    -------
    distances : array, shape (n_neighbours,), ``distance_dtype``
    indices : array of int64, shape (n_neighbours,)
    offsets : array of int64, shape (n_queries + 1,)
        Query ``i``'s neighbours are ``indices[offsets[i]:offsets[i + 1]]``.
    """
    xp = index.xp
    device = index.device
    with device_scope(xp, device):
        num_queries = queries.shape[0]
        if memory_budget is None:
            memory_budget = default_memory_budget(xp, device)
        if distance_dtype is None:
            distance_dtype = index.distance_dtype
        if num_queries == 0:
            return empty_radius_result(distance_dtype, xp=xp, device=device)
        radius = radius_on_device(radius, num_queries, xp=xp, device=device, dtype=index.exact)
        if batch_rows is None:
            batch_rows = radius_batch_rows(index, num_queries, memory_budget)
        chunk = rescore_chunk(index, memory_budget)
        # Fine block of each block-layout column: the inverse of the blocks' positions.
        block_of_position = xp.argsort(index.block_position)
        # One keys block reused by every batch (NumPy, CuPy), made at the first batch's size and
        # again at the halved size after a batch ran out of device memory.
        reuse_keys = array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)
        keys_buffer = None

        def search_rows(start: int, stop: int) -> tuple:
            nonlocal keys_buffer
            out = None
            if reuse_keys:
                if keys_buffer is None or keys_buffer.shape[0] < stop - start:
                    keys_buffer = None
                    keys_buffer = xp.empty((stop - start, index.num_stored), dtype=index.rank_dtype, device=device)
                out = keys_buffer[: stop - start, ...]
            return _radius_batch(
                index,
                queries[start:stop, ...],
                start,
                batch_radius(radius, start, stop),
                block_of_position,
                chunk,
                train,
                keys_out=out,
            )

        def drop_keys() -> None:
            nonlocal keys_buffer
            keys_buffer = None

        # A batch out of device memory is searched in halves: more, smaller parts, in query order.
        parts = [
            part
            for _, part in halving_batches(
                search_rows,
                range(0, num_queries, batch_rows),
                batch_rows,
                num_queries,
                xp=xp,
                device=device,
                memory_budget=memory_budget,
                on_failure=drop_keys,
            )
        ]
        drop_keys()
        return finish_radius_search(parts, num_queries, sort_results=sort_results, distance_dtype=distance_dtype)


def query_numbers(offsets: Any, num_neighbors: int, *, xp: ModuleType) -> Any:
    """The query of each flat neighbour (int64, shape (num_neighbors,)), from the offsets."""
    positions = xp.arange(num_neighbors, dtype=offsets.dtype, device=array_api_compat.device(offsets))
    return xp.astype(xp.searchsorted(offsets[1:], positions, side="right"), xp.int64)


def empty_radius_result(distance_dtype: Any, *, xp: ModuleType, device: Any) -> tuple[Any, Any, Any]:
    """The result of a search without queries: no neighbours, offsets ``[0]``."""
    return (
        xp.zeros(0, dtype=distance_dtype, device=device),
        xp.zeros(0, dtype=xp.int64, device=device),
        xp.zeros(1, dtype=xp.int64, device=device),
    )


def finish_radius_search(
    parts: list[tuple[Any, Any, Any, Any]],
    num_queries: int,
    *,
    sort_results: bool,
    distance_dtype: Any,
    distances_of: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any, Any]:
    """The common tail of every radius engine: the batches' candidates to the flat result.

    Parameters
    ----------
    parts : list of (query number, training index, distance, kept) per batch
        Each a 1-D array over the batch's candidates, ordered by (query,
        training index), the batches in query order; ``kept`` (bool) marks
        the neighbours, None where every candidate is one (nothing to
        compact, nothing to read). The list is emptied.
    num_queries : int
    sort_results : bool
        Order each query's neighbours by (distance, index) instead of index.
    distance_dtype : dtype
        Of the returned distances.
    distances_of : callable, optional
        Turns the parts' values into distances, after the sort: the direct
        engine sorts its keys ``sum |d|^p`` and takes the root of the result
        (a vectorised ``pow`` may round equal keys apart).

    Returns
    -------
    distances, indices (int64), offsets (int64, shape (num_queries + 1,))

    Notes
    -----
    One read of every batch's kept count (none if no part has a ``kept``), then a compaction per batch
    (dropped as soon as compacted, so the peak is not doubled by the
    concatenation) and the offsets from one ``searchsorted`` of the
    neighbours' query numbers.
    """
    xp = array_api_compat.array_namespace(parts[0][0])
    device = array_api_compat.device(parts[0][0])
    filtered = [number for number, part in enumerate(parts) if part[3] is not None]
    kept_counts = (
        read_counts(xp.stack([xp.count_nonzero(parts[number][3]) for number in filtered]), xp=xp) if filtered else []
    )
    for number, count in zip(filtered, kept_counts):
        query_of, indices, distances, kept = parts[number]
        if count < kept.shape[0]:
            positions = positions_of_true(kept, count, xp=xp)
            query_of, indices, distances = (xp.take(values, positions) for values in (query_of, indices, distances))
        parts[number] = (query_of, indices, distances, None)
    query_of, indices, distances = (
        part[0] if len(parts) == 1 else xp.concat(part, axis=0) for part in list(zip(*parts))[:3]
    )
    parts.clear()
    if sort_results:
        # Stable sorts: by distance, then by query; equal distances keep ascending index.
        by_distance = xp.argsort(distances, stable=True)
        order = xp.take(by_distance, xp.argsort(xp.take(query_of, by_distance), stable=True))
        indices = xp.take(indices, order)
        distances = xp.take(distances, order)
    if distances_of is not None:
        distances = distances_of(distances)
    boundaries = xp.arange(num_queries + 1, dtype=xp.int64, device=device)
    offsets = xp.astype(xp.searchsorted(query_of, boundaries, side="left"), xp.int64)
    return xp.astype(distances, distance_dtype), xp.astype(indices, xp.int64, copy=False), offsets


def radius_on_device(radius: Any, num_queries: int, *, xp: ModuleType, device: Any, dtype: Any) -> Any:
    """A radius checked by :func:`~knn_gpu._lib.validation.check_radius` as the engines take it.

    A float stays a float; an array (of any namespace, e.g. NumPy radii for
    device queries: moved once; its values already checked) must have shape
    ``(num_queries,)`` and comes back in ``xp``, on ``device``, in ``dtype``
    (the exact dtype).
    """
    if isinstance(radius, float):
        return radius
    check_radius_shape(radius, num_queries)
    return xp.astype(move_to(radius, xp, device), dtype, copy=False)


def batch_radius(radius: Any, start: int, stop: int) -> Any:
    """The radius of queries ``start:stop``: the float itself, or their slice of the per-query array."""
    return radius if isinstance(radius, float) else radius[start:stop]


def candidate_radius(radius: Any, query_of: Any, *, xp: ModuleType) -> Any:
    """The radius of each candidate (``query_of``: its query within the batch): the float, or a gather."""
    return radius if isinstance(radius, float) else xp.take(radius, query_of)


def _radius_batch(
    index: TrainIndex,
    queries: Any,
    start: int,
    radius: Any,
    block_of_position: Any,
    chunk: int,
    train_rows: Any,
    keys_out: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """One batch's candidates: ``(query number, training index, exact distance, kept)``, by (query, index)."""
    xp = index.xp
    num_stored = index.num_stored
    num_fine = index.num_fine_blocks
    keys = batch_keys(index, queries, keys_out=keys_out)
    mask = keys <= key_thresholds(index, queries, radius)
    del keys
    (count,) = read_counts(xp.count_nonzero(mask), xp=xp)  # the batch's one synchronisation
    positions = positions_of_true(mask, count, xp=xp)
    del mask
    query_of = positions // num_stored
    stored = positions % num_stored
    # Stored row i * B0 + position[b] holds training row b * S0 + i (see knn_gpu._engine.search).
    train = xp.take(block_of_position, stored % num_fine) * index.fine_block_size + stored // num_fine
    order = xp.argsort(query_of * num_stored + train)
    query_of = xp.take(query_of, order)
    stored = xp.take(stored, order)
    train = xp.take(train, order)
    distances = _rescore(index, queries, query_of, stored, train, chunk, train_rows)
    real = train < index.num_samples  # padding rows pass only a threshold at the rank dtype's maximum
    kept = (distances <= candidate_radius(radius, query_of, xp=xp)) & real
    return query_of + start, train, distances, kept


def _rescore(
    index: TrainIndex, queries: Any, query_of: Any, stored: Any, train: Any, chunk: int, train_rows: Any
) -> Any:
    """Exact distances of the candidates (shape (count,), exact dtype), ``chunk`` candidates at a time.

    From ``train_rows`` (unshifted) where given, else from the index's rows
    as given (``exact_rows``), else (half precision) its stored rows.
    """
    xp = index.xp
    count = query_of.shape[0]
    num_features = index.num_features
    if count == 0:
        return xp.zeros(0, dtype=index.exact, device=index.device)
    source = train_rows if train_rows is not None else index.exact_rows
    offset = index.offset if source is None else None
    pieces = []
    for begin in range(0, count, chunk):
        end = min(begin + chunk, count)
        if source is not None:
            within = xp.minimum(train[begin:end], index.num_samples - 1)  # padding rows: any real row
            rows = xp.take(source, within, axis=0)
        else:
            rows = xp.take(index.rows, stored[begin:end], axis=0)[:, :num_features]
        candidate_queries = xp.take(queries, query_of[begin:end], axis=0)
        distances = exact_distances(candidate_queries, rows[:, None, :], index.metric, offset, xp=xp, exact=index.exact)
        pieces.append(distances[:, 0])
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)
