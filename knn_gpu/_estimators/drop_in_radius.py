"""scikit-learn's radius estimators under their own names, on knn_gpu's radius engine.

``RadiusNeighborsClassifier``, ``RadiusNeighborsRegressor``,
``RadiusNeighborsTransformer`` and :func:`radius_neighbors_graph` take
scikit-learn 1.9's parameters, defaults, fitted attributes, return types,
warnings and errors; they stand on the drop-in classes' base
(scikit-learn's ``BaseEstimator``, validation, fitting, metrics: see
:mod:`knn_gpu._estimators.drop_in`) and its radius-query mixin, and have no k-neighbour
methods, as scikit-learn's radius estimators.

Each query has its own number of neighbours: the engine's result stays flat
on the device (``distances``, ``indices``, ``offsets``), and votes and means
are segment sums over it (:func:`knn_gpu._engine.radius_queries.segment_sums`), with
no Python loop over queries. The host reads are the engine's (one per batch
of queries and one per search), the number of queries without neighbours
(scikit-learn raises, warns or predicts NaN for them), and for the
regressor whether a prediction is NaN (scikit-learn's warning).

A neighbour is a training row at distance ``<= radius``, decided on exact
(float64) distances; scikit-learn decides on distances with the rounding of
its own formulas, so a row at a distance equal to the radius up to that
rounding may be in one answer and not the other.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from .._engine.predictions import check_weights, quiet_divide
from .._engine.radius_queries import GRAPH_MODES, per_query, query_numbers, segment_sums
from .._engine.topk import positions_of_true
from .._lib.backends import convert_like, to_host
from .._lib.devices import read_counts
from .drop_in import (
    BASE_CONSTRAINTS,
    WEIGHTS_CONSTRAINT,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    Integral,
    NearestNeighbors,
    RegressorMixin,
    StrOptions,
    TransformerMixin,
    _ClassLabels,
    _DropInBase,
    _RadiusNeighborsMixin,
    _Targets,
    check_graph_params,
    decode_class_labels,
)

__all__ = [
    "RadiusNeighborsClassifier",
    "RadiusNeighborsRegressor",
    "RadiusNeighborsTransformer",
    "radius_neighbors_graph",
]

NO_NEIGHBORS_NAN = "One or more samples have no neighbors within specified radius; predicting NaN."


#: The radius classes' constraints: scikit-learn's, without n_neighbors.
RADIUS_CONSTRAINTS = {name: rule for name, rule in BASE_CONSTRAINTS.items() if name != "n_neighbors"}


class _RadiusVotes:
    """The weights and outliers of a flat radius result, for the radius classifier and regressor."""

    def _flat_weights(self, distances: Any, offsets: Any) -> Any:
        """Each flat neighbour's weight (shape (n_neighbours,)), scikit-learn's ``_get_weights`` per query.

        ``"distance"``: ``1 / d``, except in a query with neighbours at
        distance 0, whose weights are 1 there and 0 elsewhere. A callable
        gets what ``radius_neighbors`` returns for the distances (an object
        array, one array per query) and returns one array of weights per
        query.
        """
        xp = self._index.xp
        weights = check_weights(self.weights, self._engine_metric())
        if weights == "uniform":
            return xp.ones_like(distances)
        if weights == "distance":
            at_zero = distances == 0
            zero_in_query = segment_sums(xp.astype(at_zero, xp.int64), offsets, xp=xp) > 0
            zero_here = xp.take(zero_in_query, query_numbers(offsets, distances.shape[0], xp=xp))
            inverse = 1 / xp.where(at_zero, xp.ones_like(distances), distances)
            return xp.where(zero_here, xp.astype(at_zero, distances.dtype), inverse)
        weights_per_query = weights(per_query(distances, read_counts(offsets, xp=xp)))
        device = array_api_compat.device(distances)
        pieces = [xp.reshape(xp.asarray(w, dtype=distances.dtype, device=device), (-1,)) for w in weights_per_query]
        flat = xp.concat(pieces) if pieces else xp.zeros(0, dtype=distances.dtype, device=device)
        if flat.shape[0] != distances.shape[0]:
            msg = "weights callable must return one weight per neighbour (an array per query, as the distances)"
            raise ValueError(msg)
        return flat

    def _outliers(self, offsets: Any) -> tuple[Any, int]:
        """Per query whether it has no neighbour (device), and how many (read to the host)."""
        xp = self._index.xp
        empty = offsets[1:] == offsets[:-1]
        (count,) = read_counts(xp.count_nonzero(empty), xp=xp)
        return empty, count


def _check_outlier_label(outlier_label: Any, class_lists: list) -> list | None:
    """scikit-learn's ``outlier_label_``: None, or one label per output (checked against ``classes_``)."""
    if outlier_label is None:
        return None
    if isinstance(outlier_label, str) and outlier_label == "most_frequent":
        return None  # resolved from the codes by the caller
    if _is_arraylike(outlier_label) and not isinstance(outlier_label, str):
        if len(outlier_label) != len(class_lists):
            msg = (
                f"The length of outlier_label: {outlier_label} is inconsistent with the output "
                f"length: {len(class_lists)}"
            )
            raise ValueError(msg)
        labels = list(outlier_label)
    else:
        labels = [outlier_label] * len(class_lists)
    for classes, label in zip(class_lists, labels):
        if _is_arraylike(label) and not isinstance(label, str):
            msg = f"The outlier_label of classes {classes} is supposed to be a scalar, got {label}."
            raise TypeError(msg)
        host_classes = to_host(classes) if not isinstance(classes, np.ndarray) else classes
        if np.append(host_classes, label).dtype != host_classes.dtype:
            msg = f"The dtype of outlier_label {label} is inconsistent with classes {host_classes} in y."
            raise TypeError(msg)
    return labels


def _is_arraylike(value: Any) -> bool:
    return hasattr(value, "__len__") or hasattr(value, "shape") or hasattr(value, "__array__")


class RadiusNeighborsClassifier(_ClassLabels, _RadiusVotes, _RadiusNeighborsMixin, ClassifierMixin, _DropInBase):
    """Vote of the training rows within ``radius``, as ``sklearn.neighbors.RadiusNeighborsClassifier``.

    Parameters
    ----------
    radius : float, default 1.0
        Neighbours are the training rows at distance ``<= radius`` (exact).
    weights : {"uniform", "distance"}, callable or None, default "uniform"
        A callable receives an object array of each query's distances and
        returns one array of weights per query (scikit-learn's contract).
    algorithm, leaf_size, p, metric, metric_params, n_jobs :
        As :class:`knn_gpu.NearestNeighbors` (every algorithm is the exact
        brute-force search; ``leaf_size`` is unused).
    outlier_label : label, "most_frequent", one label per output, or None
        The prediction for queries without neighbours. None: they raise
        ``ValueError``. A label that is not a class warns, and those
        queries' probabilities are all 0.
    backend, batch_size, memory_budget, out_of_core :
        knn_gpu's own, as in :class:`knn_gpu.KNN` (radius queries need the
        training rows in memory: not out of core).

    Attributes
    ----------
    classes_ : array of shape (n_classes,), or a list of them (one per output)
    outlier_label_ : list or None
        One label per output.
    outputs_2d_, effective_metric_, effective_metric_params_, n_features_in_, feature_names_in_, n_samples_fit_

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import RadiusNeighborsClassifier
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> model = RadiusNeighborsClassifier(radius=1.0, outlier_label="most_frequent").fit(X, [0, 0, 1, 1])
    >>> model.predict([[0.6], [2.6], [9.0]])  # the last query has no neighbour
    array([0, 1, 0])
    """

    _parameter_constraints: dict = {
        **RADIUS_CONSTRAINTS,
        "weights": WEIGHTS_CONSTRAINT,
        "outlier_label": [Integral, str, "array-like", None],
    }

    def __init__(
        self,
        radius: float = 1.0,
        *,
        weights: str | Callable | None = "uniform",
        algorithm: str = "auto",
        leaf_size: int = 30,
        p: float = 2,
        metric: str = "minkowski",
        outlier_label: Any = None,
        metric_params: dict | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        batch_size: int | None = None,
        memory_budget: int | None = None,
        out_of_core: bool | None = None,
    ) -> None:
        self.weights = weights
        self.outlier_label = outlier_label
        super().__init__(
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True  # as scikit-learn's: 2-D y, one column of labels per output
        return tags

    def fit(self, X: Any, y: Any) -> RadiusNeighborsClassifier:
        """Fit on ``X`` with class labels ``y`` (1-D, or 2-D for several outputs)."""
        self._fit_labels(X, y)
        class_lists = self._class_lists()
        if isinstance(self.outlier_label, str) and self.outlier_label == "most_frequent":
            xp = self._index.xp
            most = []
            for codes, classes in zip(self._codes, class_lists):
                ids = xp.arange(classes.shape[0], dtype=codes.dtype, device=array_api_compat.device(codes))
                counts = xp.sum(xp.astype(codes[:, None] == ids[None, :], xp.int64), axis=0)
                (winner,) = read_counts(xp.argmax(counts), xp=xp)
                most.append(to_host(classes)[winner])
            self.outlier_label_ = most
        else:
            self.outlier_label_ = _check_outlier_label(self.outlier_label, class_lists)
        return self

    def _probabilities(self, X: Any) -> tuple[list, Any, Any, int]:
        """Per output, the class probabilities on the backend; the validated ``X``; the outlier mask and count."""
        self._check_fitted()
        xp = self._index.xp
        distances, indices, offsets, X_checked = self._radius_flat(X, None)
        empty, num_outliers = self._outliers(offsets)
        if num_outliers and self.outlier_label_ is None:
            outliers = np.asarray(read_counts(positions_of_true(empty, num_outliers, xp=xp), xp=xp))
            msg = (
                f"No neighbors found for test samples {outliers!r}, you can try using larger radius, giving a "
                "label for outliers, or considering removing them from your dataset."
            )
            raise ValueError(msg)
        weights = xp.astype(self._flat_weights(distances, offsets), self._proba_dtype(), copy=False)
        probabilities = []
        for k, (codes, classes) in enumerate(zip(self._codes, self._class_lists())):
            ids = xp.arange(classes.shape[0], dtype=codes.dtype, device=array_api_compat.device(codes))
            one_hot = xp.take(codes, indices)[:, None] == ids[None, :]
            votes = segment_sums(xp.where(one_hot, weights[:, None], xp.zeros_like(weights)[:, None]), offsets, xp=xp)
            if num_outliers:
                position = np.flatnonzero(to_host(classes) == self.outlier_label_[k])
                if position.size == 1:
                    outlier_column = empty[:, None] & (ids == int(position[0]))[None, :]
                    votes = xp.where(outlier_column, xp.ones_like(votes), votes)
                else:
                    warnings.warn(
                        f"Outlier label {self.outlier_label_[k]} is not in training classes. All class "
                        "probabilities of outliers will be assigned with 0.",
                        stacklevel=3,
                    )
            total = xp.sum(votes, axis=1, keepdims=True)
            # scikit-learn: a zero total divides by 1 (all shares 0); inf weights give IEEE's NaN.
            probabilities.append(quiet_divide(votes, xp.where(total == 0, xp.ones_like(total), total), xp=xp))
        return probabilities, X_checked, empty, num_outliers

    def predict_proba(self, X: Any) -> Any:
        """Share of (weighted) votes per class, columns in ``classes_`` order; a list of them for several outputs.

        ``None``: of each training point, leaving it out. Queries without
        neighbours have probability 1 for ``outlier_label_`` (all 0 if it is
        not a class). float64 whatever the dtype of ``X``, as scikit-learn's;
        float32 on a device without float64.
        """
        self._check_same_namespace(X, "predict_proba")
        probabilities, X_checked, _, _ = self._probabilities(X)
        probabilities = [p if X_checked is None else convert_like(p, X_checked) for p in probabilities]
        return probabilities if self.outputs_2d_ else probabilities[0]

    def predict(self, X: Any) -> Any:
        """Class labels of ``X``, shape (n_queries,) or (n_queries, n_outputs); outliers get ``outlier_label_``."""
        self._check_same_namespace(X, "predict")
        probabilities, X_checked, _, _ = self._probabilities(X)
        xp = self._index.xp
        labels = []
        for k, (proba, classes) in enumerate(zip(probabilities, self._class_lists())):
            decoded = decode_class_labels(xp.argmax(proba, axis=1), classes, X_checked)
            no_vote = xp.all(proba == 0, axis=1)
            (count,) = read_counts(xp.count_nonzero(no_vote), xp=xp)
            if count:  # an outlier label outside the classes: set on the host, as scikit-learn
                host = np.asarray(to_host(decoded)).copy()
                host[to_host(no_vote)] = self.outlier_label_[k]
                decoded = host if X_checked is None or host.dtype.kind not in "biuf" else convert_like(host, X_checked)
            labels.append(decoded)
        if not self.outputs_2d_:
            return labels[0]
        return array_api_compat.array_namespace(labels[0]).stack(labels, axis=1)


class RadiusNeighborsRegressor(_Targets, _RadiusVotes, _RadiusNeighborsMixin, RegressorMixin, _DropInBase):
    """Mean target of the training rows within ``radius``, as ``sklearn.neighbors.RadiusNeighborsRegressor``.

    Parameters are those of :class:`RadiusNeighborsClassifier` but
    ``outlier_label``. A query without neighbours is predicted NaN, with
    scikit-learn's ``UserWarning``.

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import RadiusNeighborsRegressor
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> RadiusNeighborsRegressor(radius=1.0).fit(X, [0.0, 0.0, 1.0, 1.0]).predict([[1.5]])
    array([0.5])
    """

    _parameter_constraints: dict = {
        **RADIUS_CONSTRAINTS,
        "weights": WEIGHTS_CONSTRAINT,
    }

    def __init__(
        self,
        radius: float = 1.0,
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

    def fit(self, X: Any, y: Any) -> RadiusNeighborsRegressor:
        """Fit on ``X`` with targets ``y`` (1-D, or 2-D for several outputs)."""
        self._fit_targets(X, y)
        return self

    def predict(self, X: Any) -> Any:
        """(Weighted) mean target of the neighbours of ``X`` (``None``: of each training point, leaving it out)."""
        self._check_fitted()
        self._check_same_namespace(X, "predict")
        xp = self._index.xp
        distances, indices, offsets, X_checked = self._radius_flat(X, None)
        weights = self._flat_weights(distances, offsets)
        targets = xp.take(self._targets, indices, axis=0)
        sums = segment_sums(weights[:, None] * xp.astype(targets, weights.dtype), offsets, xp=xp)
        total = segment_sums(weights, offsets, xp=xp)[:, None]
        # No neighbour (or weights summing to 0): NaN, as scikit-learn; inf weights: IEEE's results.
        safe = xp.where(total == 0, xp.ones_like(total), total)
        prediction = xp.where(total == 0, xp.full_like(sums, float("nan")), quiet_divide(sums, safe, xp=xp))
        if bool(xp.any(xp.isnan(prediction))):
            warnings.warn(NO_NEIGHBORS_NAN, stacklevel=2)
        if self._targets_1d:
            prediction = prediction[:, 0]
        return prediction if X_checked is None else convert_like(prediction, X_checked)


class RadiusNeighborsTransformer(ClassNamePrefixFeaturesOutMixin, _RadiusNeighborsMixin, TransformerMixin, _DropInBase):
    """The graph of the neighbours within ``radius``, as ``sklearn.neighbors.RadiusNeighborsTransformer``.

    Parameters
    ----------
    mode : {"distance", "connectivity"}, default "distance"
    radius : float, default 1.0
    algorithm, leaf_size, metric, p, metric_params, n_jobs, backend, batch_size, memory_budget, out_of_core :
        As :class:`knn_gpu.NearestNeighbors`.

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import RadiusNeighborsTransformer
    >>> RadiusNeighborsTransformer(radius=1.5).fit_transform(np.array([[0.0], [1.0], [3.0]])).toarray()
    array([[0., 1., 0.],
           [1., 0., 0.],
           [0., 0., 0.]])
    """

    _parameter_constraints: dict = {
        **RADIUS_CONSTRAINTS,
        "mode": [StrOptions(set(GRAPH_MODES))],
    }
    _outputs_in_input_namespace = False  # a sparse graph

    def __init__(
        self,
        *,
        mode: str = "distance",
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
        self.mode = mode
        super().__init__(
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

    def fit(self, X: Any, y: Any = None) -> RadiusNeighborsTransformer:
        """Fit on ``X`` (``y`` is ignored)."""
        self._fit_unsupervised(X)
        self._n_features_out = self.n_samples_fit_
        return self

    def transform(self, X: Any) -> Any:
        """The graph of ``X``'s neighbours among the training rows (CSR, shape (n_queries, ``n_samples_fit_``)), sorted by distance."""
        self._check_fitted()
        self._check_same_namespace(X, "transform")
        return self.radius_neighbors_graph(X, mode=self.mode, sort_results=True)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)


def radius_neighbors_graph(
    X: Any,
    radius: float,
    *,
    mode: str = "connectivity",
    metric: str = "minkowski",
    p: float = 2,
    metric_params: dict | None = None,
    include_self: bool | str = False,
    n_jobs: int | None = None,
) -> Any:
    """Graph of the neighbours within ``radius`` of each sample of ``X``, as ``sklearn.neighbors.radius_neighbors_graph``.

    Parameters
    ----------
    X : array, shape (n_samples, n_features), or a fitted knn_gpu estimator with radius queries
    radius : float
    mode : {"connectivity", "distance"}
    metric, p, metric_params, n_jobs : as :class:`knn_gpu.NearestNeighbors`
    include_self : bool or "auto", default False
        Whether each sample is its own neighbour ("auto": only in "connectivity" mode).

    Returns
    -------
    sparse matrix in CSR format, shape (n_samples, n_samples)
        ``scipy.sparse.csr_matrix``, or ``cupyx.scipy.sparse.csr_matrix`` for CuPy.

    Examples
    --------
    >>> import numpy as np
    >>> from knn_gpu import radius_neighbors_graph
    >>> radius_neighbors_graph(np.array([[0.0], [1.0], [3.0]]), 1.5, include_self=True).toarray()
    array([[1., 1., 0.],
           [1., 1., 0.],
           [0., 0., 1.]])
    """
    if isinstance(X, _RadiusNeighborsMixin):
        check_graph_params(X, metric, p, metric_params)
        model = X
        model._check_fitted()
        data = X._fit_X
    else:
        model = NearestNeighbors(radius=radius, metric=metric, p=p, metric_params=metric_params, n_jobs=n_jobs)
        model, data = model.fit(X), X
    if include_self == "auto":
        include_self = mode == "connectivity"
    return model.radius_neighbors_graph(data if include_self else None, radius, mode)
