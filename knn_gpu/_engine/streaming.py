"""Out-of-core search: training rows stay in host memory and stream through the device in chunks.

For a training set larger than the GPU (50M x 768 embeddings on a 24 GB card),
FAISS's ``knn_gpu`` with a memory limit copies tiles of the database to the
device; cuVS copies all of it. Here each chunk of training rows is copied to
the queries' device *once*, searched for every query by the in-memory engine
(:func:`knn_gpu._engine.search.search_index`), and its k best are merged into the
running k best by the one merge rule that the Dask path uses too
(:mod:`knn_gpu._engine.merge`). Per-chunk distances are kept in float64 (where the
device has it) until the end, so the merge orders exactly as one search
would: the indices equal the in-memory search's.

Copies overlap the search: chunk j + 1 is loaded before chunk j is searched
(:func:`knn_gpu._engine.batches.halving_batches` with ``load=``). On CuPy and torch-CUDA
the load is a copy from pinned host memory on a second stream
(:mod:`knn_gpu._engine.prefetch`), so the device copies chunk j + 1 while it searches
chunk j; elsewhere it is :func:`upload` (:class:`DirectUpload`). A chunk that
runs out of device memory is searched again in halves, as a batch is.

Device memory: the budget is split between the chunks (the prefetched
chunk's rows, and the searched chunk's stored rows and the temporaries of
building them: about four chunk copies) and the search's batch temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.backends import convert_like, to_host
from .._lib.devices import device_scope
from .._lib.validation import distance_dtype_for, exact_dtype
from .batches import halving_batches
from .budget import default_memory_budget, dtype_itemsize
from .merge import merge_neighbor_lists
from .prefetch import CupyPrefetch, TorchPrefetch
from .search import build_index, search_index

__all__ = [
    "StreamedTrain",
    "streamed_search",
    "stream_budget",
    "CHUNK_COPIES",
    "chunk_rows_for",
    "chunk_uploader",
    "DirectUpload",
    "is_host_array",
    "upload",
]


def is_host_array(array: Any) -> bool:
    """True for arrays in host memory: NumPy, torch on the CPU, array_api_strict's CPU device."""
    xp = array_api_compat.array_namespace(array)
    device = array_api_compat.device(array)
    if array_api_compat.is_numpy_namespace(xp):
        return True
    if array_api_compat.is_torch_namespace(xp):
        return device.type == "cpu"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return device == xp.__array_namespace_info__().default_device()
    return str(device) == "cpu"


@dataclass(frozen=True)
class StreamedTrain:
    """Training rows kept in host memory, searched on ``device`` of namespace ``xp``.

    Stands where a :class:`~knn_gpu._engine.search.TrainIndex` stands for an
    in-memory model: same ``xp``, ``device``, ``dtype``, ``num_samples``,
    ``num_features``; :func:`streamed_search` is its ``search_index``.
    """

    rows: Any  # host array, (num_samples, num_features), validated
    anchor: Any  # an empty array on the compute device: its namespace and device (so that the model pickles)
    dtype: Any  # working dtype, in the compute namespace
    metric: str
    memory_budget: int | None = None
    chunk_rows: int | None = None
    p: float | None = None  # Minkowski's power, for metric="minkowski"

    @property
    def xp(self) -> ModuleType:
        return array_api_compat.array_namespace(self.anchor)

    @property
    def device(self) -> Any:
        return array_api_compat.device(self.anchor)

    @property
    def num_samples(self) -> int:
        return int(self.rows.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.rows.shape[1])


def stream_budget(memory_budget: int | None, xp: ModuleType, device: Any) -> int:
    """The device bytes a streamed search may use: ``memory_budget``, or half the device's free memory."""
    return default_memory_budget(xp, device) if memory_budget is None else memory_budget


#: Chunk-sized copies on the device at once: the prefetched chunk, the searched chunk and its index's
#: rows, a temporary of building them.
CHUNK_COPIES = 4


def chunk_rows_for(num_features: int, itemsize: int, memory_budget: int) -> int:
    """Training rows per chunk: the :data:`CHUNK_COPIES` chunk-sized copies (two chunks resident) take half the budget."""
    return max(1, (memory_budget // 2) // (CHUNK_COPIES * (num_features + 1) * itemsize))


class DirectUpload:
    """Loads chunks with :func:`upload` (one copy each, on the search's own stream); ``finish`` returns the chunk."""

    def __init__(self, like: Any, dtype: Any) -> None:
        self._like = like
        self._dtype = dtype

    def start(self, host_rows: Any) -> Any:
        return upload(host_rows, self._like, self._dtype)

    def finish(self, pending: Any) -> Any:
        return pending


def chunk_uploader(train: StreamedTrain, chunk_rows: int) -> Any:
    """The uploader of ``train``'s chunks: :mod:`knn_gpu._engine.prefetch`'s on CuPy and torch-CUDA, else :class:`DirectUpload`.

    torch's is made only where torch has CUDA (on a fake device in tests,
    constructing it raises, and chunks are copied directly).
    """
    xp, device, anchor = train.xp, train.device, train.anchor
    max_rows = min(chunk_rows, train.num_samples)
    if array_api_compat.is_cupy_array(anchor):
        return CupyPrefetch(xp, train.dtype, max_rows, train.num_features)
    if array_api_compat.is_torch_array(anchor) and device.type == "cuda":
        try:
            return TorchPrefetch(device, train.dtype, max_rows, train.num_features)
        except RuntimeError:  # torch without CUDA: a fake device
            pass
    return DirectUpload(anchor, train.dtype)


def streamed_search(
    train: StreamedTrain,
    queries: Any,
    k: int,
    *,
    batch_rows: int | None = None,
    n_jobs: int | None = None,
    reduce: Callable[[Any, Any], tuple] | None = None,
    reduce_bytes_per_query: int = 0,
) -> tuple:
    """The ``k`` nearest training rows of each query, streaming the rows chunk by chunk.

    Parameters and result as :func:`knn_gpu._engine.search.search_index`; ``queries``
    are validated and on ``train.device`` in ``train.dtype``. A ``reduce``
    runs after the merge, on batches of queries.
    """
    if train.metric == "precomputed":
        # Each chunk would need its own columns of the queries' distance rows.
        msg = "metric='precomputed' has no out-of-core search; keep the distance matrix in memory (out_of_core=False)"
        raise ValueError(msg)
    xp, device = train.xp, train.device
    with device_scope(xp, device):
        budget = stream_budget(train.memory_budget, xp, device)
        chunk_rows = train.chunk_rows or chunk_rows_for(train.num_features, dtype_itemsize(xp, train.dtype), budget)
        exact = exact_dtype(xp, device)
        uploader = chunk_uploader(train, chunk_rows)

        def load(start: int, stop: int) -> Any:
            return uploader.start(train.rows[start:stop, ...])

        def search_chunk(start: int, stop: int, pending: Any) -> tuple:
            chunk = uploader.finish(pending)
            index = build_index(chunk, train.metric, xp=xp, p=train.p)
            distances, indices = search_index(
                index,
                queries,
                min(k, stop - start),
                batch_rows=batch_rows,
                n_jobs=n_jobs,
                memory_budget=budget // 2,
                distance_dtype=exact,
            )
            del chunk
            return stop, distances, indices + start

        best_distances = best_indices = None
        chunks = halving_batches(
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
        for _, (stop, distances, indices) in chunks:
            if best_distances is None:
                best_distances, best_indices = distances, indices
            else:
                best_distances, best_indices, _ = merge_neighbor_lists(
                    xp.concat([best_distances, distances], axis=1),
                    xp.concat([best_indices, indices], axis=1),
                    min(k, stop),
                    xp=xp,
                )
            del distances, indices
        distances = xp.astype(best_distances, distance_dtype_for(train.dtype, xp))
        if reduce is None:
            return distances, best_indices
        return _reduce_in_batches(reduce, distances, best_indices, budget // 2, reduce_bytes_per_query, xp=xp)


def _reduce_in_batches(
    reduce: Callable, distances: Any, indices: Any, budget: int, bytes_per_query: int, *, xp: ModuleType
) -> tuple:
    rows = distances.shape[0]
    step = max(1, budget // max(1, bytes_per_query))
    results = [
        reduce(distances[start : min(start + step, rows), ...], indices[start : min(start + step, rows), ...])
        for start in range(0, max(rows, 1), step)
    ]
    if len(results) == 1:
        return results[0]
    return tuple(xp.concat(parts, axis=0) for parts in zip(*results))


def upload(chunk: Any, like: Any, dtype: Any) -> Any:
    """``chunk`` (host) on the device of ``like``, in ``dtype``: one explicit copy.

    torch-CUDA: from pinned memory without blocking (the caching host
    allocator keeps the pinned buffer alive until the copy is done).
    """
    xp = array_api_compat.array_namespace(like)
    if array_api_compat.is_torch_array(like) and like.device.type == "cuda":
        import torch

        host = chunk if array_api_compat.is_torch_array(chunk) else torch.as_tensor(to_host(chunk))
        try:
            host = host.pin_memory()
        except RuntimeError:  # no CUDA context for pinning (e.g. a fake device in tests): an ordinary copy
            pass
        return xp.astype(host.to(like.device, non_blocking=True), dtype, copy=False)
    return xp.astype(convert_like(chunk, like), dtype, copy=False)
