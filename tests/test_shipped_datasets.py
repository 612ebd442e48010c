"""scikit-learn's shipped data sets, raw and standardised, every metric and weighting, k and radius, every backend.

iris, wine, breast_cancer (every 2nd row), digits (every 4th) and diabetes (regression),
split into even rows (training) and odd rows (queries), with NO jitter: raw
digits is integer-valued and iris has a query equal to a training row, so
distances tie exactly. The expected values come from scikit-learn (its
default algorithm) and a plain float64 oracle (``scipy.spatial.distance.cdist``),
computed once per (data set, scaling, metric) and shared by the backends.

Ties are compared honestly rather than hidden:

* k-neighbours: the sorted distances must equal scikit-learn's; every
  returned neighbour must lie at the oracle distance it claims; the training
  rows strictly closer than the k-th distance must be returned by both; the
  indices must equal scikit-learn's in order except in rows where distances
  tie (within ``_tie_tolerance``) among the first k + 1, which are counted
  (``_TIE_COUNTS``, printed with ``-s``).
* predictions: equal to scikit-learn's wherever the labels (targets) of the k
  neighbours are determined, that is where the tie group at the k-th distance
  does not cross the boundary or has a single label, and the vote has a clear
  winner; elsewhere the prediction is the vote of knn_gpu's own (checked)
  neighbours, recomputed here in NumPy.
* radius: the radius is put in a gap of the oracle distances near the median
  5th-neighbour distance, so each neighbour set is exact: sets, graphs and
  predictions must equal scikit-learn's; only the order within exact distance
  ties is free.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import scipy.sparse  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn import neighbors as sk  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import knn_gpu  # noqa: E402

K = 5
CLASSIFICATION = ("iris", "wine", "breast_cancer", "digits")
DATASETS = (*CLASSIFICATION, "diabetes")
#: id -> (metric, p, cdist metric of the oracle, cdist keyword arguments)
METRICS = {
    "euclidean": ("euclidean", 2, "euclidean", {}),
    "l2": ("l2", 2, "euclidean", {}),
    "minkowski-p2": ("minkowski", 2, "euclidean", {}),
    "sqeuclidean": ("sqeuclidean", 2, "sqeuclidean", {}),
    "cosine": ("cosine", 2, "cosine", {}),
    "manhattan": ("manhattan", 2, "cityblock", {}),
    "chebyshev": ("chebyshev", 2, "chebyshev", {}),
    "minkowski-p1.5": ("minkowski", 1.5, "minkowski", {"p": 1.5}),
    "minkowski-p3": ("minkowski", 3, "minkowski", {"p": 3}),
    # The model gets cdist's city-block matrices (integers on raw digits: many exact ties).
    "precomputed": ("precomputed", 2, "cityblock", {}),
}
#: Every n-th row only, for the suite's time: digits 450 of 1797 rows, breast_cancer 285 of 569.
SUBSAMPLE = {"digits": 4, "breast_cancer": 2}
#: Pure aliases of euclidean: on two data sets only (iris with ties from its one-decimal values, digits).
ALIASES = {"l2", "minkowski-p2"}
ALIAS_DATASETS = ("iris", "digits")
#: Metrics scikit-learn's classifier and regressor do not take (NearestNeighbors does).
NEIGHBOURS_ONLY = {"sqeuclidean"}
SCALINGS = {"raw": False, "standardised": True}
CASES = [
    (dataset, scaling, metric_id)
    for dataset in DATASETS
    for scaling in SCALINGS
    for metric_id in METRICS
    if metric_id not in ALIASES or dataset in ALIAS_DATASETS
]
RTOL = 1e-9

#: (data set, scaling, metric, check) -> number of tie-affected queries (identical on every backend).
_TIE_COUNTS: dict[tuple[str, str, str, str], int] = {}


@functools.cache
def _data(dataset, standardise):
    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    step = SUBSAMPLE.get(dataset, 1)
    X, y = X[::step], y[::step]
    X = X.astype(np.float64)
    if standardise:
        X = StandardScaler().fit_transform(X)
    return X[::2], y[::2], X[1::2], y[1::2]


def _tie_tolerance(distances):
    """Distances this close are a tie: 1e-9 of the largest distance.

    Measured on these cases: knn_gpu's and scikit-learn's neighbour distances are within 1.2e-14 of
    the largest distance of the oracle's; the radii are at least 6e-8 away from every distance.
    """
    return 1e-9 * max(1.0, float(np.max(distances)))


def _model_inputs(metric_id, dataset, standardise):
    """(training input, query input) as the model takes them: the features, or the precomputed matrices."""
    train, _, queries, _ = _data(dataset, standardise)
    metric, _, oracle_metric, oracle_kwargs = METRICS[metric_id]
    if metric == "precomputed":
        return cdist(train, train, oracle_metric, **oracle_kwargs), cdist(
            queries, train, oracle_metric, **oracle_kwargs
        )
    return train, queries


def _params(metric_id):
    metric, p, _, _ = METRICS[metric_id]
    return {"metric": metric, "p": p}


def _radius(full, sk_distances):
    """A radius in a gap of the oracle distances at (or just above) the median K-th neighbour distance."""
    start = float(np.median(sk_distances[:, K - 1]))
    values = np.unique(full)
    tolerance = _tie_tolerance(full)
    above = values[values > start]
    gaps = np.flatnonzero(np.diff(np.concatenate([[start], above])) > 100 * tolerance)
    low = start if gaps[0] == 0 else above[gaps[0] - 1]
    return float((low + above[gaps[0]]) / 2)


@functools.cache
def _reference(dataset, standardise, metric_id):
    """scikit-learn's answers and the oracle's distances for one (data set, scaling, metric).

    On one thread: these small problems took 4 times longer with OpenMP's threads (2 cores, busy).
    """
    with threadpool_limits(limits=1):
        return _compute_reference(dataset, standardise, metric_id)


def _compute_reference(dataset, standardise, metric_id):
    train, y_train, queries, _ = _data(dataset, standardise)
    fit_input, query_input = _model_inputs(metric_id, dataset, standardise)
    _, _, oracle_metric, oracle_kwargs = METRICS[metric_id]
    full = cdist(queries, train, oracle_metric, **oracle_kwargs)
    params = _params(metric_id)
    reference = {"full": full}
    neighbours = sk.NearestNeighbors(n_neighbors=K, **params).fit(fit_input)
    reference["kneighbors"] = neighbours.kneighbors(query_input)
    reference["kgraph"] = neighbours.kneighbors_graph(query_input, mode="distance")
    radius = reference["radius"] = _radius(full, reference["kneighbors"][0])
    reference["radius_neighbors"] = neighbours.radius_neighbors(query_input, radius, sort_results=True)
    reference["rgraph"] = neighbours.radius_neighbors_graph(query_input, radius, mode="distance")
    if metric_id in NEIGHBOURS_ONLY:
        return reference
    for weights in ("uniform", "distance"):
        if dataset in CLASSIFICATION:
            model = sk.KNeighborsClassifier(K, weights=weights, **params).fit(fit_input, y_train)
            reference["predict", weights] = model.predict(query_input)
            reference["predict_proba", weights] = model.predict_proba(query_input)
            model = sk.RadiusNeighborsClassifier(radius, weights=weights, outlier_label="most_frequent", **params)
            model.fit(fit_input, y_train)
            reference["radius_predict", weights] = model.predict(query_input)
            reference["radius_predict_proba", weights] = model.predict_proba(query_input)
        else:
            model = sk.KNeighborsRegressor(K, weights=weights, **params).fit(fit_input, y_train)
            reference["predict", weights] = model.predict(query_input)
            model = sk.RadiusNeighborsRegressor(radius=radius, weights=weights, **params).fit(fit_input, y_train)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # queries without neighbours: NaN
                reference["radius_predict", weights] = model.predict(query_input)
    return reference


def _need_float64(backend):
    if not backend.has_float64():
        pytest.skip("device has no float64")


def _tie_analysis(full, k):
    """Per query: the k-th oracle distance, the tolerance, the boundary tie group and whether any tie is near."""
    tolerance = _tie_tolerance(full)
    ordered = np.sort(full, axis=1)
    kth = ordered[:, k - 1]
    inside = full < (kth - tolerance)[:, None]
    boundary = np.abs(full - kth[:, None]) <= tolerance
    first = ordered[:, : k + 1]
    tied = np.any(np.diff(first, axis=1) <= tolerance, axis=1)
    return kth, tolerance, inside, boundary, tied


def _check_kneighbors(distances, indices, sk_distances, sk_indices, full, key, exact_ties=False):
    """Tie-aware equality with scikit-learn's (distances, indices); counts the tie-affected rows.

    Indices may differ from scikit-learn's only at positions whose two training rows lie at tied
    oracle distances. With ``exact_ties`` (the model saw the oracle's numbers: precomputed) they must
    equal the stable sort of the oracle's row, knn_gpu's documented rule (ties: lower index first).
    """
    n, k = sk_indices.shape
    assert distances.shape == indices.shape == (n, k)
    _, tolerance, inside, _, tied = _tie_analysis(full, k)
    np.testing.assert_allclose(distances, sk_distances, rtol=RTOL, atol=tolerance)
    np.testing.assert_allclose(np.take_along_axis(full, indices, axis=1), distances, rtol=RTOL, atol=tolerance)
    assert all(len(set(row)) == k for row in indices.tolist()), "repeated neighbour"
    for row in range(n):
        expected = set(np.flatnonzero(inside[row]).tolist())
        assert expected <= set(indices[row].tolist()), (row, expected, indices[row])
        assert expected <= set(sk_indices[row].tolist())
    differing = indices != sk_indices
    gaps = np.abs(np.take_along_axis(full, indices, axis=1) - np.take_along_axis(full, sk_indices, axis=1))
    assert np.all(gaps[differing] <= tolerance), np.flatnonzero(np.any(differing & (gaps > tolerance), axis=1))
    stable = np.argsort(full, axis=1, kind="stable")[:, :k]
    if exact_ties:
        np.testing.assert_array_equal(indices, stable)
    _TIE_COUNTS[(*key, "k: rows with ties")] = int(tied.sum())
    _TIE_COUNTS[(*key, "k: order differs from scikit-learn")] = int(np.any(differing, axis=1).sum())
    _TIE_COUNTS[(*key, "k: knn_gpu differs from lower-index order")] = int(np.any(indices != stable, axis=1).sum())
    _TIE_COUNTS[(*key, "k: scikit-learn differs from lower-index order")] = int(
        np.any(sk_indices != stable, axis=1).sum()
    )


def _graph_rows(graph, n, k):
    """(distances, indices), shape (n, k), of a k-neighbour graph in distance mode, rows in stored order."""
    assert isinstance(graph, scipy.sparse.csr_matrix) and graph.shape[0] == n
    np.testing.assert_array_equal(np.diff(graph.indptr), np.full(n, k))
    return graph.data.reshape(n, k), graph.indices.reshape(n, k)


def _sorted_rows(distances, indices):
    """Each row by (distance, index): the order both libraries promise up to ties."""
    orders = np.array([np.lexsort((i, d)) for d, i in zip(distances, indices)])
    return np.take_along_axis(distances, orders, axis=1), np.take_along_axis(indices, orders, axis=1)


def _determined(full, y_train, k):
    """Queries whose k neighbours' labels (targets) are the same whichever tied rows are taken."""
    kth, tolerance, inside, boundary, _ = _tie_analysis(full, k)
    fits = inside.sum(axis=1) + boundary.sum(axis=1) == k
    one_label = np.array([np.unique(y_train[row]).shape[0] == 1 for row in boundary])
    return fits | one_label


def _inverse_distance_weights(distances):
    """scikit-learn's ``weights="distance"``: 1 / d, or in a row with a zero distance 1 there and 0 elsewhere."""
    with np.errstate(divide="ignore"):
        w = 1.0 / distances
    zero = np.isinf(w)
    rows = zero.any(axis=1)
    w[rows] = zero[rows]
    return w


def _check_k_predictions(backend, model, on_backend, reference, full, y_train, weights, neighbours, key):
    """Predictions equal to scikit-learn's where determined; everywhere the vote of knn_gpu's checked neighbours.

    Determined: the neighbours' labels (targets) do not depend on which tied rows are taken and, for
    the floating-point votes of ``weights="distance"``, the winner leads by more than rounding.
    """
    n = full.shape[0]
    determined = _determined(full, y_train, K)
    expected = reference["predict", weights]
    distances, indices = neighbours
    w = np.ones_like(distances) if weights == "uniform" else _inverse_distance_weights(distances)
    if ("predict_proba", weights) in reference:
        classes = np.unique(y_train)
        predicted = backend.check(model.predict(on_backend), (n,))
        proba = backend.check(model.predict_proba(on_backend), (n, classes.shape[0]), backend.xp.float64)
        sk_proba = reference["predict_proba", weights]
        np.testing.assert_allclose(proba[determined], sk_proba[determined], atol=1e-9)
        top = np.sort(sk_proba, axis=1)
        checked = determined & ((top[:, -1] - top[:, -2] > 1e-9) if weights == "distance" else True)
        np.testing.assert_array_equal(predicted[checked], expected[checked])
        own = np.zeros((n, classes.shape[0]))  # the vote of knn_gpu's own neighbours, in NumPy
        np.add.at(own, (np.arange(n)[:, None], np.searchsorted(classes, y_train[indices])), w)
        own /= own.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(proba, own, atol=1e-9)
        chosen = own[np.arange(n), np.searchsorted(classes, predicted)]
        assert np.all(chosen >= own.max(axis=1) - 1e-9)
        differs = predicted != expected
    else:
        predicted = backend.check(model.predict(on_backend), (n,), backend.xp.float64)
        checked = determined
        np.testing.assert_allclose(predicted[checked], expected[checked], rtol=RTOL)
        own = (w * y_train[indices]).sum(axis=1) / w.sum(axis=1)
        np.testing.assert_allclose(predicted, own, rtol=RTOL)
        differs = ~np.isclose(predicted, expected, rtol=RTOL, atol=0)
    _TIE_COUNTS[(*key, f"predict {weights}: labels undetermined by ties")] = int((~determined).sum())
    _TIE_COUNTS[(*key, f"predict {weights}: vote tied")] = int((determined & ~checked).sum())
    _TIE_COUNTS[(*key, f"predict {weights}: differs from scikit-learn")] = int(differs.sum())


def _case(backend, dataset, scaling, metric_id):
    """``(reference, oracle distances, training labels, fit input, queries, key, params)`` of one case on ``backend``."""
    _need_float64(backend)
    standardise = SCALINGS[scaling]
    reference = _reference(dataset, standardise, metric_id)
    _, y_train, _, _ = _data(dataset, standardise)
    fit_input, query_input = _model_inputs(metric_id, dataset, standardise)
    key = (dataset, scaling, metric_id)
    on_fit, on_queries = backend.asarray(fit_input), backend.asarray(query_input)
    return reference, reference["full"], y_train, on_fit, on_queries, key, _params(metric_id)


@pytest.mark.parametrize(("dataset", "scaling", "metric_id"), CASES)
def test_k_neighbours_match_sklearn(backend, dataset, scaling, metric_id):
    """NearestNeighbors.kneighbors and kneighbors_graph, and the k-neighbour classifier or regressor, both weightings."""
    reference, full, y_train, on_fit, on_queries, key, params = _case(backend, dataset, scaling, metric_id)
    n = full.shape[0]

    model = knn_gpu.NearestNeighbors(n_neighbors=K, **params).fit(on_fit)
    distances, indices = model.kneighbors(on_queries)
    distances = backend.check(distances, (n, K), backend.xp.float64)
    indices = backend.check(indices, (n, K), backend.xp.int64)
    exact_ties = metric_id == "precomputed"
    _check_kneighbors(distances, indices, *reference["kneighbors"], full, key, exact_ties)
    graph = model.kneighbors_graph(on_queries, mode="distance")
    if backend.name == "cupy":
        graph = graph.get()
    assert graph.shape == reference["kgraph"].shape
    graph_rows = _sorted_rows(*_graph_rows(graph, n, K))
    sk_rows = _sorted_rows(*_graph_rows(reference["kgraph"], n, K))
    _check_kneighbors(*graph_rows, *sk_rows, full, (*key, "graph"), exact_ties)
    if metric_id in NEIGHBOURS_ONLY:
        return

    estimator = knn_gpu.KNeighborsClassifier if dataset in CLASSIFICATION else knn_gpu.KNeighborsRegressor
    for weights in ("uniform", "distance"):
        model = estimator(K, weights=weights, **params).fit(on_fit, backend.asarray(y_train))
        _check_k_predictions(backend, model, on_queries, reference, full, y_train, weights, (distances, indices), key)


def _check_radius_lists(backend, distances, indices, sk_distances, sk_indices, full, radius, key):
    """Per query: the same set as scikit-learn's and the oracle's, ascending distances, order free only in ties."""
    assert isinstance(indices, np.ndarray) and indices.dtype == object and indices.shape == sk_indices.shape
    tolerance = _tie_tolerance(full)
    differing = empty = 0
    for row, (d, i, sk_d, sk_i) in enumerate(zip(distances, indices, sk_distances, sk_indices)):
        m = sk_i.shape[0]
        d = backend.check(d, (m,), backend.xp.float64)
        i = backend.check(i, (m,), backend.xp.int64)
        np.testing.assert_array_equal(np.sort(i), np.sort(sk_i))
        np.testing.assert_array_equal(np.sort(i), np.flatnonzero(full[row] <= radius))
        np.testing.assert_allclose(d, sk_d, rtol=RTOL, atol=tolerance)
        np.testing.assert_allclose(full[row, i], d, rtol=RTOL, atol=tolerance)
        if not np.array_equal(i, sk_i):
            differing += 1
            positions = np.flatnonzero(i != sk_i)
            gaps = np.abs(full[row, i[positions]] - full[row, sk_i[positions]])
            assert np.all(gaps <= tolerance), (row, i, sk_i)
        empty += m == 0
    _TIE_COUNTS[(*key, "radius: order differs from scikit-learn")] = differing
    _TIE_COUNTS[(*key, "radius: queries without neighbours")] = empty


@pytest.mark.parametrize(("dataset", "scaling", "metric_id"), CASES)
def test_radius_neighbours_match_sklearn(backend, dataset, scaling, metric_id):
    """radius_neighbors (sorted), radius_neighbors_graph, and the radius classifier or regressor, both weightings."""
    reference, full, y_train, on_fit, on_queries, key, params = _case(backend, dataset, scaling, metric_id)
    n, radius = full.shape[0], reference["radius"]

    model = knn_gpu.NearestNeighbors(radius=radius, **params).fit(on_fit)
    distances, indices = model.radius_neighbors(on_queries, sort_results=True)
    _check_radius_lists(backend, distances, indices, *reference["radius_neighbors"], full, radius, key)
    graph = model.radius_neighbors_graph(on_queries, mode="distance")
    if backend.name == "cupy":
        graph = graph.get()
    expected = reference["rgraph"]
    assert isinstance(graph, scipy.sparse.csr_matrix) and graph.shape == expected.shape
    np.testing.assert_array_equal(graph.indptr, expected.indptr)
    mine = graph.copy()
    mine.sort_indices()
    expected = expected.copy()
    expected.sort_indices()
    np.testing.assert_array_equal(mine.indices, expected.indices)
    np.testing.assert_allclose(mine.data, expected.data, rtol=RTOL, atol=_tie_tolerance(full))
    if metric_id in NEIGHBOURS_ONLY:
        return

    for weights in ("uniform", "distance"):
        expected = reference["radius_predict", weights]
        if dataset in CLASSIFICATION:
            model = knn_gpu.RadiusNeighborsClassifier(radius, weights=weights, outlier_label="most_frequent", **params)
            model.fit(on_fit, backend.asarray(y_train))
            classes = np.unique(y_train)
            proba = backend.check(model.predict_proba(on_queries), (n, classes.shape[0]), backend.xp.float64)
            sk_proba = reference["radius_predict_proba", weights]
            np.testing.assert_allclose(proba, sk_proba, atol=1e-9)
            top = np.sort(sk_proba, axis=1)
            # Uniform votes are exact counts (ties go to the first class in both); distance votes are rounded.
            checked = (top[:, -1] - top[:, -2] > 1e-9) | (weights == "uniform")
            predicted = backend.check(model.predict(on_queries), (n,))
            np.testing.assert_array_equal(predicted[checked], expected[checked])
            _TIE_COUNTS[(*key, f"radius predict {weights}: vote tied")] = int((~checked).sum())
            _TIE_COUNTS[(*key, f"radius predict {weights}: differs from scikit-learn")] = int(
                (predicted != expected).sum()
            )
        else:
            model = knn_gpu.RadiusNeighborsRegressor(radius, weights=weights, **params)
            model.fit(on_fit, backend.asarray(y_train))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                predicted = backend.check(model.predict(on_queries), (n,), backend.xp.float64)
            nan = np.isnan(expected)
            assert any("no neighbors within specified radius" in str(w.message) for w in caught) == nan.any()
            np.testing.assert_array_equal(np.isnan(predicted), nan)
            np.testing.assert_allclose(predicted[~nan], expected[~nan], rtol=RTOL)


@pytest.mark.parametrize("alias", ["l1", "cityblock"])
def test_manhattan_aliases_on_raw_digits(backend, alias):
    """The names l1 and cityblock give manhattan's answers (scikit-learn's, tie-aware)."""
    _need_float64(backend)
    reference = _reference("digits", False, "manhattan")
    train, y_train, queries, _ = _data("digits", False)
    model = knn_gpu.KNeighborsClassifier(K, metric=alias).fit(backend.asarray(train), backend.asarray(y_train))
    distances, indices = model.kneighbors(backend.asarray(queries))
    n = queries.shape[0]
    distances = backend.check(distances, (n, K), backend.xp.float64)
    indices = backend.check(indices, (n, K), backend.xp.int64)
    _check_kneighbors(distances, indices, *reference["kneighbors"], reference["full"], ("digits", "raw", alias))
    _check_k_predictions(
        backend, model, backend.asarray(queries), reference, reference["full"], y_train, "uniform",
        (distances, indices), ("digits", "raw", alias),
    )  # fmt: skip


def test_report_ties():
    """Not a check: prints the tie-affected query counts gathered above (run with -s)."""
    for key, count in sorted(_TIE_COUNTS.items()):
        if count:
            print(*key, count)
