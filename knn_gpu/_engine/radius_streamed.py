"""Radius search on a model fitted out of core: training rows streamed through the device in chunks.

Each chunk of host rows (:class:`~knn_gpu._engine.streaming.StreamedTrain`) is copied
to the queries' device once, indexed, and searched for every query by the
in-memory radius engine of its metric (:func:`knn_gpu._engine.radius_direct.radius_search`),
its distances kept in the exact dtype; its training indices are offset by the
chunk's start. As the chunks are consecutive and each chunk's neighbours are
in (query, index) order, one stable sort by query puts all of them in
(query, index) order; the tail shared by the engines
(:func:`knn_gpu._engine.radius.finish_radius_search`) orders them by distance for
``sort_results`` and gives the offsets.

Synchronisations: each chunk's search reads ``B + 1`` counts for its ``B``
batches; nothing more is read at the end. Device memory: the chunks (the
next chunk being copied, this chunk's stored rows and the copies made
building them) take half the budget, the chunk's search the other half, as
in :func:`knn_gpu._engine.streaming.streamed_search` (whose copies overlap the
search and whose chunks are halved when the device runs out of memory, alike);
the neighbours found so far, as every radius result, are not bounded by it.
"""

from __future__ import annotations

from typing import Any

from .._lib.devices import device_scope
from .._lib.validation import distance_dtype_for, exact_dtype
from .batches import halving_batches
from .budget import dtype_itemsize
from .radius import empty_radius_result, finish_radius_search, query_numbers, radius_on_device
from .radius_direct import radius_search
from .search import build_index
from .streaming import StreamedTrain, chunk_rows_for, chunk_uploader, stream_budget

__all__ = ["radius_search_streamed"]


def radius_search_streamed(
    train: StreamedTrain,
    queries: Any,
    radius: Any,
    *,
    sort_results: bool = False,
    batch_rows: int | None = None,
) -> tuple[Any, Any, Any]:
    """Every training row within ``radius`` of each query, the rows streamed from host memory chunk by chunk.

    Parameters
    ----------
    train : StreamedTrain
        Any metric with a radius search but ``"precomputed"`` (whose query
        rows would have to be cut by chunk).
    queries : array, shape (n_queries, n_features)
        Validated, on ``train.device`` in ``train.dtype``.
    radius : float or array, shape (n_queries,)
        Checked by :func:`~knn_gpu._lib.validation.check_radius`.
    sort_results : bool
        Order each query's neighbours by (distance, index) instead of index.
    batch_rows : int, optional
        Queries per batch of each chunk's search.

    Returns
    -------
    distances, indices (int64), offsets (int64, shape (n_queries + 1,))
        As :func:`knn_gpu._engine.radius.radius_search_index`, with the indices of
        the whole training set.
    """
    if train.metric == "precomputed":
        msg = "metric='precomputed' has no out-of-core search; keep the distance matrix in memory (out_of_core=False)"
        raise ValueError(msg)
    xp, device = train.xp, train.device
    with device_scope(xp, device):
        num_queries = queries.shape[0]
        distance_dtype = distance_dtype_for(train.dtype, xp)
        if num_queries == 0:
            return empty_radius_result(distance_dtype, xp=xp, device=device)
        exact = exact_dtype(xp, device)
        radius = radius_on_device(radius, num_queries, xp=xp, device=device, dtype=exact)
        budget = stream_budget(train.memory_budget, xp, device)
        chunk_rows = train.chunk_rows or chunk_rows_for(train.num_features, dtype_itemsize(xp, train.dtype), budget)
        uploader = chunk_uploader(train, chunk_rows)

        def load(start: int, stop: int) -> Any:
            return uploader.start(train.rows[start:stop, ...])

        def search_chunk(start: int, stop: int, pending: Any) -> tuple:
            chunk = uploader.finish(pending)
            index = build_index(chunk, train.metric, xp=xp, p=train.p)
            distances, indices, offsets = radius_search(
                index,
                queries,
                radius,
                batch_rows=batch_rows,
                memory_budget=budget // 2,
                train=chunk,
                distance_dtype=exact,
            )
            del chunk, index
            return query_numbers(offsets, indices.shape[0], xp=xp), indices + start, distances

        # The next chunk is copied while this one is searched; a chunk out of device memory is searched in halves.
        parts = [
            part
            for _, part in halving_batches(
                search_chunk,
                range(0, train.num_samples, chunk_rows),
                chunk_rows,
                train.num_samples,
                xp=xp,
                device=device,
                memory_budget=budget,
                what="training rows",
                load=load,
            )
        ]
        query_of, indices, distances = (xp.concat(values, axis=0) for values in zip(*parts))
        del parts
        order = xp.argsort(query_of, stable=True)  # chunks are consecutive: (query, index) order
        merged = tuple(xp.take(values, order) for values in (query_of, indices, distances))
        return finish_radius_search(
            [(*merged, None)], num_queries, sort_results=sort_results, distance_dtype=distance_dtype
        )
