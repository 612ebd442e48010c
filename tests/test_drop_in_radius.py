"""The scikit-learn radius names (``RadiusNeighbors*``, ``radius_neighbors[_graph]``) against scikit-learn, on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn import datasets
from sklearn import neighbors as sk
from sklearn.preprocessing import StandardScaler

import knn_gpu
from knn_gpu import (
    NearestNeighbors,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
    RadiusNeighborsTransformer,
    radius_neighbors_graph,
)
from knn_gpu._engine.radius_queries import query_numbers, segment_sums

LOADERS = {"iris": datasets.load_iris, "wine": datasets.load_wine, "digits": datasets.load_digits}


def _data(loader, standardise):
    """Train/query halves with exact ties broken (no distance sits on the radius up to rounding), and a radius.

    The radius is a little more than the largest distance from a query to its
    nearest training row, so that every query has a neighbour; then a far
    query (an outlier) is appended.
    """
    X, y = loader(return_X_y=True)
    X, y = X[:600].astype(np.float64), y[:600]  # digits: 600 of its 1797 samples, for the suite's time
    if standardise:
        X = StandardScaler().fit_transform(X)
    X = X + np.random.default_rng(0).normal(0.0, 1e-6 * (np.abs(X).max() or 1.0), X.shape)
    train, y_train, queries, y_test = X[::2], y[::2], X[1::2], y[1::2]
    radius = 1.05 * float(np.max(sk.NearestNeighbors(n_neighbors=1).fit(train).kneighbors(queries)[0]))
    queries = np.vstack([queries, train.max(axis=0) + 10 * radius])
    return train, y_train, queries, np.append(y_test, y_train[0]), radius


def _need_float64(backend):
    if not backend.has_float64():
        pytest.skip("device has no float64")


def _check_lists(backend, ours, theirs, dtype=None, sort=True):
    """Object arrays of per-query backend arrays, equal (as sets when ``sort``) to scikit-learn's."""
    assert isinstance(ours, np.ndarray) and ours.dtype == object and ours.shape == theirs.shape
    for mine, expected in zip(ours, theirs):
        host = backend.check(mine, (expected.shape[0],), dtype)
        np.testing.assert_allclose(np.sort(host) if sort else host, np.sort(expected) if sort else expected, rtol=1e-12)


@pytest.mark.parametrize("standardise", [False, True], ids=["raw", "standardised"])
@pytest.mark.parametrize("dataset", list(LOADERS))
def test_radius_neighbors_and_graphs_match_sklearn(backend, dataset, standardise):
    _need_float64(backend)
    train, _, queries, _, radius = _data(LOADERS[dataset], standardise)
    ours = NearestNeighbors(radius=radius).fit(backend.asarray(train))
    theirs = sk.NearestNeighbors(radius=radius).fit(train)
    for X, sk_X in ((backend.asarray(queries), queries), (None, None)):
        distances, indices = ours.radius_neighbors(X, sort_results=True)
        sk_distances, sk_indices = theirs.radius_neighbors(sk_X, sort_results=True)
        _check_lists(backend, indices, sk_indices, backend.xp.int64)
        _check_lists(backend, distances, sk_distances, backend.xp.float64, sort=False)  # ascending, as theirs
        only = ours.radius_neighbors(X, radius / 2, return_distance=False)
        _check_lists(backend, only, theirs.radius_neighbors(sk_X, radius / 2, return_distance=False))
        for mode in ("connectivity", "distance"):
            graph = ours.radius_neighbors_graph(X, mode=mode)
            expected = theirs.radius_neighbors_graph(sk_X, mode=mode)
            assert isinstance(graph, scipy.sparse.csr_matrix) and graph.shape == expected.shape
            assert graph.nnz == expected.nnz
            np.testing.assert_allclose(graph.toarray(), expected.toarray(), rtol=1e-12)


@pytest.mark.parametrize("outlier_label", [None, "most_frequent", "class", -1])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("standardise", [False, True], ids=["raw", "standardised"])
@pytest.mark.parametrize("dataset", list(LOADERS))
def test_classifier_matches_sklearn(backend, dataset, standardise, weights, outlier_label):
    _need_float64(backend)
    train, y_train, queries, y_test, radius = _data(LOADERS[dataset], standardise)
    if outlier_label == "class":
        outlier_label = int(y_train[-1])
    params = {"radius": radius, "weights": weights, "outlier_label": outlier_label}
    ours = RadiusNeighborsClassifier(**params).fit(backend.asarray(train), backend.asarray(y_train))
    theirs = sk.RadiusNeighborsClassifier(**params).fit(train, y_train)
    assert ours.outlier_label_ == theirs.outlier_label_
    on_backend = backend.asarray(queries)
    if outlier_label is None:
        with pytest.raises(ValueError, match="No neighbors found for test samples") as ours_error:
            ours.predict(on_backend)
        with pytest.raises(ValueError) as theirs_error:
            theirs.predict(queries)
        assert str(ours_error.value) == str(theirs_error.value)
        queries, y_test, on_backend = queries[:-1], y_test[:-1], on_backend[:-1, ...]
    with warnings.catch_warnings(record=True) as ours_warnings:
        warnings.simplefilter("always")
        proba = ours.predict_proba(on_backend)
        predicted = ours.predict(on_backend)
    with warnings.catch_warnings(record=True) as theirs_warnings:
        warnings.simplefilter("always")
        expected_proba = theirs.predict_proba(queries)
        expected = theirs.predict(queries)
    assert [str(w.message) for w in ours_warnings] == [str(w.message) for w in theirs_warnings]
    n = queries.shape[0]
    np.testing.assert_allclose(
        backend.check(proba, (n, theirs.classes_.shape[0]), backend.xp.float64), expected_proba, atol=1e-12
    )
    np.testing.assert_array_equal(backend.check(predicted, (n,)), expected)
    assert ours.score(on_backend, backend.asarray(y_test)) == pytest.approx(theirs.score(queries, y_test))
    if outlier_label is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_array_equal(backend.to_numpy(ours.predict(None)), theirs.predict(None))


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("standardise", [False, True], ids=["raw", "standardised"])
def test_regressor_matches_sklearn_on_diabetes(backend, standardise, weights):
    _need_float64(backend)
    train, y_train, queries, y_test, radius = _data(datasets.load_diabetes, standardise)
    ours = RadiusNeighborsRegressor(radius, weights=weights).fit(backend.asarray(train), backend.asarray(y_train))
    theirs = sk.RadiusNeighborsRegressor(radius=radius, weights=weights).fit(train, y_train)
    with pytest.warns(UserWarning, match="no neighbors within specified radius; predicting NaN"):
        predicted = ours.predict(backend.asarray(queries))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs.predict(queries)
    predicted = backend.check(predicted, (queries.shape[0],), backend.xp.float64)
    assert np.isnan(predicted[-1])
    np.testing.assert_allclose(predicted, expected, rtol=1e-9)
    inliers = slice(0, -1)
    assert ours.score(backend.asarray(queries[inliers]), backend.asarray(y_test[inliers])) == pytest.approx(
        theirs.score(queries[inliers], y_test[inliers]), rel=1e-9
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(backend.to_numpy(ours.predict(None)), theirs.predict(None), rtol=1e-9)


def test_several_outputs_and_string_labels():
    X, y = datasets.load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    two = np.stack([y, (y + 1) % 3], axis=1)
    for targets in (labels, two):
        ours = RadiusNeighborsClassifier(0.6, weights="distance", outlier_label="most_frequent").fit(
            X[::2], targets[::2]
        )
        theirs = sk.RadiusNeighborsClassifier(0.6, weights="distance", outlier_label="most_frequent").fit(
            X[::2], targets[::2]
        )
        np.testing.assert_array_equal(ours.predict(X[1::2] + 0.05), theirs.predict(X[1::2] + 0.05))
    regressor = RadiusNeighborsRegressor(0.6).fit(X[::2], two[::2].astype(float))
    np.testing.assert_allclose(
        regressor.predict(X[1::2]),
        sk.RadiusNeighborsRegressor(0.6).fit(X[::2], two[::2].astype(float)).predict(X[1::2]),
    )


def test_callable_weights_get_sklearns_object_array():
    X, y = datasets.load_iris(return_X_y=True)

    def inverse_square(distances):
        return np.array([1 / (d * d + 1e-3) for d in distances], dtype=object)

    ours = RadiusNeighborsClassifier(0.6, weights=inverse_square, outlier_label=0).fit(X[::2], y[::2])
    theirs = sk.RadiusNeighborsClassifier(0.6, weights=inverse_square, outlier_label=0).fit(X[::2], y[::2])
    np.testing.assert_allclose(ours.predict_proba(X[1::2]), theirs.predict_proba(X[1::2]), atol=1e-12)


def test_transformer_and_function_match_sklearn():
    X = datasets.load_iris().data + np.random.default_rng(1).normal(0, 1e-6, (150, 4))
    for mode in ("distance", "connectivity"):
        ours = RadiusNeighborsTransformer(mode=mode, radius=0.7).fit_transform(X)
        theirs = sk.RadiusNeighborsTransformer(mode=mode, radius=0.7).fit_transform(X)
        assert (ours != theirs).nnz == 0 if mode == "connectivity" else abs(ours - theirs).max() < 1e-12
        assert ours.nnz == theirs.nnz
        for include_self in (False, True, "auto"):
            graph = radius_neighbors_graph(X, 0.7, mode=mode, include_self=include_self)
            expected = sk.radius_neighbors_graph(X, 0.7, mode=mode, include_self=include_self)
            assert graph.nnz == expected.nnz and abs(graph - expected).max() < 1e-12
    model = NearestNeighbors(radius=0.7).fit(X)
    assert radius_neighbors_graph(model, 0.5).nnz == sk.radius_neighbors_graph(X, 0.5).nnz
    names = RadiusNeighborsTransformer().fit(X[:3]).get_feature_names_out()
    np.testing.assert_array_equal(names, sk.RadiusNeighborsTransformer().fit(X[:3]).get_feature_names_out())


def test_parameters_and_errors():
    for name in ("RadiusNeighborsClassifier", "RadiusNeighborsRegressor", "RadiusNeighborsTransformer"):
        extras = {"backend": None, "batch_size": None, "memory_budget": None, "out_of_core": None}
        assert getattr(knn_gpu, name)().get_params() == {**getattr(sk, name)().get_params(), **extras}, name
    X, y = np.arange(10.0).reshape(5, 2), [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="The 'radius' parameter of RadiusNeighborsClassifier must be"):
        RadiusNeighborsClassifier(radius=-1).fit(X, y)
    with pytest.raises(ValueError, match="The length of outlier_label: \\[0, 1\\] is inconsistent"):
        RadiusNeighborsClassifier(outlier_label=[0, 1]).fit(X, y)
    with pytest.raises(TypeError, match="The dtype of outlier_label a is inconsistent with classes"):
        RadiusNeighborsClassifier(outlier_label="a").fit(X, y)
    with pytest.raises(TypeError, match="is supposed to be a scalar"):
        RadiusNeighborsClassifier(outlier_label=[[0, 1]]).fit(X, y)
    model = NearestNeighbors().fit(X)
    with pytest.raises(ValueError, match="return_distance must be True if sort_results is True."):
        model.radius_neighbors(X, return_distance=False, sort_results=True)
    with pytest.raises(ValueError, match='Unsupported mode, must be one of "connectivity"'):
        model.radius_neighbors_graph(X, mode="blah")
    with pytest.raises(ValueError, match="radius must be a non-negative"):
        model.radius_neighbors(X, radius=-1.0)
    with pytest.raises(ValueError, match="no radius search"):
        NearestNeighbors(metric="inner_product").fit(X).radius_neighbors(X)
    with pytest.raises(ValueError, match="need the training rows in memory"):
        NearestNeighbors(out_of_core=True).fit(X).radius_neighbors()  # leave-one-out: the rows as queries
    with pytest.raises(knn_gpu.NotFittedError):
        RadiusNeighborsRegressor().predict(X)
    for name in ("RadiusNeighborsClassifier", "RadiusNeighborsRegressor", "RadiusNeighborsTransformer"):
        for method in ("kneighbors", "kneighbors_graph"):
            assert hasattr(getattr(sk, name)(), method) is hasattr(getattr(knn_gpu, name)(), method) is False


def test_segment_sums_and_query_numbers(backend):
    xp = backend.xp
    offsets = backend.asarray(np.array([0, 2, 2, 5], dtype=np.int64))
    values = backend.asarray(np.array([1.0, 2.0, 3.0, 4.0, 5.0]) if backend.has_float64() else [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(backend.check(segment_sums(values, offsets, xp=xp), (3,)), [3, 0, 12])
    np.testing.assert_array_equal(backend.check(query_numbers(offsets, 5, xp=xp), (5,), xp.int64), [0, 0, 2, 2, 2])


def test_segment_sums_keep_each_querys_digits_after_a_huge_value(backend):
    """A running sum over all queries, differenced at the offsets, lost the digits of every query after a huge value.

    Here a near-duplicate's 1/d weight (1e13) came before a query with weights near 1: its sum was off by ~1e-4.
    """
    dtype = np.float64 if backend.has_float64() else np.float32
    values = np.array([1e13, 1.0, 0.1, 0.3, 0.7, 2.0], dtype=dtype)
    offsets = backend.asarray(np.array([0, 1, 1, 4, 6], dtype=np.int64))
    sums = segment_sums(backend.asarray(values), offsets, xp=backend.xp)
    np.testing.assert_allclose(
        backend.check(sums, (4,)), [1e13, 0.0, 1.4, 2.7], rtol=1e-12 if dtype == np.float64 else 1e-6
    )
    columns = segment_sums(backend.asarray(np.stack([values, -values], axis=1)), offsets, xp=backend.xp)
    np.testing.assert_allclose(
        backend.check(columns, (4, 2))[:, 1], [-1e13, 0.0, -1.4, -2.7], rtol=1e-12 if dtype == np.float64 else 1e-6
    )
    with_inf = segment_sums(
        backend.asarray(np.append(values, np.inf)), backend.asarray(np.array([0, 1, 1, 4, 7])), xp=backend.xp
    )
    np.testing.assert_allclose(
        backend.check(with_inf, (4,))[:3], [1e13, 0.0, 1.4], rtol=1e-12 if dtype == np.float64 else 1e-6
    )
    assert backend.to_numpy(with_inf)[3] == np.inf  # IEEE's sum, as scikit-learn's
    # Non-finite values stay in their own query: an infinity or a NaN before a query does not reach it.
    special = np.array([np.inf, 1.0, np.nan, 2.0, np.inf, -np.inf, -np.inf, 0.5, 0.25], dtype=dtype)
    sums = segment_sums(
        backend.asarray(special), backend.asarray(np.array([0, 2, 3, 4, 6, 7, 9], dtype=np.int64)), xp=backend.xp
    )
    np.testing.assert_array_equal(backend.check(sums, (6,)), [np.inf, np.nan, 2.0, np.nan, -np.inf, 0.75])
    if dtype == np.float32:
        return
    X, Q = np.array([[0.0], [4.7], [5.4]]), np.array([[1e-13], [5.0]])
    ours = RadiusNeighborsRegressor(1.0, weights="distance").fit(backend.asarray(X), backend.asarray([0.0, 1.0, 2.0]))
    theirs = sk.RadiusNeighborsRegressor(radius=1.0, weights="distance").fit(X, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(backend.to_numpy(ours.predict(backend.asarray(Q))), theirs.predict(Q), rtol=1e-12)
    ours = RadiusNeighborsClassifier(1.0, weights="distance").fit(backend.asarray(X), backend.asarray([1, 1, 2]))
    theirs = sk.RadiusNeighborsClassifier(1.0, weights="distance").fit(X, [1, 1, 2])
    np.testing.assert_allclose(
        backend.to_numpy(ours.predict_proba(backend.asarray(Q))), theirs.predict_proba(Q), rtol=1e-12
    )


@pytest.mark.parametrize(
    "estimator",
    [RadiusNeighborsClassifier(), RadiusNeighborsRegressor(), RadiusNeighborsTransformer()],
    ids=lambda estimator: type(estimator).__name__,
)
def test_check_estimator(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, expected_failed_checks={}, on_fail=None)
    failures = [r for r in results if r["status"] == "failed"]
    assert not failures, [(r["check_name"], str(r["exception"])[:300]) for r in failures]
