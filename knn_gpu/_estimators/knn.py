"""The estimators' engine base, and the tutorial's ``KNN`` regressor and ``KNNClassifier``.

:class:`_NeighborsBase` is the one base every estimator of knn_gpu stands on
(the tutorial classes here, the scikit-learn-named classes of
:mod:`knn_gpu._estimators.drop_in` and :mod:`knn_gpu._estimators.drop_in_radius`): it validates and
fits, and it is the only place that reaches the search engine, through one
method for the k-search (:meth:`_NeighborsBase._neighbors_on_backend`) and one
for the radius search (:meth:`_NeighborsBase._radius_flat`). It holds no
estimator protocol (``get_params``...): the scikit-learn-named classes take
that from scikit-learn's own ``BaseEstimator``, and the tutorial classes, which
must work without scikit-learn, from :class:`_TutorialEstimator`, which follows
the protocol without importing scikit-learn: the constructor stores its
arguments unchanged, ``fit`` validates them, fitted attributes end in ``_``,
and ``get_params`` / ``set_params`` read the constructor's signature.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from .._engine.budget import dtype_itemsize
from .._engine.distances import public_distances
from .._engine.index import NeighborsIndex, build_neighbors_index
from .._engine.labels import decode_class_labels, encode_class_labels
from .._engine.metrics import check_input_for, lookup, resolve
from .._engine.predictions import check_weights, neighbor_weights
from .._engine.radius_queries import exclude_self_flat
from .._engine.streaming import chunk_rows_for, is_host_array, stream_budget, upload
from .._engine.topk import columns_of_true
from .._lib.backends import convert_like, move_to, resolve_backend, to_host
from .._lib.devices import device_scope, is_gpu
from .._lib.sparse_input import check_stored_neighbors, fewest_stored_per_row, is_sparse
from .._lib.validation import (
    SEMI_METRIC_WARNING,
    as_feature_matrix,
    as_targets,
    check_batch_size,
    check_feature_names,
    check_memory_budget,
    check_n_jobs,
    check_nonnegative_distances,
    check_num_neighbors,
    check_out_of_core,
    check_radius,
    check_radius_shape,
    check_square_distances,
    distance_dtype_for,
    dtype_in,
    feature_names_of,
    floating_dtype,
    not_fitted_error,
    prepare_queries,
)

__all__ = ["KNN", "KNNClassifier"]


class _NeighborsBase:
    """Fitting, validation and the engine's two doors (k-search, radius search), shared by every estimator.

    Subclasses set the constructor's parameters as attributes; this base
    reads ``metric``, ``weights`` (if any), ``backend``, ``batch_size``,
    ``n_jobs``, ``memory_budget``, ``out_of_core`` and, for radius queries,
    ``radius``.
    """

    #: Whether ``fit`` refuses a default number of neighbours larger than the
    #: training set (the seed classes' documented behaviour); the drop-in
    #: classes check it at query time, as scikit-learn does.
    _checks_k_at_fit = True

    def _default_k(self) -> int:
        """The number of neighbours a query returns by default."""
        return self.num_neighbors

    def _engine_metric(self) -> str:
        """The search engine's metric name (one of :data:`~knn_gpu._lib.validation.METRICS` or the direct ones)."""
        return self.metric

    def _engine_p(self) -> float | None:
        """Minkowski's power for the engine (``metric="minkowski"``); None elsewhere."""
        return None

    def _engine_metric_params(self) -> dict | None:
        """The metric's parameters for the engine (``V``, ``VI``, a callable's keywords); None: none."""
        return None

    def _resolved_metric(self) -> Any:
        """The metric as the registry resolves it (:func:`knn_gpu._engine.metrics.resolve`), parameters checked."""
        return resolve(self._engine_metric(), self._engine_p(), self._engine_metric_params())

    def _feature_scale(self, num_features: int) -> np.ndarray | None:
        """Per-feature factors applied to the training rows and to every query, or None (no scaling).

        The drop-in classes return ``w ** (1 / p)`` for weighted Minkowski
        (``metric_params={"w": w}``): the unweighted metric of the scaled rows
        is then the weighted one. A float64 NumPy vector of ``num_features``
        values; :meth:`_fit_features` moves it to the model's device once.
        """
        return None

    # -- fitting ----------------------------------------------------------------
    def _check_params(self) -> None:
        """The constructor parameters that ``fit`` checks before any work (num_neighbors needs X)."""
        resolved = self._resolved_metric()  # the metric, p (the one rule) and metric_params, by the registry
        check_weights(getattr(self, "weights", "uniform"), resolved.name)
        check_batch_size(self.batch_size)
        check_n_jobs(self.n_jobs)
        check_memory_budget(self.memory_budget)
        check_out_of_core(self.out_of_core)

    def _fit_features(self, X: Any) -> tuple[Any, NeighborsIndex]:
        """Validate parameters and ``X``, place ``X`` on the backend, build the index (the engine's front door).

        Out of core (see ``out_of_core``), ``X`` stays where it is, in host
        memory, and the index streams it (its plan is ``"streamed"``).
        """
        self._check_params()
        names = feature_names_of(X)
        precomputed = self._engine_metric() == "precomputed"
        graph = precomputed and is_sparse(X)
        entry = lookup(self._engine_metric())
        X = as_feature_matrix(X, "X", distances=precomputed, allow_nan=entry.allows_nan)
        check_input_for(entry, X, "X", features=False)
        if precomputed:
            check_square_distances(X, "X")
        # A sparse precomputed graph: the fewest neighbours a training row stores, for queries of X=None.
        self._fit_stored = fewest_stored_per_row(X, array_api_compat.array_namespace(X)) if graph else None
        if self._checks_k_at_fit:
            check_num_neighbors(self._default_k(), X.shape[0])
        self._fit_feature_names = names
        xp, device = resolve_backend(self.backend, X)
        if device is None:
            device = array_api_compat.device(X) if array_api_compat.array_namespace(X) is xp else None
        anchor = xp.zeros((0,), device=device)  # the compute namespace and device, as an array
        dtype = floating_dtype(dtype_in(xp, X.dtype), xp, array_api_compat.device(anchor))
        scale = None if precomputed else self._feature_scale(X.shape[1])
        self._scale = None if scale is None else xp.asarray(scale, dtype=dtype, device=array_api_compat.device(anchor))
        if self._streams(X, anchor, dtype):
            if entry.prepare is not None:
                # Each chunk is searched on its own: V, VI (or a callable's check) would be the chunk's, not X's.
                msg = (
                    f"metric={self.metric!r} has no out-of-core search (its parameters come from all the training "
                    "rows); set out_of_core=False, or give the training rows on the queries' device"
                )
                raise ValueError(msg)
            # Out of core the rows stay in host memory: weighted, a scaled host copy of them does.
            rows = X if scale is None else _scaled_host_rows(X, scale)
            self._engine_X = None
            return None, build_neighbors_index(
                rows,
                self._engine_metric(),
                p=self._engine_p(),
                stream=True,
                anchor=xp.astype(anchor, dtype),
                dtype=dtype,
                memory_budget=self.memory_budget,
            )
        X = xp.astype(move_to(X, xp, array_api_compat.device(anchor)), dtype, copy=False)
        # The engine searches the scaled rows; _fit_X keeps the caller's (scikit-learn's _fit_X, reused by
        # fit(other_model) and the graph functions as rows in the caller's units).
        self._engine_X = X if self._scale is None else X * self._scale
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape(SEMI_METRIC_WARNING))  # warned by _check_params
            resolved = self._resolved_metric()
        # backend=None on CPU torch tensors: NumPy searches views of them (faster); backend='torch' forces torch.
        return X, build_neighbors_index(self._engine_X, resolved, host_views=self.backend is None)

    def _streams(self, X: Any, anchor: Any, dtype: Any) -> bool:
        """Keep ``X`` in host memory? Always if ``out_of_core``; if None, when it would not fit on the GPU."""
        if self.out_of_core is not None:
            return self.out_of_core
        xp, device = array_api_compat.array_namespace(anchor), array_api_compat.device(anchor)
        if not is_host_array(X) or not is_gpu(xp, device):
            return False
        with device_scope(xp, device):
            budget = stream_budget(self.memory_budget, xp, device)
        # The stored rows and the copies made while building them.
        return 2 * X.shape[0] * (X.shape[1] + 1) * dtype_itemsize(xp, dtype) > budget

    def _store_fit(self, X: Any, index: NeighborsIndex) -> None:
        names = getattr(self, "_fit_feature_names", None)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._fit_X = X
        self._index = index
        self.n_features_in_ = index.num_features
        self.n_samples_fit_ = index.num_samples

    def _check_fitted(self) -> NeighborsIndex | None:
        index = getattr(self, "_index", None)
        if index is None:
            msg = (
                f"This {type(self).__name__} instance is not fitted yet; call "
                "fit(X, y) with training data before using it"
            )
            raise not_fitted_error(msg)
        return index

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` has run (scikit-learn's ``check_is_fitted`` asks this)."""
        return getattr(self, "_index", None) is not None

    # -- neighbour queries --------------------------------------------------------
    def _neighbors_on_backend(
        self, X: Any, num_neighbors: Any, reduce: Any = None, reduce_bytes_per_query: int = 0
    ) -> tuple[tuple, Any]:
        """The search on the model's backend: ``(result, validated X)``.

        ``result`` is ``(distances, indices)``, or with ``reduce`` what
        ``reduce(distances, indices)`` returns, computed batch by batch inside
        the search so that its temporaries (``reduce_bytes_per_query`` per
        query, counted in the memory budget) never exist for all queries at
        once. ``X=None`` means the training set itself, each point excluding
        itself (no ``reduce`` then).
        """
        index = self._check_fitted()
        if num_neighbors is None:
            num_neighbors = self._default_k()
        batch_rows = check_batch_size(self.batch_size)
        n_jobs = check_n_jobs(self.n_jobs)
        search = functools.partial(index.kneighbors, memory_budget=check_memory_budget(self.memory_budget))
        if X is None:
            k = check_num_neighbors(num_neighbors, index.num_samples - 1)
            if getattr(self, "_fit_stored", None) is not None:
                check_stored_neighbors(self._fit_stored, k + 1)  # each point is found among its own, then dropped
            return self._leave_one_out(index, k, search, batch_rows=batch_rows, n_jobs=n_jobs), None
        k = check_num_neighbors(num_neighbors, index.num_samples)
        X, queries = self._validated_queries(X, index, k)
        result = search(
            queries,
            k,
            batch_rows=batch_rows,
            n_jobs=n_jobs,
            reduce=reduce,
            reduce_bytes_per_query=reduce_bytes_per_query,
        )
        return result, X

    def _predict_on_backend(
        self, X: Any, values: Any, *, num_classes: int | None = None, winners_only: bool = False
    ) -> tuple[Any, Any]:
        """Each query's reduction of its neighbours' ``values`` on the model's backend, and the validated ``X``.

        The (weighted) mean of per-row targets, or with ``num_classes`` the
        vote shares of per-row class codes (``winners_only``: the winning
        codes): :meth:`knn_gpu._engine.index.NeighborsIndex.predict`, on
        every plan.
        """
        index = self._check_fitted()
        k = check_num_neighbors(self._default_k(), index.num_samples)
        X, queries = self._validated_queries(_require_queries(X), index, k)
        result = index.predict(
            queries,
            k,
            values,
            weights=check_weights(self.weights, self._engine_metric()),
            num_classes=num_classes,
            winners_only=winners_only,
            batch_rows=check_batch_size(self.batch_size),
            n_jobs=check_n_jobs(self.n_jobs),
            memory_budget=check_memory_budget(self.memory_budget),
        )
        return result, X

    def _validated_queries(self, X: Any, index: Any, k: int | None = None) -> tuple[Any, Any]:
        """``(X, queries)``: ``X`` checked as the model's queries, and its copy on the model's backend and dtype.

        Feature names, sparse rules, and for ``metric="precomputed"``
        distances (a sparse graph read as scikit-learn reads one, holding at
        least ``k`` neighbours per row for a k-search; ``k=None`` for radius
        queries).
        """
        check_feature_names(self, X)
        self._check_sparse_queries(X)
        precomputed = self._engine_metric() == "precomputed"
        graph = precomputed and is_sparse(X)
        entry = lookup(self._engine_metric())
        X = as_feature_matrix(X, "X", allow_empty=True, distances=precomputed, allow_nan=entry.allows_nan)
        check_input_for(entry, X, "X")
        if precomputed:
            check_nonnegative_distances(X, "X")
        if graph and k is not None:
            check_stored_neighbors(fewest_stored_per_row(X, array_api_compat.array_namespace(X)), k)
        queries = prepare_queries(
            move_to(X, index.xp, index.device),
            index.num_features,
            index.dtype,
            xp=index.xp,
            expected_by=type(self).__name__,
        )
        scale = getattr(self, "_scale", None)
        if scale is not None:
            queries = queries * scale  # a new array: the caller's X is never written
        return X, queries

    def _check_sparse_queries(self, X: Any) -> None:
        """Refuse sparse queries where the model cannot take them (the drop-in classes' tree algorithms); here: never."""

    def _leave_one_out(self, index: NeighborsIndex, k: int, search: Any, **options: Any) -> tuple[Any, Any]:
        """Each training point's k nearest others; out of core, the training rows are the queries chunk by chunk."""
        xp = index.xp
        if index.plan == "dask":
            msg = "kneighbors(X=None) is not supported on a model fitted on Dask arrays; pass X"
            raise ValueError(msg)
        if index.plan != "streamed":
            distances, indices = search(self._engine_X, k + 1, **options)
            return _exclude_self(distances, indices, k, xp=xp)
        streamed = index.store
        step = chunk_rows_for(
            index.num_features,
            dtype_itemsize(xp, index.dtype),
            stream_budget(streamed.memory_budget, xp, index.device),
        )
        pieces = []
        for start in range(0, index.num_samples, step):
            queries = upload(streamed.rows[start : start + step, ...], streamed.anchor, index.dtype)
            distances, indices = search(queries, k + 1, **options)
            pieces.append(_exclude_self(distances, indices, k, xp=xp, first_row=start))
        if len(pieces) == 1:
            return pieces[0]
        return tuple(xp.concat(parts, axis=0) for parts in zip(*pieces))

    def _like_input(self, result: Any, X: Any) -> Any:
        """``result`` in the namespace and on the device of ``X`` (the fit data if None)."""
        return result if X is None else convert_like(result, X)

    def _kneighbors(self, X: Any, num_neighbors: int | None, return_distance: bool) -> Any:
        """``(distances, indices)`` (or ``indices``) of the ``num_neighbors`` nearest, in the namespace of ``X``.

        Public distances (the metric's units).
        """
        (distances, indices), X = self._neighbors_on_backend(X, num_neighbors)
        indices = self._like_input(indices, X)
        if not return_distance:
            return indices
        return self._like_input(public_distances(distances, self._engine_metric()), X), indices

    def _radius_flat(self, X: Any, radius: Any, sort_results: bool = False) -> tuple[Any, Any, Any, Any]:
        """The radius search: ``(distances, indices, offsets, validated X)`` on the model's backend.

        The one place the estimators reach the radius engine (the matrix-product
        or direct engine on the index in memory, the streamed one out of core).
        ``X=None``: each training row against the others (leave-one-out).
        ``radius=None``: the model's ``radius``.
        """
        index = self._check_fitted()
        if index is None:
            msg = (
                f"radius queries of {type(self).__name__} need the training rows in memory or streamed from it; "
                "this model was fitted on Dask arrays (pass X.compute())"
            )
            raise ValueError(msg)
        if index.plan == "streamed" and X is None:
            msg = (
                f"radius queries of {type(self).__name__} without X (each training point against the others) need the "
                "training rows in memory; this model was fitted out of core: pass the rows as X"
            )
            raise ValueError(msg)
        if lookup(self._engine_metric()).similarity:
            msg = f"metric={self.metric!r} has no radius search (a similarity, not a distance); use another metric"
            raise ValueError(msg)
        radius = check_radius(self.radius if radius is None else radius)
        xp = index.xp
        if X is None:
            queries = self._engine_X
        else:
            X, queries = self._validated_queries(X, index)
        if not isinstance(radius, float):
            check_radius_shape(radius, queries.shape[0])
        distances, indices, offsets = index.radius(
            queries,
            radius,
            sort_results=sort_results,
            batch_rows=check_batch_size(self.batch_size),
            memory_budget=check_memory_budget(self.memory_budget),
        )
        if X is None:
            distances, indices, offsets = exclude_self_flat(distances, indices, offsets, xp=xp)
        return distances, indices, offsets, X

    def _weights_for(self, distances: Any) -> Any:
        return neighbor_weights(
            distances,
            check_weights(self.weights, self._engine_metric()),
            xp=self._index.xp,
            metric=self._engine_metric(),
        )


def _scaled_host_rows(X: Any, scale: np.ndarray) -> np.ndarray:
    """A host copy of ``X`` times ``scale`` per feature (float64 unless ``X`` is float32), for out-of-core fits."""
    rows = np.asarray(to_host(X))
    dtype = rows.dtype if rows.dtype == np.float32 else np.float64
    return rows.astype(dtype, copy=False) * scale.astype(dtype)


def _host_vector(example: Any, name: str) -> np.ndarray:
    """A 1-D example as a float64 NumPy vector (validated like a one-row matrix)."""
    host = to_host(example) if array_api_compat.is_array_api_obj(example) else example
    if host is not None and np.ndim(host) != 1:
        msg = f"{name} must be 1-D (one example), got shape {np.shape(host)}"
        raise ValueError(msg)
    matrix = as_feature_matrix(np.reshape(host, (1, -1)) if host is not None else None, name)
    return np.asarray(matrix, dtype=np.float64)[0]


def _require_queries(X: Any) -> Any:
    if X is None:
        msg = "X must be an array of queries, got None"
        raise TypeError(msg)
    return X


def _exclude_self(distances: Any, indices: Any, k: int, *, xp: Any, first_row: int = 0) -> tuple[Any, Any]:
    """Drop each training point (row ``first_row + i`` of the results) from its own ``k + 1`` neighbours.

    A point may be missing from its own ``k + 1`` nearest. With more exact
    duplicates than ``k`` (ties go to lower indices), all ``k + 1`` are tied
    with it, and the first one is dropped, as scikit-learn's
    ``kneighbors(X=None)`` does ("mask the first duplicate"). Otherwise (with
    ``metric="inner_product"`` another row can score higher than the point
    itself) the ``k + 1`` are not all tied and the last one is dropped, which
    keeps the ``k`` best others.
    """
    rows = indices.shape[0]
    device = array_api_compat.device(indices)
    own = xp.arange(first_row, first_row + rows, dtype=indices.dtype, device=device)[:, None]
    is_self = indices == own
    has_self = xp.any(is_self, axis=1, keepdims=True)
    column = xp.arange(k + 1, dtype=indices.dtype, device=device)[None, :]
    all_tied = distances[:, :1] == distances[:, k : k + 1]
    keep = ~is_self & (has_self | xp.where(all_tied, column > 0, column < k))
    columns = columns_of_true(keep, k, xp=xp)
    return xp.take_along_axis(distances, columns, axis=1), xp.take_along_axis(indices, columns, axis=1)


class _TutorialEstimator(_NeighborsBase):
    """The tutorial classes' constructor and estimator protocol, without scikit-learn.

    The scikit-learn-named classes take the protocol from scikit-learn's
    ``BaseEstimator`` instead; these classes must work where scikit-learn is
    not installed.
    """

    def __init__(
        self,
        num_neighbors: int = 5,
        *,
        weights: str | Callable = "uniform",
        metric: str = "euclidean",
        backend: str | None = None,
        batch_size: int | None = None,
        n_jobs: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        self.num_neighbors = num_neighbors
        self.weights = weights
        self.metric = metric
        self.backend = backend
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.memory_budget = memory_budget
        self.out_of_core = out_of_core

    # -- the estimator protocol -------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> _TutorialEstimator:
        """Set constructor parameters; unknown names raise ``ValueError``."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                msg = f"invalid parameter {name!r} for {type(self).__name__}; valid parameters: {valid}"
                raise ValueError(msg)
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if defaults[name].default is not value and defaults[name].default != value
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def kneighbors(self, X: Any = None, num_neighbors: int | None = None, return_distance: bool = True) -> Any:
        """The nearest training rows of each row of ``X``.

        Parameters
        ----------
        X : array or sparse matrix, shape (n_queries, n_features), optional
            Queries. ``None`` queries the training set itself, and a point is
            never its own neighbour (its exact duplicates may be). Sparse
            queries are densified per call; the results are then arrays of
            their library (NumPy for SciPy). With ``metric="precomputed"`` a
            sparse ``X`` is a neighbour graph: stored entries are distances,
            missing entries are no neighbours.
        num_neighbors : int, optional
            Defaults to the model's ``num_neighbors``.
        return_distance : bool
            Return ``(distances, indices)`` if True, else only ``indices``.

        Returns
        -------
        distances : array, shape (n_queries, num_neighbors)
            In the metric's units, ascending (for ``metric="inner_product"``,
            the inner products, descending); equal values list the lower
            training index first.
        indices : array of int64, shape (n_queries, num_neighbors)
            In the namespace and on the device of ``X``.
        """
        return self._kneighbors(X, num_neighbors, return_distance)

    def get_distance(self, first: Any, second: Any) -> float:
        """The model's ``metric`` between two 1-D examples (the tutorial's helper), in float64.

        The same distance as :meth:`get_neighbors` reports for the pair (for
        ``metric="inner_product"``, their inner product). ``"precomputed"``
        has no distance between examples: ``ValueError``.

        Examples
        --------
        >>> from knn_gpu import KNN
        >>> KNN().get_distance([0.0, 3.0], [4.0, 0.0])
        5.0
        >>> KNN(metric="manhattan").get_distance([0.0, 0.0], [3.0, 4.0])
        7.0
        """
        from .._api.neighbors import kneighbors as functional_kneighbors

        metric = self._engine_metric()
        if metric == "precomputed":
            msg = 'get_distance needs examples, not distances: metric="precomputed" has no distance between examples'
            raise ValueError(msg)
        pair = [_host_vector(first, "first"), _host_vector(second, "second")]
        if pair[0].shape != pair[1].shape:
            msg = f"first and second must have the same length, got {pair[0].shape[0]} and {pair[1].shape[0]}"
            raise ValueError(msg)
        distances, _ = functional_kneighbors(
            pair[0][None, :],
            pair[1][None, :],
            1,
            metric=metric,
            p=self._engine_p(),
            metric_params=self._engine_metric_params(),
        )
        return float(distances[0, 0])

    def get_neighbors(self, example: Any) -> list[tuple[int, float]]:
        """The tutorial's contract: ``[(index, distance), ...]`` for one example.

        Nearest first, ``num_neighbors`` entries, Python ``int`` and ``float``
        (this copies the small result to the host).
        """
        self._check_fitted()
        (distances, indices), _ = self._neighbors_on_backend(_host_vector(example, "example")[None, :], None)
        distances = public_distances(distances, self._engine_metric())
        return [(int(i), float(d)) for i, d in zip(to_host(indices)[0].tolist(), to_host(distances)[0].tolist())]


class KNN(_TutorialEstimator):
    """k-nearest-neighbours regressor: the mean of the neighbours' targets.

    Parameters
    ----------
    num_neighbors : int, default 5
    weights : {"uniform", "distance"} or callable, default "uniform"
        ``"distance"`` weighs by ``1 / d`` (only the neighbours at distance 0
        count where there are any); a callable maps the distance array (for
        ``metric="inner_product"``, the inner products) to weights of the
        same shape. ``"distance"`` with ``"inner_product"`` raises
        ``ValueError`` at ``fit``.
    metric : str, BlockMetric or callable, default "euclidean"
        Any metric of knn_gpu's table (the guide's Metrics page; its
        default parameters: ``"seuclidean"`` and ``"mahalanobis"`` take the
        training rows' variance and inverse covariance). ``"inner_product"``:
        the neighbours are the training rows with the largest inner product
        (maximum inner product search).
    backend : {None, "auto", "numpy", "cupy", "torch", "torch:cuda", "torch:cuda:N", "array_api_strict"}
        ``None`` computes where the training data lives (CPU torch tensors
        are searched by NumPy on zero-copy views of them, faster than
        torch's CPU kernels; the fitted rows stay tensors); a name moves it
        there at ``fit`` (``"torch"`` is torch on the CPU and its kernels, ``"torch:cuda"``
        on the current CUDA device); ``"auto"`` picks CuPy when a GPU is
        usable, else torch on CUDA, else NumPy. Queries may come in any
        namespace, even under scikit-learn's ``array_api_dispatch=True``
        (unlike the drop-in classes): they are moved to the backend and the
        results come back in the namespace of the queries.
    batch_size : int, optional
        Queries per batch (default: from ``memory_budget``).
    n_jobs : int, optional
        Threads for the NumPy backend, as in :func:`knn_gpu.kneighbors`:
        None (default) uses every core for searches large enough to gain,
        unlike scikit-learn's None (one); -1 every core; 1 one thread.
        Other backends ignore it.
    memory_budget : int, optional
        Bytes that a search's temporaries may take (and, out of core, the
        chunk of training rows on the device): default 256 MiB on the host,
        half the free memory of the GPU.
    out_of_core : bool, optional
        Keep the training data in host memory and stream it through the GPU
        at every search: ``True`` always, ``False`` never, ``None`` (default)
        when host data would not fit in half the GPU's free memory.

    Attributes
    ----------
    n_features_in_ : int
    n_samples_fit_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import KNN
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0]])
    >>> y = np.array([0.0, 1.0, 2.0, 10.0])
    >>> KNN(num_neighbors=2).fit(X, y).predict(np.array([[0.4], [9.0]]))
    array([0.5, 6. ])
    """

    def __init__(
        self,
        num_neighbors: int = 5,
        *,
        weights: str | Callable = "uniform",
        metric: str = "euclidean",
        backend: str | None = None,
        batch_size: int | None = None,
        n_jobs: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        # Its own signature, so that a wrong keyword's TypeError names KNN, not a private base.
        super().__init__(
            num_neighbors,
            weights=weights,
            metric=metric,
            backend=backend,
            batch_size=batch_size,
            n_jobs=n_jobs,
            memory_budget=memory_budget,
            out_of_core=out_of_core,
        )

    def fit(self, X: Any, y: Any) -> KNN:
        """Store the training data on the chosen backend.

        Parameters
        ----------
        X : array or sparse matrix, shape (n_samples, n_features)
            Half-precision rows (float16, torch's bfloat16) are kept as
            given; distances and predictions are then float32. A sparse
            matrix (SciPy, ``cupyx.scipy.sparse``, torch) is densified as
            it enters, as are sparse queries (missing features are 0).
        y : array, shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        X_fit, index = self._fit_features(X)
        y = as_targets(y, "y", index.num_samples)
        xp_targets = index.xp.astype(move_to(y, index.xp, index.device), distance_dtype_for(index.dtype, index.xp))
        if xp_targets.ndim == 1:
            xp_targets = xp_targets[:, None]
        self._store_fit(X_fit, index)
        self._targets = xp_targets
        self._targets_1d = y.ndim == 1
        return self

    def predict(self, X: Any) -> Any:
        """Mean (weighted by ``weights``) of the neighbours' targets.

        Returns
        -------
        array, shape (n_queries,) or (n_queries, n_outputs)
            In the namespace and on the device of ``X``.
        """
        self._check_fitted()
        prediction, X = self._predict_on_backend(X, self._targets)
        if self._targets_1d:
            prediction = prediction[:, 0]
        return self._like_input(prediction, X)

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination R² (averaged over outputs)."""
        predicted = to_host(self.predict(X)).astype(np.float64)
        truth = to_host(as_targets(y, "y", predicted.shape[0])).astype(np.float64)
        predicted = predicted.reshape(truth.shape)
        residual = ((truth - predicted) ** 2).sum(axis=0)
        total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
        safe_total = np.where(total == 0, 1.0, total)
        r2 = np.where(total == 0, np.where(residual == 0, 1.0, 0.0), 1 - residual / safe_total)
        return float(np.mean(r2))

    def __sklearn_tags__(self) -> Any:
        from .sklearn_tags import estimator_tags

        return estimator_tags(self, "regressor")


class KNNClassifier(_TutorialEstimator):
    """k-nearest-neighbours classifier: a (weighted) majority vote.

    Parameters are those of :class:`KNN`. A tied vote goes to the smallest
    class label, as in scikit-learn.

    Attributes
    ----------
    classes_ : array, shape (n_classes,)
        Sorted class labels. Labels may be anything NumPy can sort (strings
        too); labels given on a device stay there (numeric only).
    n_features_in_ : int
    n_samples_fit_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import KNNClassifier
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    >>> y = np.array(["low", "low", "low", "high", "high"])
    >>> KNNClassifier(num_neighbors=3).fit(X, y).predict(np.array([[0.5], [10.5]]))
    array(['low', 'high'], dtype='<U4')
    """

    def __init__(
        self,
        num_neighbors: int = 5,
        *,
        weights: str | Callable = "uniform",
        metric: str = "euclidean",
        backend: str | None = None,
        batch_size: int | None = None,
        n_jobs: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        # Its own signature, so that a wrong keyword's TypeError names KNNClassifier, not a private base.
        super().__init__(
            num_neighbors,
            weights=weights,
            metric=metric,
            backend=backend,
            batch_size=batch_size,
            n_jobs=n_jobs,
            memory_budget=memory_budget,
            out_of_core=out_of_core,
        )

    def fit(self, X: Any, y: Any) -> KNNClassifier:
        """Store the training data and encode the labels.

        String or other host labels are encoded on the host; numeric labels
        given on a device are encoded there, without a copy to the host.
        """
        X_fit, index = self._fit_features(X)
        labels = as_targets(y, "y", index.num_samples, numeric=False)
        classes, codes = encode_class_labels(labels, index)
        self._store_fit(X_fit, index)
        self.classes_ = classes
        self._codes = codes
        return self

    def predict_proba(self, X: Any) -> Any:
        """Share of (weighted) votes per class, columns in ``classes_`` order."""
        votes, X = self._votes_on_backend(X)
        return self._like_input(votes, X)

    def _votes_on_backend(self, X: Any, *, winners_only: bool = False) -> tuple[Any, Any]:
        """Vote shares (or, with ``winners_only``, the winning class codes) on the model's backend, and ``X``.

        Votes are counted per batch inside the search: the one-hot
        ``(rows, k, n_classes)`` temporaries are counted in the memory
        budget, and ``predict`` keeps only each batch's winners.
        """
        self._check_fitted()
        return self._predict_on_backend(X, self._codes, num_classes=self.classes_.shape[0], winners_only=winners_only)

    def predict(self, X: Any) -> Any:
        """The class with most (weighted) votes; ties to the smallest label."""
        winners, X_checked = self._votes_on_backend(X, winners_only=True)
        return decode_class_labels(winners, self.classes_, X_checked)

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy."""
        predicted = to_host(self.predict(X))
        truth = to_host(as_targets(y, "y", predicted.shape[0], numeric=False))
        return float(np.mean(predicted == truth))

    def __sklearn_tags__(self) -> Any:
        from .sklearn_tags import estimator_tags

        return estimator_tags(self, "classifier")
