"""KNN and KNNClassifier on every backend, against scikit-learn and the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import oracle_distances, oracle_kneighbors
from sklearn import datasets
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from knn_gpu import KNN, KNNClassifier
from knn_gpu.cli.demo import tutorial_data


def _jitter(X, seed=0):
    """Break the exact ties of a data set so that every correct method agrees."""
    return X + np.random.default_rng(seed).normal(0.0, 1e-6, X.shape)


def test_tutorial_scenario(backend):
    X, y, queries = tutorial_data(seed=0)
    model = KNN(num_neighbors=5).fit(backend.asarray(X), backend.asarray(y))
    dtype = backend.asarray(X).dtype
    predictions = backend.check(model.predict(backend.asarray(queries)), (4,), dtype)
    _, neighbors = oracle_kneighbors(queries, X, 5)
    np.testing.assert_allclose(predictions, y[neighbors].mean(axis=1), rtol=1e-6)
    assert predictions[0] <= 0.2 and predictions[-1] >= 0.8
    assert np.all(np.diff(predictions) >= 0)
    neighbors_list = model.get_neighbors(queries[0])
    assert [index for index, _ in neighbors_list] == neighbors[0].tolist()
    assert all(type(i) is int and type(d) is float for i, d in neighbors_list)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_regressor_matches_sklearn(backend, numpy_backend, weights, metric):
    X, y = datasets.load_diabetes(return_X_y=True)
    X = _jitter(X)
    if not backend.has_float64():
        pytest.skip("device has no float64")
    train, queries, y_train = X[:300], X[300:], y[:300]
    model = KNN(7, weights=weights, metric=metric).fit(backend.asarray(train), backend.asarray(y_train))
    predicted = backend.check(model.predict(backend.asarray(queries)), (queries.shape[0],), backend.xp.float64)
    reference = KNeighborsRegressor(7, weights=weights, metric=metric, algorithm="brute").fit(train, y_train)
    np.testing.assert_allclose(predicted, reference.predict(queries), rtol=1e-9)
    numpy_model = KNN(7, weights=weights, metric=metric).fit(train, y_train)
    np.testing.assert_allclose(predicted, numpy_model.predict(queries), rtol=1e-12)
    assert model.score(backend.asarray(queries), backend.asarray(y[300:])) == pytest.approx(
        reference.score(queries, y[300:]), rel=1e-9
    )


def test_regressor_multi_output(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3)).astype(np.float32)
    y = rng.standard_normal((80, 2)).astype(np.float32)
    model = KNN(4).fit(backend.asarray(X), backend.asarray(y))
    predicted = backend.check(model.predict(backend.asarray(X[:9])), (9, 2), backend.xp.float32)
    _, neighbors = oracle_kneighbors(X[:9], X, 4)
    np.testing.assert_allclose(predicted, y[neighbors].mean(axis=1), rtol=1e-5)


@pytest.mark.parametrize(
    "loader", [datasets.load_iris, datasets.load_wine, datasets.load_breast_cancer, datasets.load_digits]
)
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_classifier_matches_sklearn(backend, loader, weights):
    X, y = loader(return_X_y=True)
    X = _jitter(X.astype(np.float64))
    if not backend.has_float64():
        pytest.skip("device has no float64")
    train, y_train = X[::2], y[::2]
    queries = X[1::2]
    model = KNNClassifier(5, weights=weights).fit(backend.asarray(train), backend.asarray(y_train))
    reference = KNeighborsClassifier(5, weights=weights, algorithm="brute").fit(train, y_train)
    n_classes = len(np.unique(y_train))
    proba = backend.check(
        model.predict_proba(backend.asarray(queries)), (queries.shape[0], n_classes), backend.xp.float64
    )
    np.testing.assert_allclose(proba, reference.predict_proba(queries), atol=1e-12)
    predicted = backend.check(model.predict(backend.asarray(queries)), (queries.shape[0],))
    np.testing.assert_array_equal(predicted, reference.predict(queries))
    np.testing.assert_array_equal(backend.to_numpy(model.classes_), reference.classes_)
    assert model.score(backend.asarray(queries), backend.asarray(y[1::2])) == pytest.approx(
        reference.score(queries, y[1::2])
    )


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kneighbors_on_training_set_excludes_self(backend, metric):
    """Duplicate-heavy data: a point never lists itself, even with more duplicates than k."""
    rng = np.random.default_rng(1)
    distinct = rng.integers(1, 4, size=(12, 3))
    X = np.concatenate([distinct] * 6 + [rng.integers(1, 4, size=(10, 3))]).astype(np.float32)
    model = KNNClassifier(4, metric=metric).fit(backend.asarray(X), np.arange(X.shape[0]) % 3)
    distances, indices = model.kneighbors()
    distances = backend.check(distances, (X.shape[0], 4), backend.xp.float32)
    indices = backend.check(indices, (X.shape[0], 4), backend.xp.int64)
    assert not (indices == np.arange(X.shape[0])[:, None]).any()
    # scikit-learn's rule on the oracle's k + 1 nearest (ties to the lower index): drop the point
    # itself, or, when more than k duplicates hide it, the first of them ("mask the first duplicate").
    expected, hidden = [], 0
    for row in range(X.shape[0]):
        nearest = list(np.argsort(oracle_distances(X[row : row + 1], X, metric)[0], kind="stable")[:5])
        hidden += row not in nearest
        nearest.remove(row if row in nearest else nearest[0])
        expected.append(nearest)
    assert hidden > 0  # the data exercises the hidden-self case
    np.testing.assert_array_equal(indices, np.asarray(expected))
    sk_distances, _ = NearestNeighbors(n_neighbors=4, algorithm="brute", metric=metric).fit(X).kneighbors()
    np.testing.assert_allclose(distances, sk_distances, atol=1e-6)


def test_classifier_string_labels_and_single_class():
    X = np.array([[0.0], [1.0], [5.0], [6.0], [7.0]])
    y = np.array(["b", "b", "a", "a", "a"])
    model = KNNClassifier(3).fit(X, y)
    np.testing.assert_array_equal(model.classes_, ["a", "b"])
    np.testing.assert_array_equal(model.predict(np.array([[0.2], [6.2]])), ["b", "a"])
    single = KNNClassifier(2).fit(X, np.full(5, 7))
    np.testing.assert_array_equal(single.predict(X), np.full(5, 7))
    np.testing.assert_allclose(single.predict_proba(X), np.ones((5, 1)))


def test_tied_vote_goes_to_smallest_label(backend):
    X = np.array([[0.0], [1.0], [-1.0], [2.0]], dtype=np.float32)
    y = np.array([3, 1, 1, 3])
    model = KNNClassifier(2).fit(backend.asarray(X), backend.asarray(y))
    predicted = backend.to_numpy(model.predict(backend.asarray(np.array([[0.5]], dtype=np.float32)))).tolist()
    assert predicted == [1]


def test_distance_weights_at_zero_distance(backend):
    X = np.array([[0.0], [0.0], [1.0], [2.0]], dtype=np.float32)
    y = np.array([1.0, 3.0, 10.0, 20.0], dtype=np.float32)
    model = KNN(3, weights="distance").fit(backend.asarray(X), backend.asarray(y))
    predicted = backend.to_numpy(model.predict(backend.asarray(np.array([[0.0], [1.5]], dtype=np.float32))))
    np.testing.assert_allclose(predicted, [2.0, (10 / 0.5 + 20 / 0.5 + 1 / 1.5) / (2 / 0.5 + 1 / 1.5)], rtol=1e-6)


def test_callable_weights(backend):
    X = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10, dtype=np.float32)
    model = KNN(3, weights=lambda d: d * 0 + 1).fit(backend.asarray(X), backend.asarray(y))
    predicted = backend.to_numpy(model.predict(backend.asarray(np.array([[4.1]], dtype=np.float32))))
    np.testing.assert_allclose(predicted, [4.0])
    bad = KNN(3, weights=lambda d: d[:, :1]).fit(backend.asarray(X), backend.asarray(y))
    with pytest.raises(ValueError, match="weights callable must return an array of shape"):
        bad.predict(backend.asarray(X[:2]))


def test_results_come_back_in_the_query_namespace(backend, numpy_backend):
    """A model on one backend answers NumPy queries with NumPy results, and vice versa."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.standard_normal(40).astype(np.float32)
    on_backend = KNN(3).fit(backend.asarray(X), backend.asarray(y))
    numpy_result = numpy_backend.check(on_backend.predict(X[:5]), (5,), np.float32)
    on_numpy = KNN(3).fit(X, y)
    backend_result = backend.check(on_numpy.predict(backend.asarray(X[:5])), (5,), backend.xp.float32)
    np.testing.assert_allclose(numpy_result, backend_result)
    distances, indices = on_numpy.kneighbors(backend.asarray(X[:5]))
    backend.check(indices, (5, 3), backend.xp.int64)


def test_host_targets_follow_the_features_device(backend):
    """X on a device, y a NumPy array: the targets move to X's device at fit."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 2)).astype(np.float32)
    y = rng.standard_normal(30).astype(np.float32)
    model = KNN(3).fit(backend.asarray(X), y)
    predicted = backend.check(model.predict(backend.asarray(X[:4])), (4,), backend.xp.float32)
    np.testing.assert_allclose(predicted, KNN(3).fit(X, y).predict(X[:4]), rtol=1e-6)


def test_rejected_dask_fit_keeps_previous_fit():
    da = pytest.importorskip("dask.array")
    X = np.arange(20.0).reshape(10, 2)
    model = KNNClassifier(3).fit(X, np.arange(10) % 2)
    with pytest.raises(ValueError, match="num_neighbors=3 is larger"):
        model.fit(da.from_array(X[:2]), da.from_array(np.array([5, 6])))
    np.testing.assert_array_equal(model.classes_, [0, 1])
    assert type(model.predict(X)) is np.ndarray


def test_estimator_protocol():
    model = KNNClassifier(3, weights="distance", backend="numpy")
    assert model.get_params() == {
        "num_neighbors": 3,
        "weights": "distance",
        "metric": "euclidean",
        "backend": "numpy",
        "batch_size": None,
        "n_jobs": None,
        "memory_budget": None,
        "out_of_core": None,
    }
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert model.set_params(num_neighbors=4) is model and model.num_neighbors == 4
    with pytest.raises(ValueError, match="invalid parameter 'n_neighbors'"):
        model.set_params(n_neighbors=3)
    assert repr(KNN(3)) == "KNN(num_neighbors=3)"


def test_pipeline_grid_search_and_cross_validation():
    X, y = datasets.load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), KNNClassifier())
    search = GridSearchCV(
        pipeline, {"knnclassifier__num_neighbors": [1, 5, 9], "knnclassifier__weights": ["uniform", "distance"]}, cv=3
    )
    search.fit(X, y)
    assert search.best_score_ > 0.9
    scores = cross_val_score(KNN(5), *datasets.load_diabetes(return_X_y=True), cv=3)
    reference = cross_val_score(
        KNeighborsRegressor(5, algorithm="brute"), *datasets.load_diabetes(return_X_y=True), cv=3
    )
    np.testing.assert_allclose(scores, reference, rtol=1e-9)


# Checks skipped deliberately, check name -> reason (none today; see the README).
SKIPPED_CHECKS: dict[str, str] = {}


@pytest.mark.parametrize("estimator", [KNN(), KNNClassifier()], ids=["KNN", "KNNClassifier"])
def test_check_estimator(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, expected_failed_checks=SKIPPED_CHECKS, on_fail=None)
    failures = [r for r in results if r["status"] == "failed"]
    assert not failures, [(r["check_name"], str(r["exception"])[:300]) for r in failures]
    passed = sum(r["status"] == "passed" for r in results)
    print(f"{type(estimator).__name__}: {passed} checks passed of {len(results)}")
