"""Weighted Minkowski (``metric_params={"w": w}``) in the drop-in classes, on every backend.

The distance is scikit-learn's ``(sum_i w_i |x_i - y_i|^p)^(1/p)``; knn_gpu
scales the features by ``w ** (1/p)`` and searches the unweighted metric. The
answers are compared with scikit-learn and with the plain float64 oracle
below, and the caller's arrays must come back untouched.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from knn_gpu import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    NearestNeighbors,
    RadiusNeighborsRegressor,
    kneighbors_graph,
    radius_neighbors_graph,
)

sklearn_neighbors = pytest.importorskip("sklearn.neighbors")

POWERS = (1, 1.5, 2, 3)


def weighted_minkowski(queries: np.ndarray, train: np.ndarray, w: np.ndarray, p: float) -> np.ndarray:
    """The oracle: every query-to-train distance in float64, straight from the definition."""
    differences = np.abs(queries[:, None, :].astype(np.float64) - train[None, :, :].astype(np.float64))
    return np.sum(w * differences**p, axis=2) ** (1.0 / p)


def oracle_kneighbors(queries, train, w, p, k, *, leave_one_out=False):
    distances = weighted_minkowski(queries, train, w, p)
    if leave_one_out:
        np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def _data(seed=0, n_train=60, n_queries=9, n_features=5):
    rng = np.random.default_rng(seed)
    train = rng.random((n_train, n_features))
    queries = rng.random((n_queries, n_features))
    w = rng.random(n_features) * 3
    w[1] = 0.0  # a feature that does not count
    return train, queries, w


def _need_float64(backend):
    if not backend.has_float64():
        pytest.skip(f"{backend.name}'s device has no float64")


@pytest.mark.parametrize("p", POWERS)
def test_kneighbors_match_sklearn_and_the_oracle(backend, p):
    _need_float64(backend)
    train, queries, w = _data()
    k = 6
    ours = NearestNeighbors(n_neighbors=k, p=p, metric_params={"w": backend.asarray(w)}).fit(backend.asarray(train))
    theirs = sklearn_neighbors.NearestNeighbors(n_neighbors=k, p=p, metric_params={"w": w}).fit(train)
    for X, host_X, leave_one_out in ((backend.asarray(queries), queries, False), (None, None, True)):
        n = train.shape[0] if X is None else queries.shape[0]
        distances, indices = ours.kneighbors(X)
        distances = backend.check(distances, (n, k), backend.xp.float64)
        indices = backend.check(indices, (n, k), backend.xp.int64)
        expected = oracle_kneighbors(train if X is None else queries, train, w, p, k, leave_one_out=leave_one_out)
        np.testing.assert_allclose(distances, expected[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(indices, expected[1])
        sk_distances, sk_indices = theirs.kneighbors(host_X)
        np.testing.assert_allclose(distances, sk_distances, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(indices, sk_indices)


@pytest.mark.parametrize("p", POWERS)
def test_radius_queries_match_sklearn_and_the_oracle(backend, p):
    _need_float64(backend)
    train, queries, w = _data(1)
    radius = float(np.median(weighted_minkowski(queries, train, w, p))) / 2
    ours = NearestNeighbors(radius=radius, p=p, metric_params={"w": w}).fit(backend.asarray(train))
    theirs = sklearn_neighbors.NearestNeighbors(radius=radius, p=p, metric_params={"w": w}).fit(train)
    for X, host_X in ((backend.asarray(queries), queries), (None, None)):
        distances, indices = ours.radius_neighbors(X, sort_results=True)
        sk_distances, sk_indices = theirs.radius_neighbors(host_X, sort_results=True)
        oracle = weighted_minkowski(train if X is None else queries, train, w, p)
        assert len(indices) == len(sk_indices) > 0
        for row, (mine, mine_d, their, their_d) in enumerate(zip(indices, distances, sk_indices, sk_distances)):
            mine = backend.check(mine, (len(their),), backend.xp.int64)
            mine_d = backend.check(mine_d, (len(their),), backend.xp.float64)
            expected = np.flatnonzero(oracle[row] <= radius)
            if X is None:
                expected = expected[expected != row]
            np.testing.assert_array_equal(np.sort(mine), expected)
            np.testing.assert_array_equal(mine, their)
            np.testing.assert_allclose(mine_d, their_d, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", POWERS)
def test_graphs_and_predictions_match_sklearn(p):
    train, queries, w = _data(2)
    y = (train[:, 0] * 3).astype(np.int64)
    params = {"p": p, "metric_params": {"w": w}}
    for mode in ("connectivity", "distance"):
        ours = kneighbors_graph(train, 4, mode=mode, **params)
        theirs = sklearn_neighbors.kneighbors_graph(train, 4, mode=mode, **params)
        np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-12, atol=1e-14)
        ours = radius_neighbors_graph(train, 0.6, mode=mode, **params)
        theirs = sklearn_neighbors.radius_neighbors_graph(train, 0.6, mode=mode, **params)
        np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-12, atol=1e-14)
    for ours, theirs, targets in (
        (KNeighborsClassifier(5, weights="distance", **params), sklearn_neighbors.KNeighborsClassifier, y),
        (KNeighborsRegressor(5, weights="distance", **params), sklearn_neighbors.KNeighborsRegressor, train[:, 2]),
        (RadiusNeighborsRegressor(radius=2.0, **params), sklearn_neighbors.RadiusNeighborsRegressor, train[:, 2]),
    ):
        theirs = theirs(**_sklearn_params(ours)).fit(train, targets)
        np.testing.assert_allclose(ours.fit(train, targets).predict(queries), theirs.predict(queries), rtol=1e-12)


def _sklearn_params(estimator):
    """The estimator's parameters that scikit-learn's class of the same name takes."""
    knn_gpu_only = ("backend", "batch_size", "memory_budget", "out_of_core")
    return {name: value for name, value in estimator.get_params().items() if name not in knn_gpu_only}


def test_out_of_core_matches_in_memory():
    train, queries, w = _data(3)
    params = {"n_neighbors": 5, "p": 3, "metric_params": {"w": w}}
    expected = NearestNeighbors(**params).fit(train).kneighbors(queries)
    streamed = NearestNeighbors(**params, out_of_core=True).fit(train).kneighbors(queries)
    np.testing.assert_allclose(streamed[0], expected[0], rtol=1e-12)
    np.testing.assert_array_equal(streamed[1], expected[1])


def test_float32_data_is_weighted_too(backend):
    train, queries, w = _data(4)
    train, queries = train.astype(np.float32), queries.astype(np.float32)
    model = NearestNeighbors(n_neighbors=4, p=3, metric_params={"w": w}).fit(backend.asarray(train))
    distances, indices = model.kneighbors(backend.asarray(queries))
    distances = backend.check(distances, (queries.shape[0], 4), backend.xp.float32)
    expected = oracle_kneighbors(queries, train, w, 3, 4)
    np.testing.assert_allclose(distances, expected[0], rtol=1e-5)
    np.testing.assert_array_equal(backend.check(indices, (queries.shape[0], 4)), expected[1])


def test_the_callers_arrays_are_unchanged(backend):
    _need_float64(backend)
    train, queries, w = _data(5)
    copies = [train.copy(), queries.copy(), w.copy()]
    on_backend = [backend.asarray(train), backend.asarray(queries), backend.asarray(w)]
    model = NearestNeighbors(n_neighbors=3, p=1.5, metric_params={"w": on_backend[2]}).fit(on_backend[0])
    model.kneighbors(on_backend[1])
    model.kneighbors()
    model.radius_neighbors(on_backend[1], radius=0.5)
    for original, copy, placed in zip((train, queries, w), copies, on_backend):
        np.testing.assert_array_equal(original, copy)
        np.testing.assert_array_equal(backend.to_numpy(placed), copy)
    assert model.effective_metric_params_["w"] is on_backend[2]  # scikit-learn keeps the caller's w, unconverted
    # The training rows kept are the caller's, not the scaled ones: fit(model) and the graphs reuse them.
    np.testing.assert_array_equal(backend.to_numpy(model._fit_X), train)


@pytest.mark.parametrize(
    "params",
    [
        {"p": 3},
        {"metric_params": {"p": 1}},
        {"p": 2},
        {"p": np.inf},
        {"p": 2, "metric_params": {"w": np.ones(3)}},
        {"p": 1, "metric_params": {"w": np.ones(3)}},
        {"metric_params": {"p": 1.5, "w": np.ones(3)}},
        {"metric": "euclidean"},
        {"metric": "manhattan", "metric_params": {"p": 3}},
    ],
)
def test_effective_metric_is_sklearns(params):
    X = np.random.default_rng(0).random((10, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # p given twice: both warn
        ours = NearestNeighbors(**params).fit(X)
        theirs = sklearn_neighbors.NearestNeighbors(**params).fit(X)
    assert ours.effective_metric_ == theirs.effective_metric_
    assert ours.effective_metric_params_.keys() == theirs.effective_metric_params_.keys()
    for name, value in theirs.effective_metric_params_.items():
        assert ours.effective_metric_params_[name] is value or ours.effective_metric_params_[name] == value


@pytest.mark.parametrize(
    ("w", "match"),
    [
        (np.array([1.0, -1.0, 1.0]), "non-negative"),
        (np.array([1.0, np.nan, 1.0]), "finite"),
        (np.array([1.0, np.inf, 1.0]), "finite"),
        (np.array([1.0, 2.0]), r"one weight per feature \(3\)"),
        (np.ones((1, 3)), r"1-D"),
        ("abc", r"1-D array of non-negative"),
    ],
)
def test_bad_weights_raise(w, match):
    X = np.random.default_rng(0).random((10, 3))
    with pytest.raises(ValueError, match=r"metric_params\['w'\].*" + match):
        NearestNeighbors(n_neighbors=2, p=3, metric_params={"w": w}).fit(X)


def test_weights_with_infinite_p_or_kd_tree_raise():
    X = np.random.default_rng(0).random((10, 3))
    with pytest.raises(ValueError, match=r"metric_params\['w'\] needs a finite p"):
        NearestNeighbors(p=np.inf, metric_params={"w": np.ones(3)}).fit(X)
    with pytest.raises(ValueError, match=r"algorithm='kd_tree' is not valid for metric='minkowski' with a weight"):
        NearestNeighbors(algorithm="kd_tree", metric_params={"w": np.ones(3)}).fit(X)
    # ball_tree (scikit-learn's choice for weights) and the others answer.
    NearestNeighbors(n_neighbors=2, algorithm="ball_tree", metric_params={"w": np.ones(3)}).fit(X).kneighbors(X)
