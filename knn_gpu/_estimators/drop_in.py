"""scikit-learn's neighbours estimators under their own names, built on scikit-learn's own base classes.

``NearestNeighbors``, ``KNeighborsClassifier``, ``KNeighborsRegressor``,
``KNeighborsTransformer`` and :func:`kneighbors_graph` (the radius classes are
in :mod:`knn_gpu._estimators.drop_in_radius`) take scikit-learn 1.9's parameters, defaults,
fitted attributes, return types, warnings and errors, so that replacing ``from
sklearn.neighbors import ...`` by ``from knn_gpu import ...`` changes where the
search runs, not the answers.

The shape is scikit-learn's ``sklearn/neighbors/_base.py``: one base that fits
and validates (:class:`_DropInBase`: scikit-learn's ``BaseEstimator`` and
declarative ``_parameter_constraints`` over knn_gpu's engine base
:class:`knn_gpu._estimators.knn._NeighborsBase`), a k-query mixin
(:class:`_KNeighborsMixin`: ``kneighbors``, ``kneighbors_graph``), a radius-query
mixin (:class:`_RadiusNeighborsMixin`: ``radius_neighbors``,
``radius_neighbors_graph``), and thin public classes that add only their
reduction (vote, mean, graph). So ``get_params``/``set_params``, ``clone``,
the HTML repr, tags, metadata routing (``set_score_request``...) and
``set_output`` (the transformers) are scikit-learn's own and follow its
versions. This module imports scikit-learn: ``import knn_gpu`` does not (the
top-level names load it on first use), and without scikit-learn touching one
of these classes raises one ``ImportError`` naming the extra to install.

Input validation stays knn_gpu's (:mod:`knn_gpu._lib.validation`): scikit-learn's
``validate_data`` would convert GPU arrays to NumPy. It follows scikit-learn's
semantics (feature names of pandas and polars frames, their order and count,
``n_features_in_``), and results stay in the input's namespace and on its
device.

Every ``algorithm`` ("auto", "brute", "kd_tree", "ball_tree") gives the same
exact brute-force neighbours (``_fit_method == "brute"``); ``leaf_size`` is
accepted and unused. Metrics: ``"minkowski"`` (any ``p > 0``; ``p=2``, the
default, is the matrix-product path), ``"euclidean"``/``"l2"``,
``"sqeuclidean"``, ``"cosine"``, knn_gpu's ``"inner_product"``, the
directly computed ``"manhattan"``/``"l1"``/``"cityblock"``,
``"chebyshev"``/``"infinity"`` and ``"precomputed"``, and every other metric
of scikit-learn's brute force, callables and DistanceMetric objects included
(the registry, :mod:`knn_gpu._engine.metrics`, which ``metric`` and
``metric_params`` are looked up in); weighted Minkowski
(``metric_params={"w": w}``) searches the rows scaled by ``w ** (1/p)``.
Any other metric is the registry's ``ValueError``.

Namespaces and devices follow scikit-learn's array API conventions. Results
are in the namespace and on the device of the queries. Under scikit-learn's
``array_api_dispatch=True`` (``sklearn.set_config``), a query in another
namespace or on another device than the ``X`` given to ``fit`` raises
``ValueError``, as scikit-learn's own estimators do; lists, DataFrames and
SciPy sparse matrices count as NumPy, and the namespace of ``fit`` is the
caller's, so a model fitted on NumPy with ``backend="torch"`` takes NumPy
queries. Without that setting, queries in any namespace are moved to the
model's backend. The transformers return CSR graphs (SciPy's, cupyx's for
CuPy), not arrays of the namespace of ``X``, and so do not declare scikit-learn's
``array_api_support`` tag; the other classes do.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any

import array_api_compat
import numpy as np

try:
    import sklearn
    from sklearn.base import (
        BaseEstimator,
        ClassifierMixin,
        ClassNamePrefixFeaturesOutMixin,
        MultiOutputMixin,
        RegressorMixin,
        TransformerMixin,
    )

    # scikit-learn's own mixins, so that issubclass(cls, KNeighborsMixin) holds as for its classes; every
    # public method of theirs is overridden below (they would search with scikit-learn's engine).
    from sklearn.neighbors._base import KNeighborsMixin as _SklearnKNeighborsMixin
    from sklearn.neighbors._base import NeighborsBase as _SklearnNeighborsBase
    from sklearn.neighbors._base import RadiusNeighborsMixin as _SklearnRadiusNeighborsMixin
    from sklearn.utils._param_validation import Interval, StrOptions
except ImportError as error:  # pragma: no cover - exercised in a subprocess by tests/test_optional_dependencies.py
    raise ImportError(
        "knn_gpu's scikit-learn-named classes (NearestNeighbors, KNeighborsClassifier, ..., kneighbors_graph) are "
        'built on scikit-learn: pip install "knn-gpu[sklearn]" (scikit-learn and SciPy). knn_gpu.KNN, '
        "knn_gpu.KNNClassifier and the functions (knn_gpu.kneighbors, knn_gpu.radius_neighbors) need neither"
    ) from error

from .._engine.labels import decode_class_labels, encode_class_labels
from .._engine.metrics import BlockMetric, lookup
from .._engine.predictions import ALL_ZERO_WEIGHTS, all_zero_rows, class_votes, weighted_mean
from .._engine.radius_queries import GRAPH_MODES, csr_from_flat, per_query
from .._lib.backends import convert_like, move_to, to_host
from .._lib.devices import read_counts
from .._lib.sparse_input import is_sparse
from .._lib.validation import _from_library, as_targets, distance_dtype_for, exact_dtype, refuse_dask
from .knn import _NeighborsBase

__all__ = [
    "NearestNeighbors",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KNeighborsTransformer",
    "kneighbors_graph",
]

_SKLEARN_METRICS = next(c for c in _SklearnNeighborsBase._parameter_constraints["metric"] if isinstance(c, StrOptions))

#: scikit-learn's constraints (its NeighborsBase's, so they follow its versions), with knn_gpu's metric and options.
BASE_CONSTRAINTS: dict = {
    **_SklearnNeighborsBase._parameter_constraints,
    # scikit-learn's metrics (names, callables, DistanceMetric objects), knn_gpu's inner_product and BlockMetric.
    "metric": [
        StrOptions(set(_SKLEARN_METRICS.options) | {"inner_product"}),
        *(c for c in _SklearnNeighborsBase._parameter_constraints["metric"] if not isinstance(c, StrOptions)),
        BlockMetric,
    ],
    "backend": [str, None],
    "batch_size": [Interval(Integral, 1, None, closed="left"), None],
    "memory_budget": [Interval(Integral, 1, None, closed="left"), None],
    "out_of_core": ["boolean", None],
}
WEIGHTS_CONSTRAINT = [StrOptions({"uniform", "distance"}), callable, None]


def _namespace_and_device(X: Any) -> tuple[str, str]:
    """The array library and device of ``X`` as names; lists, DataFrames and SciPy sparse count as NumPy."""
    if not array_api_compat.is_array_api_obj(X) or isinstance(X, np.ndarray):
        return "numpy", "cpu"
    name = array_api_compat.array_namespace(X).__name__.removeprefix("array_api_compat.")
    return name, str(array_api_compat.device(X))


def _array_api_dispatch() -> bool:
    """Whether scikit-learn's ``array_api_dispatch=True`` is set."""
    return bool(sklearn.get_config().get("array_api_dispatch", False))


class _DropInBase(_NeighborsBase, MultiOutputMixin, BaseEstimator):
    """scikit-learn's ``NeighborsBase`` on knn_gpu's engine: parameters, validation and fit.

    The estimator protocol, tags, repr and metadata routing are scikit-learn's
    (``BaseEstimator``); the parameters are checked by scikit-learn's
    ``_parameter_constraints`` at ``fit``, then by knn_gpu's own rules for what
    its engine computes (:meth:`_check_params`).
    """

    _parameter_constraints: dict = BASE_CONSTRAINTS
    _checks_k_at_fit = False  # as scikit-learn: n_neighbors is checked against n_samples_fit_ at query time
    #: Whether every output is an array of the namespace and on the device of X (scikit-learn's
    #: array_api_support tag). The transformers' output is a sparse graph: SciPy CSR (cupyx CSR for CuPy), and
    #: the array API standard has no sparse arrays, so they do not declare it.
    _outputs_in_input_namespace = True

    def __init__(
        self,
        n_neighbors: int | None = None,
        radius: float | None = None,
        algorithm: str = "auto",
        leaf_size: int = 30,
        metric: str = "minkowski",
        p: float = 2,
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.metric = metric
        self.p = p
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.backend = backend
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.out_of_core = out_of_core

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified as it enters (knn_gpu.sparse_input)
        # For cross-validation routines to split precomputed distances correctly, as scikit-learn's.
        tags.input_tags.pairwise = self.metric == "precomputed"
        tags.input_tags.positive_only = tags.input_tags.pairwise
        tags.input_tags.allow_nan = False
        tags.array_api_support = self._outputs_in_input_namespace
        return tags

    def _default_k(self) -> int:
        return self.n_neighbors

    def _engine_metric(self) -> str:
        return _engine_metric_of(self.metric, self._effective_p())

    def _effective_p(self) -> Any:
        return (self.metric_params or {}).get("p", self.p)

    def _engine_metric_params(self) -> dict | None:
        """``metric_params`` for the registry: the metric's own (``V``, ``VI``, a callable's keywords); ``p`` and ``w`` are read apart."""
        params = dict(self.metric_params or {})
        if isinstance(self.metric, str):
            params.pop("p", None)
            params.pop("w", None)
        return params or None

    def _engine_p(self) -> float | None:
        return self._effective_p() if self._engine_metric() == "minkowski" else None

    def _minkowski_weights(self) -> Any:
        """``metric_params["w"]`` as given for metric="minkowski", or None (unweighted)."""
        if self.metric != "minkowski":
            return None
        return (self.metric_params or {}).get("w")

    def _feature_scale(self, num_features: int) -> np.ndarray | None:
        """``w ** (1 / p)`` for weighted Minkowski: ``sum_i w_i |x_i - y_i|^p`` is the unweighted sum of the scaled rows."""
        w = self._minkowski_weights()
        if w is None:
            return None
        p = self._effective_p()
        p = 2.0 if p is None else float(p)  # p=None is the engine's p = 2
        return check_minkowski_weights(w, num_features) ** (1.0 / p)

    def _check_params(self) -> None:
        """knn_gpu's rules after scikit-learn's constraints: what the engine computes, and scikit-learn's own extra checks."""
        if self.metric_params is not None and "p" in self.metric_params and self.p is not None:
            warnings.warn(
                "Parameter p is found in metric_params. The corresponding parameter from __init__ is ignored.",
                SyntaxWarning,
                stacklevel=4,
            )
        entry = lookup(self.metric)  # the registry's ValueError for a metric it does not have
        if self.algorithm == "kd_tree" and entry.name == "callable" and callable(self.metric):
            msg = f"kd_tree does not support callable metric '{self.metric}': use algorithm='brute' or 'ball_tree'"
            raise ValueError(msg)
        if (
            self.algorithm in ("kd_tree", "ball_tree")
            and entry.name != "callable"
            and self.algorithm not in entry.trees
        ):
            # scikit-learn's refusal (knn_gpu builds no tree, but answers as scikit-learn does).
            msg = (
                f"Metric '{self.metric}' not valid. Use sorted(sklearn.neighbors.VALID_METRICS['{self.algorithm}']) "
                "to get valid options. Metric can also be a callable function."
            )
            raise ValueError(msg)
        supported = {"p", *entry.params}
        unsupported = sorted(set(self.metric_params or {}) - supported, key=str)
        if unsupported and entry.name != "callable":
            # Ignoring them would answer another metric's neighbours.
            msg = (
                f"metric_params {unsupported} are not parameters of metric={self.metric!r} "
                f"(its parameters: {', '.join(map(repr, sorted(supported)))})"
            )
            raise ValueError(msg)
        if self._minkowski_weights() is not None:
            if self.algorithm == "kd_tree":
                # scikit-learn's KDTree has no weighted Minkowski; its error, though knn_gpu builds no tree.
                msg = (
                    "algorithm='kd_tree' is not valid for metric='minkowski' with a weight parameter 'w': "
                    "try algorithm='ball_tree' or algorithm='brute' instead."
                )
                raise ValueError(msg)
            if self._effective_p() == math.inf:
                # scikit-learn's MinkowskiDistance refuses it too (at query time): w ** (1 / inf) is no weighting.
                msg = (
                    "metric_params['w'] needs a finite p: weighted Minkowski with p=inf is not defined (scikit-learn's "
                    "MinkowskiDistance refuses it too); scale the features by w yourself and use metric='chebyshev'"
                )
                raise ValueError(msg)
        effective_p = self._effective_p()
        if self.metric == "minkowski" and effective_p is not None and 0 < effective_p < 1:
            if self.algorithm in ("kd_tree", "ball_tree"):
                # scikit-learn's rule: its trees need a metric; knn_gpu builds none, but answers as scikit-learn.
                msg = (
                    f'algorithm="{self.algorithm}" does not support 0 < p < 1 for the Minkowski metric. To resolve '
                    'this problem either set p >= 1 or algorithm="brute".'
                )
                raise ValueError(msg)
        # The engine's own checks (metric, weights, p with its one rule for 0 < p < 1, knn_gpu's options).
        super()._check_params()

    def _fit_neighbors(self, X: Any) -> tuple[Any, Any]:
        """Validate, fit the engine, and set scikit-learn's fitted attributes.

        ``X`` may also be a fitted neighbours estimator (knn_gpu's or
        scikit-learn's) or a scikit-learn ``BallTree``/``KDTree``: their
        training rows are used, as scikit-learn does.
        """
        self._validate_params()
        refuse_dask(X, type(self).__name__)
        X = _training_rows_of(X)
        self._fit_sparse = is_sparse(X)
        if self._fit_sparse and self.algorithm not in ("auto", "brute"):
            warnings.warn("cannot use tree with sparse input: using brute force", UserWarning, stacklevel=3)
        if self._fit_sparse and not lookup(self.metric).sparse_input:
            msg = (
                f"Metric '{self.metric}' not valid for sparse input. Use "
                "sorted(sklearn.neighbors.VALID_METRICS_SPARSE['brute']) to get valid options. "
                "Metric can also be a callable function."
            )
            raise ValueError(msg)
        X_fit, index = self._fit_features(X)
        self._fit_namespace = _namespace_and_device(X)
        self.effective_metric_, self.effective_metric_params_ = _effective_metric(
            self.metric, self.metric_params, self.p
        )
        self._fit_method = "brute"
        return X_fit, index

    def _fit_unsupervised(self, X: Any) -> Any:
        X_fit, index = self._fit_neighbors(X)
        self._store_fit(X_fit, index)
        return self

    def _check_sparse_queries(self, X: Any) -> None:
        """scikit-learn's ``ValueError`` for sparse queries to a model fitted densely with a tree ``algorithm``.

        knn_gpu builds no tree and could answer, but scikit-learn refuses
        (its tree would be searched); after a sparse fit it searches by brute
        force, as knn_gpu always does, and takes them.
        """
        if is_sparse(X) and self.algorithm in ("kd_tree", "ball_tree") and not getattr(self, "_fit_sparse", False):
            msg = f"{self.algorithm} does not work with sparse matrices. Densify the data, or set algorithm='brute'"
            raise ValueError(msg)

    def _check_same_namespace(self, X: Any, method: str) -> None:
        """scikit-learn's rule under ``array_api_dispatch=True``: queries in the namespace and on the device of fit's X.

        The namespace is the caller's, not the backend's: a model fitted on
        NumPy with ``backend="torch"`` takes NumPy queries. Without
        ``array_api_dispatch``, queries in any namespace are moved to the
        model's backend, and results come back in the namespace of the queries.
        """
        if X is None or not _array_api_dispatch():
            return
        fitted = getattr(self, "_fit_namespace", ("numpy", "cpu"))
        given = _namespace_and_device(X)
        if given == fitted:
            return
        owner = type(self).__name__
        msg = (
            f"Inputs passed to {owner}.{method}() must use the same namespace and the same device as those "
            f"passed to fit() while scikit-learn's array_api_dispatch is on: fit got {fitted[0]} on device "
            f"{fitted[1]}, {method}() got {given[0]} on device {given[1]} (lists, DataFrames and SciPy sparse "
            f"matrices count as numpy). Move X to {fitted[0]} on device {fitted[1]}, or fit {owner} on data in "
            f"{given[0]} on device {given[1]}."
        )
        raise ValueError(msg)


class _KNeighborsMixin(_SklearnKNeighborsMixin):
    """scikit-learn's ``KNeighborsMixin``: the k-neighbour queries, through the base's one k-search."""

    def _query_k(self, X: Any, n_neighbors: Any) -> int:
        """``n_neighbors`` (the model's if None) checked against the fitted data, with scikit-learn's errors."""
        if n_neighbors is None:
            n_neighbors = self.n_neighbors
        elif isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral):
            msg = f"n_neighbors does not take {type(n_neighbors)} value, enter integer value"
            raise TypeError(msg)
        elif n_neighbors <= 0:
            msg = f"Expected n_neighbors > 0. Got {n_neighbors}"
            raise ValueError(msg)
        self._check_fitted()
        fitted = self.n_samples_fit_
        query_is_train = X is None
        if n_neighbors + query_is_train > fitted:
            inequality = "n_neighbors < n_samples_fit" if query_is_train else "n_neighbors <= n_samples_fit"
            rows = fitted if query_is_train else getattr(X, "shape", (len(X),))[0]
            msg = (
                f"Expected {inequality}, but n_neighbors = {n_neighbors}, n_samples_fit = {fitted}, n_samples = {rows}"
            )
            raise ValueError(msg)
        return int(n_neighbors)

    def kneighbors(self, X: Any = None, n_neighbors: int | None = None, return_distance: bool = True) -> Any:
        """The ``n_neighbors`` nearest training rows of each row of ``X``, as scikit-learn's.

        Parameters
        ----------
        X : array, shape (n_queries, n_features), optional
            ``None`` queries the training set, each point excluding itself.
        n_neighbors : int, optional
            Defaults to the constructor's.
        return_distance : bool, default True

        Returns
        -------
        neigh_dist : array, shape (n_queries, n_neighbors)
            Only if ``return_distance``. Ascending; ties to the lower index.
        neigh_ind : array of int64, shape (n_queries, n_neighbors)
            Both in the namespace and on the device of ``X`` (NumPy for
            NumPy, lists and DataFrames).
        """
        self._check_same_namespace(X, "kneighbors")
        k = self._query_k(X, n_neighbors)
        return self._kneighbors(X, k, return_distance)

    def kneighbors_graph(self, X: Any = None, n_neighbors: int | None = None, mode: str = "connectivity") -> Any:
        """Sparse graph of the k nearest neighbours: row i lists row i of ``X``'s neighbours.

        Parameters
        ----------
        X : array, shape (n_queries, n_features), optional
            ``None``: the training set, each point excluding itself.
        n_neighbors : int, optional
        mode : {"connectivity", "distance"}
            Ones, or the distances, as the stored values.

        Returns
        -------
        sparse matrix in CSR format, shape (n_queries, ``n_samples_fit_``)
            ``scipy.sparse.csr_matrix`` for host arrays (NumPy, lists,
            DataFrames) and for torch and array_api_strict, whose results are
            copied to the host (SciPy has no sparse matrix of those
            libraries); ``cupyx.scipy.sparse.csr_matrix`` on the GPU for CuPy.
        """
        if mode not in GRAPH_MODES:
            msg = f'Unsupported mode, must be one of "connectivity", or "distance" but got "{mode}" instead'
            raise ValueError(msg)
        self._check_same_namespace(X, "kneighbors_graph")
        distances, indices = self.kneighbors(X, n_neighbors, return_distance=True)
        return _csr_graph(distances if mode == "distance" else None, indices, self.n_samples_fit_)


class _RadiusNeighborsMixin(_SklearnRadiusNeighborsMixin):
    """scikit-learn's ``RadiusNeighborsMixin``: the radius queries, through the base's one radius search."""

    def radius_neighbors(
        self, X: Any = None, radius: float | None = None, return_distance: bool = True, sort_results: bool = False
    ) -> Any:
        """Every training row within ``radius`` (distance ``<= radius``) of each row of ``X``, as scikit-learn's.

        Parameters
        ----------
        X : array, shape (n_queries, n_features), optional
            ``None``: the training set, each point excluding itself (its
            exact duplicates stay).
        radius : float or array of shape (n_queries,), optional
            Defaults to the constructor's ``radius``; an array (any library,
            or a list) gives each query its own radius, as scikit-learn's
            tree searches accept (its brute search does not).
        return_distance : bool, default True
        sort_results : bool, default False
            Each query's neighbours by ascending distance (else by ascending
            index); needs ``return_distance=True``.

        Returns
        -------
        neigh_dist : ndarray of dtype object, shape (n_queries,)
            Only if ``return_distance``. Element ``i`` holds query ``i``'s
            distances.
        neigh_ind : ndarray of dtype object, shape (n_queries,)
            Element ``i`` holds query ``i``'s training indices (int64).

        The containers are NumPy object arrays, as scikit-learn's; their
        elements are arrays of the namespace and device of ``X`` (of the
        training data for ``X=None``): NumPy for NumPy, lists and DataFrames,
        and for CuPy, torch and array_api_strict slices of one flat result
        left on the device (no copy of the neighbours to the host, only of the
        ``n_queries + 1`` offsets, once). :func:`knn_gpu.radius_neighbors`
        returns the flat ``(distances, indices, offsets)`` itself.
        """
        if not isinstance(return_distance, bool) or not isinstance(sort_results, bool):
            msg = f"return_distance and sort_results must be True or False, got {return_distance!r}, {sort_results!r}"
            raise TypeError(msg)
        if sort_results and not return_distance:
            msg = "return_distance must be True if sort_results is True."
            raise ValueError(msg)
        self._check_same_namespace(X, "radius_neighbors")
        distances, indices, offsets, X = self._radius_flat(X, radius, sort_results)
        bounds = read_counts(offsets, xp=self._index.xp)
        neigh_ind = per_query(self._like_input(indices, X), bounds)
        if not return_distance:
            return neigh_ind
        return per_query(self._like_input(distances, X), bounds), neigh_ind

    def radius_neighbors_graph(
        self, X: Any = None, radius: float | None = None, mode: str = "connectivity", sort_results: bool = False
    ) -> Any:
        """Sparse graph of the neighbours within ``radius``: row i lists row i of ``X``'s.

        Parameters
        ----------
        X : array, shape (n_queries, n_features), optional
            ``None``: the training set, each point excluding itself.
        radius : float or array of shape (n_queries,), optional
            Defaults to the constructor's ``radius``; one per query as an array.
        mode : {"connectivity", "distance"}
        sort_results : bool, default False
            In "distance" mode, each row's entries by ascending distance.

        Returns
        -------
        sparse matrix in CSR format, shape (n_queries, ``n_samples_fit_``)
            Built from the flat result without a loop over queries;
            ``cupyx.scipy.sparse.csr_matrix`` on the GPU for CuPy, else
            ``scipy.sparse.csr_matrix`` on the host.
        """
        if mode not in GRAPH_MODES:
            msg = f'Unsupported mode, must be one of "connectivity", or "distance" but got "{mode}" instead'
            raise ValueError(msg)
        self._check_same_namespace(X, "radius_neighbors_graph")
        distance_mode = mode == "distance"
        distances, indices, offsets, _ = self._radius_flat(X, radius, sort_results and distance_mode)
        return csr_from_flat(distances if distance_mode else None, indices, offsets, self.n_samples_fit_)


def _training_rows_of(X: Any) -> Any:
    """The training rows held by a fitted neighbours estimator or tree; other ``X`` unchanged."""
    if isinstance(X, _NeighborsBase) or (hasattr(X, "_fit_X") and hasattr(X, "n_samples_fit_")):
        if isinstance(X, _NeighborsBase):
            X._check_fitted()
        if getattr(X, "_fit_X", None) is None:
            msg = f"the {type(X).__name__} given as X keeps no training rows in memory (fitted out of core or on Dask)"
            raise ValueError(msg)
        return X._fit_X
    if type(X).__module__.startswith("sklearn.neighbors") and hasattr(X, "get_arrays"):
        return np.asarray(X.get_arrays()[0])  # BallTree, KDTree
    return X


def _engine_metric_of(metric: Any, p: Any) -> Any:
    """The engine's metric for scikit-learn's ``metric`` and ``p``: a registry name, or the callable itself.

    A metric the registry does not have is its ``ValueError`` (naming the accepted ones).
    """
    if metric == "minkowski":
        # p = 2 takes the matrix-product path; any other p (the one rule: > 0) is computed directly.
        return "euclidean" if p == 2 else "minkowski"
    entry = lookup(metric)
    return entry.name if isinstance(metric, str) else metric


def _effective_metric(metric: str, metric_params: dict | None, p: Any) -> tuple[str, dict]:
    """scikit-learn's ``effective_metric_`` and ``effective_metric_params_``, as its ``NeighborsBase._fit`` sets them.

    Unweighted Minkowski with p = 1, 2, inf is ``"manhattan"``, ``"euclidean"``,
    ``"chebyshev"`` with no parameters; any other Minkowski keeps ``p`` and
    ``w`` (None when unweighted); other metrics keep ``metric_params``.
    """
    params = dict(metric_params or {})
    if metric != "minkowski":
        return metric, params
    p = params.pop("p", p)
    w = params.pop("w", None)
    named = {1: "manhattan", 2: "euclidean", math.inf: "chebyshev"}
    if w is None and p in named:
        return named[p], params
    params["p"] = p
    params["w"] = w
    return "minkowski", params


def check_minkowski_weights(w: Any, num_features: int) -> np.ndarray:
    """Validate weighted Minkowski's ``metric_params["w"]``: a float64 host copy, or ``ValueError``.

    Parameters
    ----------
    w : array_like, shape (num_features,)
        Non-negative finite weights, one per feature, of any array library.
    num_features : int
        The number of features of the training rows.

    Returns
    -------
    numpy.ndarray of float64, shape (num_features,)
        A new array (``w`` is never written).
    """
    try:
        weights = np.array(to_host(w) if array_api_compat.is_array_api_obj(w) else w, dtype=np.float64)
    except (TypeError, ValueError) as error:
        msg = f"metric_params['w'] must be a 1-D array of non-negative finite numbers, got {w!r}"
        raise ValueError(msg) from error
    if weights.ndim != 1 or weights.shape[0] != num_features:
        msg = (
            f"metric_params['w'] must be 1-D with one weight per feature ({num_features}), got shape "
            f"{tuple(weights.shape)}"
        )
        raise ValueError(msg)
    if not np.all(np.isfinite(weights)):
        msg = f"metric_params['w'] must be finite (no NaN or infinity), got {w!r}"
        raise ValueError(msg)
    if np.any(weights < 0):
        msg = f"metric_params['w'] must be non-negative (w cannot contain negative weights), got {w!r}"
        raise ValueError(msg)
    return weights


class NearestNeighbors(_KNeighborsMixin, _RadiusNeighborsMixin, _DropInBase):
    """Unsupervised learner for neighbour searches, as ``sklearn.neighbors.NearestNeighbors``.

    Parameters
    ----------
    n_neighbors : int, default 5
    radius : float, default 1.0
        The default radius of ``radius_neighbors`` and ``radius_neighbors_graph``
        (exact: distance ``<= radius``; see :func:`knn_gpu.radius_neighbors`).
        Their neighbour lists are NumPy object arrays holding arrays of the
        namespace and device of ``X`` (slices of one flat device result).
    algorithm : {"auto", "ball_tree", "kd_tree", "brute"}, default "auto"
        All give the same exact brute-force search on the backend.
    leaf_size : int, default 30
        Accepted and unused (no tree is built).
    metric : str, callable, DistanceMetric or BlockMetric, default "minkowski"
        Every metric of scikit-learn's brute force (``sklearn.neighbors.VALID_METRICS["brute"]``),
        knn_gpu's ``"inner_product"``, a callable of two rows or a
        ``DistanceMetric`` (on the host, slow), or a
        :class:`knn_gpu.BlockMetric` (on the data's device).
    p : float, default 2
    metric_params : dict, optional
        ``"p"`` (overrides ``p``, with scikit-learn's ``SyntaxWarning``) and,
        for ``metric="minkowski"``, ``"w"``: weighted Minkowski
        ``(sum_i w_i |x_i - y_i|^p)^(1/p)``, as scikit-learn's. ``w`` (any
        array library, shape (n_features,), finite, non-negative) is applied
        by scaling every training and query row by ``w ** (1/p)`` (a copy;
        the caller's arrays are never written) and searching the unweighted
        metric, so p = 2 keeps the matrix-product path. A finite ``p`` is
        needed (scikit-learn refuses p = inf with ``w`` too), and
        ``algorithm="kd_tree"`` raises scikit-learn's ``ValueError``. The
        metric's own parameters (``"V"`` for ``"seuclidean"``, ``"VI"`` for
        ``"mahalanobis"``, a callable's keywords); other keys raise ``ValueError``.
    n_jobs : int, optional
        Threads on the NumPy backend; None uses every core for large searches
        (scikit-learn's None is one thread): answers are the same.
    backend, batch_size, memory_budget, out_of_core :
        knn_gpu's own, as in :class:`knn_gpu.KNN`.

    Attributes
    ----------
    effective_metric_ : str
    effective_metric_params_ : dict
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.
    n_samples_fit_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import NearestNeighbors
    >>> neigh = NearestNeighbors(n_neighbors=2).fit(np.array([[0.0], [1.0], [3.0]]))
    >>> neigh.kneighbors(np.array([[0.9]]))
    (array([[0.1, 0.9]]), array([[1, 0]]))
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 5,
        radius: float = 1.0,
        algorithm: str = "auto",
        leaf_size: int = 30,
        metric: str = "minkowski",
        p: float = 2,
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        super().__init__(
            n_neighbors=n_neighbors,
            radius=radius,
            algorithm=algorithm,
            leaf_size=leaf_size,
            metric=metric,
            p=p,
            metric_params=metric_params,
            n_jobs=n_jobs,
            backend=backend,
            batch_size=batch_size,
            memory_budget=memory_budget,
            out_of_core=out_of_core,
        )

    def fit(self, X: Any, y: Any = None) -> NearestNeighbors:
        """Fit the nearest-neighbours index on ``X`` (``y`` is ignored)."""
        return self._fit_unsupervised(X)


class KNeighborsTransformer(ClassNamePrefixFeaturesOutMixin, _KNeighborsMixin, TransformerMixin, _DropInBase):
    """Each sample's k nearest neighbours as a sparse graph, as ``sklearn.neighbors.KNeighborsTransformer``.

    Parameters are those of :class:`NearestNeighbors` (no ``radius``), and
    ``mode`` ({"distance", "connectivity"}, default "distance"). With
    "distance", each row holds ``n_neighbors + 1`` entries (the sample itself
    at distance 0 when transforming the training set), as scikit-learn.
    ``transform`` returns what :meth:`kneighbors_graph` returns; so does
    ``set_output(transform="pandas")``'s, which refuses the sparse graph as
    scikit-learn's does.
    """

    _parameter_constraints: dict = {
        **{name: rule for name, rule in BASE_CONSTRAINTS.items() if name != "radius"},
        "mode": [StrOptions(set(GRAPH_MODES))],
    }
    _outputs_in_input_namespace = False  # a sparse graph

    def __init__(
        self,
        *,
        mode: str = "distance",
        n_neighbors: int = 5,
        algorithm: str = "auto",
        leaf_size: int = 30,
        metric: str = "minkowski",
        p: float = 2,
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        self.mode = mode
        super().__init__(
            n_neighbors=n_neighbors,
            algorithm=algorithm,
            leaf_size=leaf_size,
            metric=metric,
            p=p,
            metric_params=metric_params,
            n_jobs=n_jobs,
            backend=backend,
            batch_size=batch_size,
            memory_budget=memory_budget,
            out_of_core=out_of_core,
        )

    def fit(self, X: Any, y: Any = None) -> KNeighborsTransformer:
        """Fit on ``X`` (``y`` is ignored)."""
        self._fit_unsupervised(X)
        self._n_features_out = self.n_samples_fit_
        return self

    def transform(self, X: Any) -> Any:
        """The graph of ``X``'s neighbours among the training rows (CSR, shape (n_queries, ``n_samples_fit_``))."""
        self._check_fitted()
        self._check_same_namespace(X, "transform")
        add_one = self.mode == "distance"
        return self.kneighbors_graph(X, mode=self.mode, n_neighbors=self.n_neighbors + add_one)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)


class _SupervisedMixin:
    """``weights`` and the leave-one-out ``predict(None)`` shared by the classifier and the regressor."""

    def _reduce(self, X: Any, reduce_batch: Callable, per_query_bytes: int, method: str) -> tuple[tuple, Any]:
        """``reduce_batch`` over each batch of neighbours of ``X``; for ``X=None``, of each training point but itself.

        ``reduce_batch(distances, indices, weights)`` gets the neighbours'
        weights. Leave-one-out reduces all training points at once (its
        neighbour lists are computed first, then reduced). With a ``weights``
        callable, a query whose weights are all zero is a ``ValueError``, as in
        scikit-learn: flagged per batch on the device, read once after the
        search (one synchronisation per call, none inside the batches).
        ``method`` names the public caller in a namespace mismatch error.
        """
        self._check_same_namespace(X, method)
        k = self._query_k(X, None)
        xp = self._check_fitted().xp
        check_zero = callable(self.weights)

        def with_weights(distances: Any, indices: Any) -> tuple:
            weights = self._weights_for(distances)
            flags = (all_zero_rows(weights, xp=xp),) if check_zero else ()
            return (*reduce_batch(distances, indices, weights), *flags)

        if X is None:
            (distances, indices), _ = self._neighbors_on_backend(None, k)
            result = with_weights(distances, indices)
        else:
            result, X = self._neighbors_on_backend(X, k, with_weights, per_query_bytes)
        if check_zero:
            result, flags = result[:-1], result[-1]
            if bool(xp.any(flags)):
                raise ValueError(ALL_ZERO_WEIGHTS)
        return result, X


class _ClassLabels:
    """Class labels at fit (encoded on the device), and the mean accuracy, for the drop-in classifiers."""

    def _fit_labels(self, X: Any, y: Any) -> None:
        X_fit, index = self._fit_neighbors(X)
        labels = _as_label_columns(y, index.num_samples)
        self.outputs_2d_ = labels.ndim == 2
        columns = [labels[:, j] for j in range(labels.shape[1])] if self.outputs_2d_ else [labels]
        encoded = [encode_class_labels(column, index) for column in columns]
        self._store_fit(X_fit, index)
        self._codes = [codes for _, codes in encoded]
        self.classes_ = [classes for classes, _ in encoded] if self.outputs_2d_ else encoded[0][0]

    def _class_lists(self) -> list:
        return self.classes_ if self.outputs_2d_ else [self.classes_]

    def _proba_dtype(self) -> Any:
        """The dtype of the vote shares: float64 as scikit-learn's, whatever X's; float32 on a device without float64."""
        index = self._check_fitted()
        return exact_dtype(index.xp, index.device)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy (all outputs right, for several), weighted by ``sample_weight``."""
        predicted = to_host(self.predict(X))
        truth = np.asarray(to_host(_as_label_columns(y, predicted.shape[0], warn=False)))
        right = predicted == truth.reshape(predicted.shape)
        if right.ndim == 2:
            right = right.all(axis=1)
        return float(np.average(right, weights=None if sample_weight is None else to_host(sample_weight)))


class KNeighborsClassifier(_ClassLabels, _SupervisedMixin, _KNeighborsMixin, ClassifierMixin, _DropInBase):
    """Vote of the k nearest neighbours, as ``sklearn.neighbors.KNeighborsClassifier``.

    Parameters are those of :class:`NearestNeighbors` (no ``radius``), and
    ``weights`` ({"uniform", "distance"}, a callable, or None for
    "uniform"). A tied vote goes to the smallest class label.

    Attributes
    ----------
    classes_ : array of shape (n_classes,), or a list of them (one per output)
    outputs_2d_ : bool
        Whether ``y`` was 2-D (several outputs) at fit.
    effective_metric_, effective_metric_params_, n_features_in_, feature_names_in_, n_samples_fit_

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import KNeighborsClassifier
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> KNeighborsClassifier(n_neighbors=3).fit(X, [0, 0, 1, 1]).predict([[1.1]])
    array([0])
    """

    _parameter_constraints: dict = {
        **{name: rule for name, rule in BASE_CONSTRAINTS.items() if name != "radius"},
        "weights": WEIGHTS_CONSTRAINT,
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: str | Callable | None = "uniform",
        algorithm: str = "auto",
        leaf_size: int = 30,
        p: float = 2,
        metric: str = "minkowski",
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        self.weights = weights
        super().__init__(
            n_neighbors=n_neighbors,
            algorithm=algorithm,
            leaf_size=leaf_size,
            metric=metric,
            p=p,
            metric_params=metric_params,
            n_jobs=n_jobs,
            backend=backend,
            batch_size=batch_size,
            memory_budget=memory_budget,
            out_of_core=out_of_core,
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True  # as scikit-learn's: 2-D y, one column of labels per output
        return tags

    def fit(self, X: Any, y: Any) -> KNeighborsClassifier:
        """Fit on ``X`` with class labels ``y`` (1-D, or 2-D for several outputs)."""
        self._fit_labels(X, y)
        return self

    def _votes(self, X: Any, *, winners_only: bool) -> tuple[list, Any]:
        """Per output, each query's vote shares (or winning codes), on the backend; and the validated ``X``."""
        xp = self._check_fitted().xp
        sizes = [classes.shape[0] for classes in self._class_lists()]
        dtype = self._proba_dtype()

        def votes_of_batch(distances: Any, indices: Any, weights: Any) -> tuple:
            votes = [
                class_votes(codes, indices, weights, n, xp=xp, dtype=dtype) for codes, n in zip(self._codes, sizes)
            ]
            return tuple(xp.argmax(v, axis=1) for v in votes) if winners_only else tuple(votes)

        k = self.n_neighbors
        per_query = sum((2 * k + 2) * n * 8 for n in sizes)
        result, X = self._reduce(X, votes_of_batch, per_query, "predict" if winners_only else "predict_proba")
        return list(result), X

    def predict(self, X: Any) -> Any:
        """Class labels of ``X`` (``None``: of each training point, leaving it out), shape (n_queries,) or (n_queries, n_outputs)."""
        winners, X_checked = self._votes(X, winners_only=True)
        labels = [decode_class_labels(w, classes, X_checked) for w, classes in zip(winners, self._class_lists())]
        if not self.outputs_2d_:
            return labels[0]
        return array_api_compat.array_namespace(labels[0]).stack(labels, axis=1)

    def predict_proba(self, X: Any) -> Any:
        """Share of (weighted) votes per class, columns in ``classes_`` order; a list of them for several outputs.

        float64 whatever the dtype of ``X``, as scikit-learn's (the seed
        :class:`knn_gpu.KNNClassifier` keeps float32 in, float32 out);
        float32 on a device without float64 (array_api_strict's
        ``"no_float64"``, some GPUs).
        """
        votes, X_checked = self._votes(X, winners_only=False)
        votes = [v if X_checked is None else convert_like(v, X_checked) for v in votes]
        return votes if self.outputs_2d_ else votes[0]


class _Targets:
    """Targets at fit (on the device, in the distances' dtype), and R², for the drop-in regressors."""

    def _fit_targets(self, X: Any, y: Any) -> None:
        X_fit, index = self._fit_neighbors(X)
        y = as_targets(y, "y", index.num_samples)
        targets = index.xp.astype(move_to(y, index.xp, index.device), distance_dtype_for(index.dtype, index.xp))
        self._store_fit(X_fit, index)
        self._targets = targets[:, None] if targets.ndim == 1 else targets
        self._targets_1d = y.ndim == 1

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R² (uniform average over outputs), weighted by ``sample_weight``."""
        predicted = to_host(self.predict(X)).astype(np.float64)
        truth = to_host(as_targets(y, "y", predicted.shape[0])).astype(np.float64).reshape(predicted.shape)
        if truth.ndim == 1:
            truth, predicted = truth[:, None], predicted[:, None]
        weight = np.ones(truth.shape[0]) if sample_weight is None else to_host(sample_weight).astype(np.float64)
        weight = weight[:, None]
        residual = (weight * (truth - predicted) ** 2).sum(axis=0)
        mean = np.average(truth, axis=0, weights=weight[:, 0])
        total = (weight * (truth - mean) ** 2).sum(axis=0)
        safe_total = np.where(total == 0, 1.0, total)
        r2 = np.where(total == 0, np.where(residual == 0, 1.0, 0.0), 1 - residual / safe_total)
        return float(np.mean(r2))


class KNeighborsRegressor(_Targets, _SupervisedMixin, _KNeighborsMixin, RegressorMixin, _DropInBase):
    """Mean of the k nearest neighbours' targets, as ``sklearn.neighbors.KNeighborsRegressor``.

    Parameters are those of :class:`KNeighborsClassifier`. A ``weights``
    callable giving a query all-zero weights raises ``ValueError`` (scikit-learn
    returns NaN there).

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import KNeighborsRegressor
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> KNeighborsRegressor(n_neighbors=2).fit(X, [0.0, 0.0, 1.0, 1.0]).predict([[1.5]])
    array([0.5])
    """

    _parameter_constraints: dict = {
        **{name: rule for name, rule in BASE_CONSTRAINTS.items() if name != "radius"},
        "weights": WEIGHTS_CONSTRAINT,
    }

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: str | Callable | None = "uniform",
        algorithm: str = "auto",
        leaf_size: int = 30,
        p: float = 2,
        metric: str = "minkowski",
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        self.weights = weights
        super().__init__(
            n_neighbors=n_neighbors,
            algorithm=algorithm,
            leaf_size=leaf_size,
            metric=metric,
            p=p,
            metric_params=metric_params,
            n_jobs=n_jobs,
            backend=backend,
            batch_size=batch_size,
            memory_budget=memory_budget,
            out_of_core=out_of_core,
        )

    def fit(self, X: Any, y: Any) -> KNeighborsRegressor:
        """Fit on ``X`` with targets ``y`` (1-D, or 2-D for several outputs)."""
        self._fit_targets(X, y)
        return self

    def predict(self, X: Any) -> Any:
        """(Weighted) mean target of the neighbours of ``X`` (``None``: of each training point, leaving it out)."""
        xp = self._check_fitted().xp

        def mean_of_batch(distances: Any, indices: Any, weights: Any) -> tuple:
            return (weighted_mean(self._targets, indices, weights, xp=xp),)

        per_query = 3 * self.n_neighbors * (self._targets.shape[1] + 1) * 8
        (prediction,), X = self._reduce(X, mean_of_batch, per_query, "predict")
        if self._targets_1d:
            prediction = prediction[:, 0]
        return prediction if X is None else convert_like(prediction, X)


def _as_label_columns(y: Any, num_samples: int, *, warn: bool = True) -> Any:
    """Class labels as a 1-D array, or 2-D (one column per output); a column vector warns and is raveled."""
    if y is None:
        msg = "this estimator requires y to be passed, but the target y is None"
        raise ValueError(msg)
    raw = y
    if is_sparse(y):  # as_targets refuses it by name (NumPy would wrap it in a 0-d object array)
        return as_targets(y, "y", num_samples, numeric=False)
    if not array_api_compat.is_array_api_obj(y) or _from_library(y, "pandas"):
        raw = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if getattr(raw, "ndim", 1) == 2 and raw.shape[1] > 1:
        columns = [as_targets(raw[:, j], "y", num_samples, numeric=False) for j in range(raw.shape[1])]
        return array_api_compat.array_namespace(columns[0]).stack(columns, axis=1)
    if getattr(raw, "ndim", 1) == 2 and not warn:
        raw = raw[:, 0]
    return as_targets(y if raw is y else raw, "y", num_samples, numeric=False)


def check_graph_params(model: Any, metric: Any, p: Any, metric_params: Any) -> None:
    """The graph functions' ``metric``, ``p`` and ``metric_params`` must be those of a fitted ``model`` given as X.

    As scikit-learn's: the model's own search answers, so a differing value
    would be silently ignored; ``ValueError`` instead.
    """
    fitted = model.get_params()
    for name, given in (("metric", metric), ("p", p), ("metric_params", metric_params)):
        if given != fitted[name]:
            msg = f"Got {given} for {name}, while the estimator has {fitted[name]} for the same parameter."
            raise ValueError(msg)


def _csr_graph(distances: Any, indices: Any, num_columns: int) -> Any:
    """A CSR matrix with the k neighbours of row i in row i: ones (``distances=None``) or the distances."""
    xp = array_api_compat.array_namespace(indices)
    rows, k = indices.shape
    offsets = xp.arange(0, rows * k + 1, k, dtype=xp.int64, device=array_api_compat.device(indices))
    data = None if distances is None else xp.reshape(distances, (-1,))
    return csr_from_flat(data, xp.reshape(indices, (-1,)), offsets, num_columns)


def kneighbors_graph(
    X: Any,
    n_neighbors: int,
    *,
    mode: str = "connectivity",
    metric: str = "minkowski",
    p: float = 2,
    metric_params: dict | None = None,
    include_self: bool | str = False,
    n_jobs: int | None = None,
) -> Any:
    """Graph of the k nearest neighbours of each sample of ``X``, as ``sklearn.neighbors.kneighbors_graph``.

    Parameters
    ----------
    X : array, shape (n_samples, n_features), or a fitted :class:`NearestNeighbors`
    n_neighbors : int
    mode : {"connectivity", "distance"}
    metric, p, metric_params, n_jobs : as :class:`NearestNeighbors`
    include_self : bool or "auto", default False
        Whether each sample is its own first neighbour ("auto": only in
        "connectivity" mode).

    Returns
    -------
    sparse matrix in CSR format, shape (n_samples, n_samples)
        See :meth:`NearestNeighbors.kneighbors_graph` for its type per array library.

    Raises
    ------
    ValueError
        When ``X`` is a fitted estimator whose ``metric``, ``p`` or
        ``metric_params`` differ from those given here (its own search
        answers; scikit-learn raises too).

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import kneighbors_graph
    >>> kneighbors_graph(np.array([[0.0], [1.0], [3.0]]), 1).toarray()
    array([[0., 1., 0.],
           [1., 0., 0.],
           [0., 1., 0.]])
    """
    if isinstance(X, _KNeighborsMixin):
        check_graph_params(X, metric, p, metric_params)
        model, data = X, X._fit_X
    else:
        model = NearestNeighbors(
            n_neighbors=n_neighbors, metric=metric, p=p, metric_params=metric_params, n_jobs=n_jobs
        )
        model, data = model.fit(X), X
    if include_self == "auto":
        include_self = mode == "connectivity"
    return model.kneighbors_graph(data if include_self else None, n_neighbors, mode)
