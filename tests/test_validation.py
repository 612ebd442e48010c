"""Bad input: a clear error naming the argument, before any work; models stay usable."""

from __future__ import annotations

import numpy as np
import pytest

import knn_gpu
from knn_gpu import KNN, KNNClassifier, NotFittedError

rng = np.random.default_rng(0)
X = rng.standard_normal((20, 3))
y = rng.standard_normal(20)


def _with(value, row=0, column=0):
    copy = X.copy()
    copy[row, column] = value
    return copy


BAD_X = [
    (_with(np.nan), ValueError, "X contains NaN or infinity"),
    (_with(np.inf), ValueError, "X contains NaN or infinity"),
    (X[:, 0], ValueError, "X must be 2-D"),
    (X[None], ValueError, "X must be 2-D"),
    (np.empty((0, 3)), ValueError, r"X has 0 sample\(s\)"),
    (np.empty((20, 0)), ValueError, r"X has 0 feature\(s\)"),
    (np.array([["a", "b"]] * 20), TypeError, "X must hold real numbers"),
    (X.astype(complex), ValueError, "Complex data not supported"),
    (np.array([[{"a": 1}, 2.0]] * 20, dtype=object), TypeError, "argument must be a string or a real number"),
    ([[1.0, 2.0], [3.0]] * 10, ValueError, "X must be a rectangular array of numbers"),
    (None, TypeError, "X must be an array of numbers, got None"),
    ("abc", TypeError, "X must be an array of numbers, got a string"),
]


@pytest.mark.parametrize(("bad", "error", "message"), BAD_X)
@pytest.mark.parametrize("estimator", [KNN, KNNClassifier])
def test_bad_training_features(estimator, bad, error, message):
    labels = np.arange(20) % 2
    with pytest.raises(error, match=message):
        estimator(num_neighbors=3).fit(bad, labels)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (np.append(y, 1.0), ValueError, "X has 20 samples but y has 21"),
        (np.where(np.arange(20) == 3, np.nan, y), ValueError, "y contains NaN"),
        (y.astype(complex), ValueError, "Complex data not supported"),
        (np.array(["a"] * 20), TypeError, "y must hold real numbers"),
        (np.zeros((20, 0)), ValueError, "at least one output column"),
        (None, ValueError, "requires y to be passed"),
    ],
)
def test_bad_regression_targets(bad, error, message):
    with pytest.raises(error, match=message):
        KNN(3).fit(X, bad)


def test_bad_class_labels():
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        KNNClassifier(3).fit(X, y)
    with pytest.raises(TypeError, match="y must hold sortable labels"):
        KNNClassifier(3).fit(X, np.array([1, None] * 10, dtype=object))


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"num_neighbors": 0}, ValueError, "num_neighbors must be a positive integer"),
        ({"num_neighbors": -2}, ValueError, "num_neighbors must be a positive integer"),
        ({"num_neighbors": 2.5}, TypeError, "num_neighbors must be a positive integer"),
        ({"num_neighbors": True}, TypeError, "num_neighbors must be a positive integer"),
        ({"num_neighbors": 21}, ValueError, r"num_neighbors=21 is larger than the number of training samples"),
        ({"backend": "tpu"}, ValueError, "backend must be None, 'auto' or one of"),
        ({"metric": "wminkowski"}, ValueError, "metric must be one of"),  # hamming is supported now
        ({"weights": "gaussian"}, ValueError, "weights must be 'uniform', 'distance' or a callable"),
        ({"batch_size": 0}, ValueError, "batch_size must be None or a positive integer"),
        ({"batch_size": "big"}, TypeError, "batch_size must be None or a positive integer"),
        ({"n_jobs": 0}, ValueError, r"n_jobs must be None, -1 \(every core\) or a positive integer, got 0"),
        ({"n_jobs": -2}, ValueError, "n_jobs must be None, -1"),
        ({"n_jobs": 1.5}, TypeError, "n_jobs must be None, -1 or a positive integer, got 1.5 of type float"),
        ({"n_jobs": True}, TypeError, "n_jobs must be None, -1 or a positive integer"),
    ],
)
def test_bad_parameters(params, error, message):
    with pytest.raises(error, match=message):
        KNN(**params).fit(X, y)


@pytest.mark.parametrize(
    ("queries", "error", "message"),
    [
        (X[:, :2], ValueError, "X has 2 features, but KNN is expecting 3 features as input"),
        (X[0], ValueError, "Reshape your data"),
        (_with(np.nan), ValueError, "X contains NaN"),
        (None, TypeError, "X must be an array of queries, got None"),
        (X.astype(complex), ValueError, "Complex data not supported"),
    ],
)
def test_bad_queries_leave_the_model_usable(queries, error, message):
    model = KNN(3).fit(X, y)
    before = model.predict(X[:4])
    with pytest.raises(error, match=message):
        model.predict(queries)
    np.testing.assert_array_equal(model.predict(X[:4]), before)


def test_rejected_refit_keeps_previous_fit():
    model = KNN(3).fit(X, y)
    before = model.predict(X[:4])
    with pytest.raises(ValueError):
        model.fit(_with(np.nan), y)
    np.testing.assert_array_equal(model.predict(X[:4]), before)


def test_predict_before_fit():
    for method in ("predict", "kneighbors", "get_neighbors"):
        with pytest.raises(NotFittedError, match="not fitted yet; call fit") as info:
            getattr(KNN(), method)(X[:1] if method != "get_neighbors" else X[0])
        assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)
    with pytest.raises(NotFittedError):
        KNNClassifier().predict_proba(X)


def test_kneighbors_num_neighbors_bounds():
    model = KNN(3).fit(X, y)
    with pytest.raises(ValueError, match="num_neighbors=20 is larger"):
        model.kneighbors(None, num_neighbors=20)  # a point excludes itself: at most 19
    assert model.kneighbors(None, num_neighbors=19)[1].shape == (20, 19)


def test_empty_query_batch_returns_empty():
    model = KNN(3).fit(X, y)
    assert model.predict(np.empty((0, 3))).shape == (0,)
    distances, indices = model.kneighbors(np.empty((0, 3)))
    assert distances.shape == indices.shape == (0, 3)


def test_callers_arrays_are_not_modified():
    X_copy, y_copy = X.copy(), y.copy()
    model = KNN(3, metric="cosine").fit(X, y)
    model.predict(X)
    model.kneighbors()
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(y, y_copy)


def test_functional_api_errors():
    with pytest.raises(ValueError, match="k=21 is larger"):
        knn_gpu.kneighbors(X, X, 21)
    with pytest.raises(ValueError, match="queries has 2 features, but train is expecting 3"):
        knn_gpu.kneighbors(X[:, :2], X, 2)
    with pytest.raises(ValueError, match="metric must be one of"):
        knn_gpu.kneighbors(X, X, 2, metric="wminkowski")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="queries and train must come from the same array library"):
        knn_gpu.kneighbors(torch.asarray(X), X, 2)


def test_device_mixing_is_refused():
    xp = pytest.importorskip("array_api_strict")
    train = xp.asarray(X, device=xp.Device("device1"))
    queries = xp.asarray(X)
    with pytest.raises(ValueError, match="same device"):
        knn_gpu.kneighbors(queries, train, 2)


def test_object_arrays_of_numbers_are_converted():
    """As scikit-learn's check_array: an object array of numbers is float64."""
    model = KNN(3).fit(X.astype(object), y.astype(object))
    np.testing.assert_array_equal(model.predict(X.astype(object)), KNN(3).fit(X, y).predict(X))


def test_seed_classifier_checks_dataframe_columns():
    """The issue's example: reordered columns at predict were silently matched by position."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    model = KNNClassifier(3).fit(frame, np.arange(20) % 2)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        model.predict(frame[["c", "a", "b"]])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        model.predict(X)
    np.testing.assert_array_equal(model.predict(frame), model.predict(frame.to_numpy()))
    refit = model.fit(X, np.arange(20) % 2)
    assert not hasattr(refit, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but KNNClassifier was fitted without"):
        refit.predict(frame)


def test_not_fitted_error_is_sklearns_when_sklearn_is_imported():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError
    from sklearn.utils.validation import check_is_fitted

    from knn_gpu import NotFittedError

    with pytest.raises(SklearnNotFittedError) as caught:
        KNN().predict(X)
    assert isinstance(caught.value, NotFittedError)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(KNN())
    check_is_fitted(KNN(3).fit(X, y))
