"""Metrics without a matrix-product form, computed directly block by block.

Minkowski distances ``(sum_f |q_f - t_f|^p)^(1/p)`` for ``p != 2`` (p = 1:
manhattan; p = infinity: chebyshev) have no ``||q||^2 - 2 q.t + ||t||^2``
expansion, and ``"precomputed"`` distances need no arithmetic at all. Both
go through one blocked search: per batch of queries, the training rows are
taken in blocks of consecutive rows, in ascending order; each block's
distances are computed directly in the exact dtype (float64 where the device
has it), its k best kept by :func:`~knn_gpu._engine.topk.smallest_k_columns` and
merged into the running k best by :func:`~knn_gpu._engine.merge.merge_neighbor_lists`.
As the blocks come in ascending index order, equal distances keep the lower
training index, as in every other search.

Every path ranks by ``sum |q_f - t_f|^p`` (exact on integer data for
integer p, computed by multiplication) and takes the p-th root of the k
winners only, once per batch: vectorised ``pow`` may round the same value
differently in different SIMD lanes (torch), which would reorder exact ties
if the root were ranked.

Memory: the batch size and block size come from the memory budget, counting
every temporary of a block: the ``(rows, block, features)`` differences,
their absolute values and powers, the ``(rows, block)`` distances and their
selection, and the merge's lists (:func:`direct_bytes`).

NumPy fast paths (:func:`block_method`), the standard-only broadcast next to
them for every other namespace: with SciPy importable, p = 1 and infinity
take ``scipy.spatial.distance.cdist`` per block (compiled, no
``(rows, block, features)`` temporaries); other p a loop over features into
cache-sized tiles with ``out=`` (SciPy's generic-p cdist is 5x slower). Both
release the GIL, so the search's threads (:func:`direct_workers`) share the
cores. Once a batch's running list is full, only the block entries below each
row's k-th best are merged (one lexsort), instead of partitioning the block.
SciPy stays optional: without it, p = 1 and infinity take the loop too.

No step reads data back to the host: block and batch sizes are Python
integers fixed before the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.devices import device_scope
from .._lib.validation import distance_dtype_for, exact_dtype
from .batches import halving_batches
from .budget import available_cores, default_memory_budget, run_in_shares
from .merge import merge_neighbor_lists
from .metrics import REGISTRY, lookup, resolve
from .topk import smallest_k_columns

__all__ = ["DirectIndex", "build_direct_index", "search_direct", "resolve_metric", "direct_bytes", "direct_plan"]

#: Most queries per batch on NumPy (as the product search: the blocks stay in the CPU caches).
HOST_MAX_BATCH_ROWS = 512

#: Fewest training rows per block the planner aims for before it shrinks the batch.
MIN_BLOCK_ROWS = 256

#: Elements of one (rows, block, features) temporary of a registry metric on NumPy (2 MiB of float64),
#: and the fewest block rows that bound gives.
HOST_METRIC_BLOCK_ELEMENTS = 2**18
MIN_HOST_METRIC_BLOCK_ROWS = 16

#: Most training rows per block on NumPy with SciPy (a (512, 4096) float64 block is 16 MiB).
HOST_CDIST_BLOCK_ROWS = 4096


def resolve_metric(metric: str, p: float | None) -> tuple[str, float | None]:
    """The engine's ``(metric, p)`` for a metric name and p: :func:`knn_gpu._engine.metrics.resolve`'s.

    Examples
    --------
    >>> resolve_metric("cityblock", None)
    ('minkowski', 1.0)
    >>> resolve_metric("minkowski", 2)
    ('euclidean', None)
    """
    resolved = resolve(metric, p)
    return resolved.name, resolved.p


def is_direct(metric: Any) -> bool:
    """True for the metrics searched here, block by block (every one not ranked by a matrix product)."""
    entry = REGISTRY.get(metric) if isinstance(metric, str) else None  # an engine name ("callable") first
    return (entry or lookup(metric)).ranking != "product"


class StoredRows:
    """What every index derives from its ``rows`` and ``data_dtype`` (shared by the matrix-product and direct indices)."""

    rows: Any
    data_dtype: Any

    @property
    def xp(self) -> ModuleType:
        """Namespace of the stored rows (derived, so that the index pickles)."""
        return array_api_compat.array_namespace(self.rows)

    @property
    def dtype(self) -> Any:
        """Floating dtype of the data (and of the queries searched)."""
        return self.data_dtype

    @property
    def distance_dtype(self) -> Any:
        """Floating dtype of returned distances: the data's, float32 for half precision."""
        return distance_dtype_for(self.data_dtype, self.xp)


@dataclass(frozen=True)
class DirectIndex(StoredRows):
    """Training rows for a direct search, on their own namespace and device.

    ``rows`` are the training rows as given (``"minkowski"``), or for
    ``"precomputed"`` the (n_samples, n_samples) distance matrix as given
    (the queries are then rows of distances to the training samples, and
    nothing is computed).
    """

    device: Any
    metric: str  # "minkowski", "precomputed", or a direct metric of the registry (knn_gpu._engine.metrics)
    p: float | None
    num_samples: int
    num_features: int
    rows: Any
    exact: Any
    data_dtype: Any
    state: dict = field(default_factory=dict)  # what the metric's blocks need (V, VI, a function), on the device

    @property
    def num_stored(self) -> int:
        return self.num_samples

    @property
    def root(self) -> float | None:
        """The distances are ``keys ** (1 / root)``, taken on the winners only; None: the keys are the distances."""
        if self.metric == "minkowski":
            return self.p if _has_root(self.p) else None
        return REGISTRY[self.metric].root if self.metric in REGISTRY else None


def build_direct_index(
    train: Any, metric: str, p: float | None, *, xp: ModuleType, state: dict | None = None
) -> DirectIndex:
    """A :class:`DirectIndex` of validated floating ``train`` for a resolved metric (``state``: its blocks' needs)."""
    device = array_api_compat.device(train)
    with device_scope(xp, device):
        exact = exact_dtype(xp, device)
        # Stored as given (no float64 copy of float32 or half-precision rows): each block is
        # converted to the exact dtype as it is searched.
        rows = train
        return DirectIndex(
            device=device,
            metric=metric,
            p=p,
            num_samples=train.shape[0],
            num_features=train.shape[1],
            rows=rows,
            exact=exact,
            data_dtype=train.dtype,
            state={} if state is None else state,
        )


def block_method(index: DirectIndex) -> str:
    """How a block's distances are computed: chosen by namespace, the standard broadcast as the fallback.

    ``"select"``: precomputed, nothing to compute. ``"cdist"``: NumPy with
    SciPy, p = 1 or infinity (compiled, releases the GIL). ``"numpy_loop"``:
    NumPy, other p: a loop over features accumulating into (rows, 256)
    tiles with ``out=`` (cache-resident; SciPy's generic-p cdist calls
    ``pow`` per element and is 4x slower). ``"broadcast"``: every other
    namespace, (rows, block, features) differences.
    """
    if index.metric == "precomputed":
        return "select"
    if index.metric != "minkowski":
        if (
            array_api_compat.is_numpy_namespace(index.xp)
            and REGISTRY[index.metric].scipy_name is not None
            and _scipy_available()
        ):
            return "metric_cdist"  # NumPy: SciPy's compiled cdist of the same metric
        return "metric"  # the registry's block function, standard functions only
    if array_api_compat.is_numpy_namespace(index.xp):
        if not _has_root(index.p) and _scipy_available():
            return "cdist"
        return "numpy_loop"
    return "broadcast"


def _scipy_available() -> bool:
    try:
        import scipy.spatial.distance  # noqa: F401
    except ImportError:
        return False
    return True


def direct_bytes(index: DirectIndex, block_rows: int, k: int, *, method: str) -> tuple[int, int, int]:
    """Bytes of a direct search batch: ``(per query, per query and block row, per block row)``.

    Per query and block row: the broadcast differences, their absolute
    values and powers (three ``features``-long float temporaries; none with
    cdist, three tiles of :data:`LOOP_TILE_ROWS` per query with the NumPy
    loop), the block's distances, on NumPy the survivors of the k-th-best
    filter (five 8-byte values at most), the selection's copies and masks (four
    8-byte values). Per query: its exact copy, the block's k best and the
    merge's concatenation, order and result (distances and int64 indices).
    Per block row: the block's copy in the exact dtype when the rows are
    stored in another (float32, half precision).
    """
    exact = index.xp.finfo(index.exact).bits // 8
    features = index.num_features
    per_column = exact + 4 * 8
    per_block_row = 0
    if index.metric == "minkowski":
        if method == "broadcast":
            per_column += 3 * features * exact
        if index.rows.dtype != index.exact:
            per_block_row = features * exact
    elif method == "metric":
        # The metric's (rows, block, features) temporaries, a few (rows, block) ones (ratios, masks,
        # counts), the block in the exact dtype and its boolean/centred copy.
        per_column += (REGISTRY[index.metric].temporaries * features + 6) * exact
        per_block_row = 2 * features * exact
    kept = min(k, block_rows)
    per_query = features * exact + (kept + 3 * (k + kept)) * (exact + 8)
    if method == "numpy_loop":
        per_query += 3 * LOOP_TILE_ROWS * exact
    if method in ("cdist", "numpy_loop", "metric_cdist"):
        # The host merge of the entries below the k-th best: at worst every entry of the block
        # (row, column, distance, index and the lexsort's order).
        per_column += 5 * 8
    return per_query, per_column, per_block_row


def direct_plan(
    index: DirectIndex,
    num_queries: int,
    k: int,
    memory_budget: int,
    *,
    num_workers: int = 1,
    batch_rows: int | None = None,
    reduce_bytes_per_query: int = 0,
) -> tuple[int, int]:
    """``(batch_rows, block_rows)`` so that the batches in flight fit ``memory_budget`` bytes.

    The batch is as large as the budget allows with blocks of
    :data:`MIN_BLOCK_ROWS` rows (at most :data:`HOST_MAX_BATCH_ROWS` queries
    on NumPy), then the blocks grow into what is left (at most
    :data:`HOST_CDIST_BLOCK_ROWS` rows with cdist). A given ``batch_rows`` is
    kept and the block sized for it; where even one block row does not fit,
    blocks of one row.
    """
    method = block_method(index)
    share = max(1, memory_budget // num_workers)
    num_samples = index.num_samples
    if batch_rows is None:
        block = min(num_samples, MIN_BLOCK_ROWS)
        per_query, per_column, per_block_row = direct_bytes(index, block, k, method=method)
        batch_rows = max(
            1, (share - block * per_block_row) // (per_query + block * per_column + reduce_bytes_per_query)
        )
        if array_api_compat.is_numpy_namespace(index.xp):
            batch_rows = min(batch_rows, HOST_MAX_BATCH_ROWS)
        batch_rows = min(batch_rows, max(1, num_queries))
        # Equal batches, as many per worker.
        rounds = -(-num_queries // (num_workers * batch_rows))
        batch_rows = max(1, -(-num_queries // (num_workers * max(rounds, 1))))
    per_query, per_column, per_block_row = direct_bytes(index, num_samples, k, method=method)
    left = share - batch_rows * (per_query + reduce_bytes_per_query)
    block = max(1, min(num_samples, left // (batch_rows * per_column + per_block_row)))
    if method in ("cdist", "numpy_loop", "metric_cdist"):
        block = min(block, HOST_CDIST_BLOCK_ROWS)
    if method == "metric" and array_api_compat.is_numpy_namespace(index.xp):
        # The registry's (rows, block, features) temporaries stay cache-sized on the host: large fresh
        # allocations cost more in page faults than the arithmetic (a GPU's memory pool has no such cost).
        block = min(
            block, max(MIN_HOST_METRIC_BLOCK_ROWS, HOST_METRIC_BLOCK_ELEMENTS // (batch_rows * index.num_features))
        )
    return batch_rows, block


def direct_workers(index: DirectIndex, num_queries: int, n_jobs: int | None) -> int:
    """Threads searching batches side by side (NumPy only; cdist and NumPy's ufuncs release the GIL).

    As :func:`knn_gpu._engine.search.search_workers`, but a direct distance costs
    ``features`` operations, not one, so threads pay from
    :data:`MIN_OPERATIONS_PER_WORKER` difference terms and
    :data:`MIN_DIRECT_QUERIES_PER_WORKER` queries per thread.
    """
    if not array_api_compat.is_numpy_namespace(index.xp) or index.metric == "precomputed" and n_jobs is None:
        return 1
    if n_jobs is None:
        operations = num_queries * index.num_samples * index.num_features
        worth_it = min(num_queries // MIN_DIRECT_QUERIES_PER_WORKER, operations // MIN_OPERATIONS_PER_WORKER)
        return max(1, min(available_cores(), worth_it))
    wanted = available_cores() if n_jobs == -1 else n_jobs
    return max(1, min(wanted, num_queries))


#: A worker thread is worth starting for this many |q_f - t_f| terms and queries.
MIN_OPERATIONS_PER_WORKER = 2**26
MIN_DIRECT_QUERIES_PER_WORKER = 64


def search_direct(
    index: DirectIndex,
    queries: Any,
    k: int,
    *,
    batch_rows: int | None = None,
    n_jobs: int | None = None,
    memory_budget: int | None = None,
    reduce: Callable[[Any, Any], tuple] | None = None,
    reduce_bytes_per_query: int = 0,
    distance_dtype: Any = None,
) -> tuple:
    """:func:`knn_gpu._engine.search.search_index` for a :class:`DirectIndex` (same parameters and result)."""
    xp = index.xp
    if reduce is None:
        reduce = _neighbors_themselves
    with device_scope(xp, index.device):
        if distance_dtype is None:
            distance_dtype = index.distance_dtype
        num_queries = queries.shape[0]
        if num_queries == 0:
            return reduce(
                xp.zeros((0, k), dtype=distance_dtype, device=index.device),
                xp.zeros((0, k), dtype=xp.int64, device=index.device),
            )
        num_workers = direct_workers(index, num_queries, n_jobs)
        if memory_budget is None:
            memory_budget = default_memory_budget(xp, index.device)
        batch_rows, block_rows = direct_plan(
            index,
            num_queries,
            k,
            memory_budget,
            num_workers=num_workers,
            batch_rows=batch_rows,
            reduce_bytes_per_query=reduce_bytes_per_query,
        )
        block_distances = block_function(index)

        def search_rows(start: int, stop: int) -> tuple:
            distances, indices = _search_batch(index, queries[start:stop, ...], k, block_rows, block_distances)
            return reduce(xp.astype(distances, distance_dtype, copy=False), indices)

        def search_share(share: list[int]) -> list[tuple]:
            # A batch out of device memory is searched in halves: more, smaller pairs.
            return list(
                halving_batches(
                    search_rows,
                    share,
                    batch_rows,
                    num_queries,
                    xp=xp,
                    device=index.device,
                    memory_budget=memory_budget,
                )
            )

        results = run_in_shares(list(range(0, num_queries, batch_rows)), search_share, num_workers)
        if len(results) == 1:
            return results[0][1]
        return tuple(xp.concat(parts, axis=0) for parts in zip(*(batch for _, batch in results)))


def _neighbors_themselves(distances: Any, indices: Any) -> tuple[Any, Any]:
    return distances, indices


def _search_batch(index: DirectIndex, queries: Any, k: int, block_rows: int, block_distances: Callable) -> tuple:
    """The k best of one batch: blocks in ascending index order, each block's k best merged into the running list."""
    xp = index.xp
    if index.metric != "precomputed":
        queries = xp.astype(queries, index.exact, copy=False)
    best_distances = best_indices = None
    on_host = array_api_compat.is_numpy_namespace(xp)
    for start in range(0, index.num_samples, block_rows):
        stop = min(start + block_rows, index.num_samples)
        if block_distances is None:
            distances = queries[:, start:stop]
        else:
            block = xp.astype(index.rows[start:stop, ...], index.exact, copy=False)
            distances = block_distances(queries, block)
        if on_host and best_distances is not None and best_distances.shape[1] == k:
            best_distances, best_indices = _merge_below_kth_numpy(best_distances, best_indices, distances, start)
            continue
        kept = min(k, stop - start)
        columns = smallest_k_columns(distances, kept, xp=xp)
        distances = xp.take_along_axis(distances, columns, axis=1)
        indices = columns + start
        if best_distances is None:
            # The first block's list, in (distance, index) order, as the merge expects of the running list.
            best_distances, best_indices, _ = merge_neighbor_lists(distances, indices, kept, xp=xp)
            continue
        # Running list first: its indices are all lower, so its equal distances stay ahead.
        best_distances, best_indices, _ = merge_neighbor_lists(
            xp.concat([best_distances, distances], axis=1),
            xp.concat([best_indices, indices], axis=1),
            min(k, best_distances.shape[1] + kept),
            xp=xp,
        )
    if index.root is not None:
        best_distances = best_distances ** (1.0 / index.root)
    return best_distances, xp.astype(best_indices, xp.int64, copy=False)


def _merge_below_kth_numpy(best_distances: Any, best_indices: Any, distances: Any, start: int) -> tuple[Any, Any]:
    """NumPy: merge a block's entries below each row's current k-th best into the running list.

    Host-only (data-dependent sizes): a value equal to the k-th best cannot
    enter, as the running list's indices are all lower. Once a few blocks
    are in, few entries per row pass, so one lexsort of the survivors and
    the running lists by (row, distance, index) replaces the block's
    partition (a third of the search's time at 2,000 x 20,000 x 32).
    """
    import numpy as np

    rows, k = best_distances.shape
    candidate_rows, candidate_columns = np.nonzero(distances < best_distances[:, -1:])
    if candidate_rows.size == 0:
        return best_distances, best_indices
    all_rows = np.concatenate([np.repeat(np.arange(rows), k), candidate_rows])
    all_distances = np.concatenate([best_distances.reshape(-1), distances[candidate_rows, candidate_columns]])
    all_indices = np.concatenate([best_indices.reshape(-1), candidate_columns + start])
    order = np.lexsort((all_indices, all_distances, all_rows))
    counts = np.bincount(all_rows, minlength=rows)
    first = np.cumsum(counts) - counts
    taken = order[(first[:, None] + np.arange(k)).reshape(-1)]
    return all_distances[taken].reshape(rows, k), all_indices[taken].reshape(rows, k)


def _has_root(p: float) -> bool:
    return p != 1.0 and not math.isinf(p)


def _broadcast_blocks(queries: Any, block: Any, p: float, *, xp: ModuleType) -> Any:
    """Minkowski keys of ``queries`` (rows, f) to ``block`` (b, f), standard functions only: (rows, b).

    The distance itself for p = 1 and p = infinity, ``sum |d|^p`` (no root) otherwise.
    """
    differences = xp.abs(queries[:, None, :] - block[None, :, :])
    if p == 1.0:
        return xp.sum(differences, axis=2)
    if math.isinf(p):
        return xp.max(differences, axis=2)
    if p == int(p) and p <= 4:
        # Integer powers by multiplication: exact on small integers on every library.
        powers = differences
        for _ in range(int(p) - 1):
            powers = powers * differences
        return xp.sum(powers, axis=2)
    return xp.sum(differences**p, axis=2)


def _cdist_blocks(queries: Any, block: Any, p: float, *, xp: ModuleType) -> Any:
    """NumPy, p = 1 or infinity: SciPy's cdist (compiled, no (rows, b, f) temporaries)."""
    from scipy.spatial.distance import cdist

    return cdist(queries, block, metric="cityblock" if p == 1.0 else "chebyshev")


def _numpy_loop_blocks(queries: Any, block: Any, p: float, *, xp: ModuleType) -> Any:
    """NumPy: ``sum |d|^p`` (no root; p = 1 and infinity: the distance) feature by feature into cache-sized tiles."""
    import numpy as np

    rows = queries.shape[0]
    keys = np.empty((rows, block.shape[0]), dtype=queries.dtype)
    columns = np.ascontiguousarray(block.T)
    integer_power = int(p) if not math.isinf(p) and p == int(p) and p <= 4 else None
    for start in range(0, block.shape[0], LOOP_TILE_ROWS):
        tile = columns[:, start : start + LOOP_TILE_ROWS]
        total = keys[:, start : start + tile.shape[1]]
        total[...] = 0.0
        difference = np.empty(total.shape, dtype=queries.dtype)
        power = np.empty_like(difference)
        for feature in range(queries.shape[1]):
            np.subtract(queries[:, feature, None], tile[feature][None, :], out=difference)
            np.abs(difference, out=difference)
            if p == 1.0:
                total += difference
                continue
            if math.isinf(p):
                np.maximum(total, difference, out=total)
                continue
            if integer_power is None:
                np.power(difference, p, out=power)
            else:
                np.multiply(difference, difference, out=power)
                for _ in range(integer_power - 2):
                    np.multiply(power, difference, out=power)
            total += power
    return keys


def _cdist_metric_blocks(entry: Any, queries: Any, block: Any, state: dict) -> Any:
    """NumPy fast path of a registry metric: SciPy's cdist, with the registry's keys and conventions.

    The keys are the standard block function's: squared for a metric with
    ``root`` 2 (seuclidean, mahalanobis), +infinity where SciPy answers NaN
    (0/0 cases), booleans as ``x != 0``, no negative rounding of a
    correlation.
    """
    import numpy as np
    from scipy.spatial.distance import cdist

    options = {}
    if "V" in state:
        options["V"] = state["V"]
    if "VI" in state:
        options["VI"] = state["VI"]
    if entry.boolean:
        queries, block = queries != 0, block != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        keys = cdist(queries, block, metric=entry.scipy_name, **options)
    if entry.root == 2.0:
        keys *= keys
    np.maximum(keys, 0.0, out=keys)
    keys[np.isnan(keys)] = np.inf
    return keys


#: Training rows per tile of the NumPy loop: (512, 256) float64 tiles stay in the L2 cache.
LOOP_TILE_ROWS = 256

BLOCK_FUNCTIONS = {
    "select": None,
    "cdist": _cdist_blocks,
    "numpy_loop": _numpy_loop_blocks,
    "broadcast": _broadcast_blocks,
}


def block_function(index: DirectIndex) -> Callable[[Any, Any], Any] | None:
    """``f(queries, block) -> keys`` for the index's metric, both in the exact dtype; None for precomputed.

    Minkowski: :data:`BLOCK_FUNCTIONS` by :func:`block_method` (NumPy fast
    paths, the standard broadcast elsewhere); every other metric: its
    registry entry's block function (:mod:`knn_gpu._engine.metrics`).
    """
    method = block_method(index)
    xp = index.xp
    if method == "select":
        return None
    if method == "metric_cdist":
        entry, state = REGISTRY[index.metric], index.state

        def cdist_keys(queries: Any, block: Any) -> Any:
            return _cdist_metric_blocks(entry, queries, block, state)

        return cdist_keys
    if method == "metric":
        metric_block, state = REGISTRY[index.metric].block, index.state

        def keys_of(queries: Any, block: Any) -> Any:
            return metric_block(queries, block, state, xp=xp)

        return keys_of
    minkowski_block, p = BLOCK_FUNCTIONS[method], index.p

    def minkowski_keys(queries: Any, block: Any) -> Any:
        return minkowski_block(queries, block, p, xp=xp)

    return minkowski_keys
