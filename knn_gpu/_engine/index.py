"""The engine's front door: one index, built once from the training rows and the metric.

:func:`build_neighbors_index` looks at the training rows and the metric and
chooses the plan, in this one place:

``"dask"``
    the rows are a Dask array: each chunk is searched with the in-memory
    engine and the partial lists are merged up a tree
    (:mod:`knn_gpu._engine.dask_search`);
``"streamed"``
    the rows stay in host memory and stream through the compute device chunk
    by chunk, each chunk searched with the in-memory engine and merged
    (:mod:`knn_gpu._engine.streaming`, out of core);
``"product"``
    the metrics with a matrix-product form (euclidean, sqeuclidean, cosine,
    inner_product): ranking keys from one product per batch, top-k, exact
    re-scoring (:mod:`knn_gpu._engine.search`);
``"direct"``
    every other metric: exact distances block by block
    (:mod:`knn_gpu._engine.direct`).

:class:`NeighborsIndex` then answers ``kneighbors(queries, k)`` and
``radius(queries, radius)`` with the plan's engine. The public functions and
the estimators call only these two methods; whatever else varies by plan
stays behind them.

The callers validate first (shapes, dtypes, devices, parameters): the front
door takes rows and queries in the compute namespace, device and dtype, as
the engines do.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.backends import as_torch_tensors, numpy_views
from .._lib.config import get_config
from .._lib.devices import is_gpu
from .direct import DirectIndex, is_direct
from .metrics import resolve
from .predictions import class_votes, neighbor_weights, weighted_mean
from .radius_direct import radius_search
from .radius_streamed import radius_search_streamed
from .search import build_index, search_index
from .streaming import StreamedTrain, streamed_search

__all__ = ["PLANS", "NeighborsIndex", "build_neighbors_index"]

#: The plans :func:`build_neighbors_index` chooses from.
PLANS = ("product", "direct", "streamed", "dask")


class NeighborsIndex:
    """Training rows prepared for neighbour queries, with the plan that searches them.

    Built by :func:`build_neighbors_index`; not constructed directly.

    Attributes
    ----------
    plan : {"product", "direct", "streamed", "dask"}
    store : TrainIndex, DirectIndex, StreamedTrain or Dask array
        What the plan's engine searches.
    rows : array or None
        The rows the store was built from, as given: on the device (the
        product engine's radius search re-scores against them), or in host
        memory out of core; None on Dask.
    metric : str
        The engine's metric name (after :func:`~knn_gpu._engine.metrics.resolve`).
    viewed : bool
        The rows are CPU torch tensors searched by NumPy on zero-copy views
        (:func:`build_neighbors_index`'s ``host_views``): ``xp``, ``device``
        and ``dtype`` are torch's, queries and answers torch tensors, and
        ``store`` and ``rows`` hold the NumPy views.
    """

    def __init__(self, store: Any, plan: str, metric: str, rows: Any = None, caller: Any = None) -> None:
        self.store = store
        self.plan = plan
        self.metric = metric
        self.rows = rows
        # The Dask plan's store is the lazy array itself: its namespace is Dask's. A viewed index answers in
        # the namespace of the rows it was given (caller), not in NumPy's.
        self._lazy = (
            (array_api_compat.array_namespace(store), array_api_compat.device(store)) if plan == "dask" else None
        )
        self._caller = None
        if caller is not None:
            self._caller = (array_api_compat.array_namespace(caller), array_api_compat.device(caller), caller.dtype)

    @property
    def viewed(self) -> bool:
        return self._caller is not None

    def __repr__(self) -> str:
        return f"NeighborsIndex(plan={self.plan!r}, metric={self.metric!r}, shape={self.shape})"

    @property
    def shape(self) -> tuple[int, int]:
        return (
            (int(self.store.shape[0]), int(self.store.shape[1]))
            if self.plan == "dask"
            else (
                self.store.num_samples,
                self.store.num_features,
            )
        )

    @property
    def xp(self) -> Any:
        """The compute namespace (Dask's, on the Dask plan; torch's when ``viewed``)."""
        if self._caller is not None:
            return self._caller[0]
        return self.store.xp if self._lazy is None else self._lazy[0]

    @property
    def device(self) -> Any:
        """The compute device."""
        if self._caller is not None:
            return self._caller[1]
        return self.store.device if self._lazy is None else self._lazy[1]

    @property
    def dtype(self) -> Any:
        """The working dtype of the rows, in the compute namespace (on Dask: the rows' own; chunks of
        half precision are searched in float32)."""
        return self.store.dtype if self._caller is None else self._caller[2]

    @property
    def num_samples(self) -> int:
        return self.shape[0]

    @property
    def num_features(self) -> int:
        return self.shape[1]

    def kneighbors(
        self,
        queries: Any,
        k: int,
        *,
        batch_rows: int | None = None,
        n_jobs: int | None = None,
        memory_budget: int | None = None,
        reduce: Callable[[Any, Any], tuple] | None = None,
        reduce_bytes_per_query: int = 0,
    ) -> tuple:
        """The ``k`` nearest stored rows of each query: ``(distances, indices)``, or ``reduce``'s batches.

        Distances are the engine's (for ``"inner_product"`` the negated
        products, ascending: :func:`~knn_gpu._engine.distances.public_distances`
        turns them into the public ones). ``reduce(distances, indices)`` runs
        batch by batch, its temporaries (``reduce_bytes_per_query``) counted in
        the memory budget; on Dask, the queries' neighbours are lazy and
        ``reduce`` is not taken (Dask reductions are planned by
        :func:`knn_gpu._engine.dask_search.dask_reduce_neighbors`).
        """
        if self.plan == "dask":
            from .dask_search import dask_kneighbors, working_dtype_name

            if reduce is not None:
                msg = "a batch reduction does not run on Dask arrays; use dask_reduce_neighbors"
                raise ValueError(msg)
            return dask_kneighbors(
                queries, self.store, k, metric=self.metric, dtype_name=working_dtype_name(queries, self.store)
            )
        if self._caller is not None:
            queries = _host_view(queries)
            if reduce is not None:
                # The reduction is written for the caller's namespace: it sees tensors sharing NumPy's batches.
                reduce = _viewed_reduce(reduce)
        options = {
            "batch_rows": batch_rows,
            "n_jobs": n_jobs,
            "reduce": reduce,
            "reduce_bytes_per_query": reduce_bytes_per_query,
        }
        if self.plan == "streamed":
            return streamed_search(self.store, queries, k, **options)
        found = search_index(self.store, queries, k, memory_budget=memory_budget, **options)
        return as_torch_tensors(found) if self._caller is not None else found

    def predict(
        self,
        queries: Any,
        k: int,
        values: Any,
        *,
        weights: str | Callable,
        num_classes: int | None = None,
        winners_only: bool = False,
        batch_rows: int | None = None,
        n_jobs: int | None = None,
        memory_budget: int | None = None,
    ) -> Any:
        """Per query, a reduction of the ``k`` nearest rows' ``values``: their (weighted) mean, or votes.

        Parameters
        ----------
        values : array, shape (n_samples,) or (n_samples, n_outputs)
            Per stored row: targets (the mean, shape (n_queries, n_outputs)),
            or with ``num_classes`` int64 class codes (the vote shares, shape
            (n_queries, num_classes)). On the index's device (Dask: Dask or
            NumPy).
        weights : "uniform", "distance" or callable
            Checked by :func:`~knn_gpu._engine.predictions.check_weights`.
        winners_only : bool
            With ``num_classes``: only each query's winning code (ties to the
            lowest), not the shares.

        On the in-memory plans the reduction runs batch by batch inside the
        search, its temporaries counted in the memory budget; on Dask, each
        neighbour's value travels with its candidate (no gather of the
        training set) and the result is lazy.
        """
        if self.plan == "dask":
            from .dask_search import dask_reduce_neighbors

            result = dask_reduce_neighbors(
                queries, self.store, values, k, metric=self.metric, weights=weights, num_classes=num_classes
            )
            return result.argmax(axis=1) if winners_only else result
        xp, metric = self.xp, self.metric

        def reduce(distances: Any, indices: Any) -> tuple[Any]:
            neighbor_weight = neighbor_weights(distances, weights, xp=xp, metric=metric)
            if num_classes is None:
                return (weighted_mean(values, indices, neighbor_weight, xp=xp),)
            votes = class_votes(values, indices, neighbor_weight, num_classes, xp=xp)
            return (xp.argmax(votes, axis=1),) if winners_only else (votes,)

        if num_classes is None:
            # The gathered targets, their weighted copy and the weights: 3 (k, n_outputs) arrays per query.
            per_query = 3 * k * (values.shape[1] + 1) * 8
        else:
            # One-hot codes, their weighted copy (k x n_classes each) and the shares.
            per_query = (2 * k + 2) * num_classes * 8
        (result,) = self.kneighbors(
            queries,
            k,
            batch_rows=batch_rows,
            n_jobs=n_jobs,
            memory_budget=memory_budget,
            reduce=reduce,
            reduce_bytes_per_query=per_query,
        )
        return result

    def radius(
        self,
        queries: Any,
        radius: Any,
        *,
        sort_results: bool = False,
        batch_rows: int | None = None,
        memory_budget: int | None = None,
    ) -> tuple[Any, Any, Any]:
        """Every stored row within ``radius`` of each query: the flat ``(distances, indices, offsets)``.

        Query ``i``'s neighbours are at ``offsets[i]:offsets[i + 1]``, by
        ascending index, or by (distance, index) with ``sort_results``.
        ``radius`` is a float or an array of one radius per query, checked by
        :func:`~knn_gpu._lib.validation.check_radius`.
        """
        if self.plan == "dask":
            msg = "radius search does not take Dask arrays yet; compute() them, or search chunk by chunk"
            raise TypeError(msg)
        if self.plan == "streamed":
            return radius_search_streamed(self.store, queries, radius, sort_results=sort_results, batch_rows=batch_rows)
        if self._caller is not None:
            queries, radius = _host_view(queries), _host_view(radius)
        found = radius_search(
            self.store,
            queries,
            radius,
            sort_results=sort_results,
            batch_rows=batch_rows,
            memory_budget=memory_budget,
            train=self.rows,
        )
        return as_torch_tensors(found) if self._caller is not None else found


def build_neighbors_index(
    train: Any,
    metric: Any,
    *,
    p: float | None = None,
    metric_params: dict | None = None,
    stream: bool = False,
    anchor: Any = None,
    dtype: Any = None,
    memory_budget: int | None = None,
    host_views: bool = False,
) -> NeighborsIndex:
    """Choose the plan for ``train`` and ``metric`` and prepare the rows for it.

    Parameters
    ----------
    train : array, shape (n_samples, n_features)
        Validated training rows. A Dask array gets the ``"dask"`` plan.
        Otherwise in the compute namespace, device and dtype, unless
        ``stream``.
    metric : str, callable, BlockMetric or Resolved
        A metric of the registry (:func:`knn_gpu._engine.metrics.lookup`), or
        one already resolved (:func:`knn_gpu._engine.metrics.resolve`).
    p : float, optional
        Minkowski's power (``metric="minkowski"``), checked.
    metric_params : dict, optional
        The metric's parameters (``V``, ``VI``, ...), checked and prepared
        against ``train`` before any search.
    stream : bool
        Keep ``train`` in host memory and stream it through the device of
        ``anchor`` (the ``"streamed"`` plan); the callers decide it, from
        ``out_of_core`` and where the data are.
    anchor : array, optional
        With ``stream``: an empty array of the compute namespace and device.
    dtype : dtype, optional
        With ``stream``: the working dtype, in the compute namespace.
    memory_budget : int, optional
        With ``stream``: the device bytes a chunk's search may use.
    host_views : bool
        Search CPU float tensors with NumPy, on zero-copy views
        (:func:`~knn_gpu._lib.backends.numpy_views`): NumPy's search (a
        batch per core, each with a single-threaded BLAS) is 1.2 to 3.9
        times as fast as torch's CPU kernels on the same tensors
        (``benchmarks/bench_torch_cpu.py``). The index still takes and
        answers tensors (:attr:`NeighborsIndex.viewed`). Not for a
        :class:`~knn_gpu.BlockMetric` (its function is written for the
        rows' own library), nor where ``numpy_views`` declines (bfloat16,
        autograd, a GPU). The callers ask for it unless the user chose
        torch (``backend="torch"``).

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu._engine.index import build_neighbors_index
    >>> train = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> index = build_neighbors_index(train, "manhattan")
    >>> index.plan
    'direct'
    >>> index.kneighbors(np.array([[0.9, 0.1]]), 2)
    (array([[0.2, 1. ]]), array([[1, 0]]))
    >>> build_neighbors_index(train, "euclidean").radius(np.array([[0.0, 0.0]]), 1.0)
    (array([0., 1.]), array([0, 1]), array([0, 2]))
    """
    resolved = resolve(metric, p, metric_params)
    engine_metric, p = resolved.name, resolved.p
    if array_api_compat.is_dask_array(train):
        if is_direct(engine_metric):
            named = metric if isinstance(metric, str) else engine_metric
            msg = f"metric={named!r} is not supported for Dask arrays; use a matrix-product metric"
            raise ValueError(msg)
        return NeighborsIndex(train, "dask", engine_metric)
    if stream:
        return NeighborsIndex(
            StreamedTrain(train, anchor, dtype, engine_metric, memory_budget, p=p),
            "streamed",
            engine_metric,
            rows=train,
        )
    views = numpy_views(train) if host_views and resolved.entry.name != "block_callable" else None
    caller = None
    if views is not None:
        caller, train = train, views[0]
    xp = array_api_compat.array_namespace(train)
    store = build_index(train, resolved, xp=xp, rank_split=_tensor_core_ranking(train, xp, engine_metric))
    plan = "direct" if isinstance(store, DirectIndex) else "product"
    return NeighborsIndex(store, plan, engine_metric, rows=train, caller=caller)


def _tensor_core_ranking(train: Any, xp: ModuleType, metric: str) -> bool:
    """``config_context(ranking="bf16x3")`` applies: torch CUDA float32/float64 rows of a product metric.

    Raises ``RuntimeError`` where the torch build has no bfloat16 GEMM with a
    float32 output (``torch.mm(..., out_dtype=)``), rather than ranking slower
    than float32 does.
    """
    if get_config()["ranking"] != "bf16x3" or is_direct(metric):
        return False
    if not array_api_compat.is_torch_namespace(xp) or not is_gpu(xp, array_api_compat.device(train)):
        return False
    if train.dtype not in (xp.float32, xp.float64):
        return False  # half precision is ranked in float32 chunks already
    import torch

    if not (hasattr(torch.ops.aten.mm, "dtype") and hasattr(torch.ops.aten.addmm, "dtype")):
        msg = (
            f'ranking="bf16x3" needs torch.mm and torch.addmm with out_dtype= (bfloat16 GEMMs with a float32 '
            f'output), which torch {torch.__version__} lacks; upgrade torch or use ranking="float32"'
        )
        raise RuntimeError(msg)
    return True


def _host_view(array: Any) -> Any:
    """A CPU tensor as a NumPy array, zero-copy where NumPy can hold it as is (the search is not differentiated)."""
    return array.numpy(force=True) if array_api_compat.is_torch_array(array) else array


def _viewed_reduce(reduce: Callable[[Any, Any], tuple]) -> Callable[[Any, Any], tuple]:
    """``reduce`` of tensors, run on NumPy batches: tensors sharing their memory in, NumPy views out."""

    def on_views(distances: Any, indices: Any) -> tuple:
        return tuple(_host_view(part) for part in reduce(*as_torch_tensors((distances, indices))))

    return on_views
