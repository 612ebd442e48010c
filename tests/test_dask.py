"""Scale-out on a real dask.distributed LocalCluster (2 worker processes, loopback only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from oracle import oracle_inner_products, oracle_kneighbors

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import knn_gpu  # noqa: E402
from knn_gpu import KNN, KNNClassifier  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


@pytest.mark.parametrize("chunks", [(3, 40, 7, 53), (103,), (50, 53)])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_functional_matches_oracle_and_numpy(client, chunks, k):
    """Uneven chunks, chunks smaller than k, exact ties (integer data)."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 3, size=(103, 3)).astype(np.float32)
    queries = rng.integers(0, 3, size=(17, 3)).astype(np.float32)
    distances, indices = knn_gpu.kneighbors(
        da.from_array(queries, chunks=(9, 3)), da.from_array(train, chunks=(chunks, 3)), k
    )
    assert isinstance(distances, da.Array) and isinstance(indices, da.Array)  # lazy until computed
    distances, indices = client.compute([distances, indices], sync=True)
    assert distances.dtype == np.float32 and indices.dtype == np.int64 and indices.shape == (17, k)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    numpy_distances, numpy_indices = knn_gpu.kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, numpy_indices)


@pytest.mark.parametrize("k", [1, 20])
def test_inner_product_returns_the_largest_first(client, k):
    """Uneven chunks, integer ties: the merge works on negated products; the output is the products, descending."""
    rng = np.random.default_rng(4)
    train = rng.integers(-2, 3, size=(103, 3)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(17, 3)).astype(np.float32)
    scores, indices = knn_gpu.kneighbors(
        da.from_array(queries, chunks=(9, 3)),
        da.from_array(train, chunks=((3, 40, 7, 53), 3)),
        k,
        metric="inner_product",
    )
    scores, indices = client.compute([scores, indices], sync=True)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    expected_scores, expected_indices = oracle_inner_products(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


def test_inner_product_estimators_match_single_machine(client):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((150, 4))
    y = rng.integers(0, 3, size=150)
    X_dask, y_dask = da.from_array(X, chunks=(37, 4)), da.from_array(y, chunks=37)
    classifier = KNNClassifier(5, metric="inner_product").fit(X_dask, y_dask)
    reference = KNNClassifier(5, metric="inner_product").fit(X, y)
    np.testing.assert_array_equal(client.compute(classifier.predict(X_dask), sync=True), reference.predict(X))
    scores, indices = classifier.kneighbors(X_dask)
    reference_scores, reference_indices = reference.kneighbors(X)
    np.testing.assert_array_equal(client.compute(indices, sync=True), reference_indices)
    np.testing.assert_allclose(client.compute(scores, sync=True), reference_scores, rtol=1e-12)
    weights = lambda similarities: np.exp(similarities)  # noqa: E731 (a callable receives the inner products)
    regressor = KNN(5, metric="inner_product", weights=weights).fit(X_dask, y_dask.astype(float))
    expected = KNN(5, metric="inner_product", weights=weights).fit(X, y.astype(float)).predict(X)
    np.testing.assert_allclose(client.compute(regressor.predict(X_dask), sync=True), expected, rtol=1e-12)


def test_half_precision_chunks_are_searched_in_float32(client):
    """float16 Dask arrays: each task converts its chunk to float32, and the results are float32."""
    rng = np.random.default_rng(6)
    train = rng.integers(-3, 4, size=(103, 3)).astype(np.float16)
    queries = rng.integers(-3, 4, size=(17, 3)).astype(np.float16)
    distances, indices = knn_gpu.kneighbors(
        da.from_array(queries, chunks=(9, 3)), da.from_array(train, chunks=((50, 53), 3)), 6
    )
    distances, indices = client.compute([distances, indices], sync=True)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 6)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    np.testing.assert_array_equal(indices, knn_gpu.kneighbors(queries, train, 6)[1])


def test_task_graph_never_holds_query_by_train_blocks():
    """Run the graph locally and record the shape of every task's result."""
    from dask.callbacks import Callback

    num_queries, num_train = 600, 4000
    train = da.random.random((num_train, 8), chunks=(1000, 8))
    queries = da.random.random((num_queries, 8), chunks=(200, 8))
    distances, indices = knn_gpu.kneighbors(queries, train, 5)
    shapes = []

    class RecordShapes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if hasattr(result, "shape"):
                shapes.append(tuple(result.shape))

    with RecordShapes():
        computed = da.compute(distances, indices, scheduler="sync")
    assert computed[1].shape == (num_queries, 5)
    assert shapes, "no task results were recorded"
    largest = max(int(np.prod(shape)) for shape in shapes)
    assert largest <= 1000 * 8, shapes  # a training chunk is the largest thing in the graph
    assert all(shape != (num_queries, num_train) for shape in shapes)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_estimators_match_single_machine(client, weights):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = X + np.random.default_rng(1).normal(0.0, 1e-6, X.shape)
    X_dask, y_dask = da.from_array(X, chunks=(37, 4)), da.from_array(y, chunks=37)

    classifier = KNNClassifier(5, weights=weights).fit(X_dask, y_dask)
    reference = KNNClassifier(5, weights=weights).fit(X, y)
    np.testing.assert_array_equal(classifier.classes_, reference.classes_)
    predicted = classifier.predict(X_dask)
    assert isinstance(predicted, da.Array)
    np.testing.assert_array_equal(client.compute(predicted, sync=True), reference.predict(X))
    np.testing.assert_allclose(client.compute(classifier.predict_proba(X), sync=True), reference.predict_proba(X))

    regressor = KNN(5, weights=weights).fit(X_dask, y_dask.astype(float))
    expected = KNN(5, weights=weights).fit(X, y.astype(float)).predict(X)
    np.testing.assert_allclose(client.compute(regressor.predict(X_dask), sync=True), expected, rtol=1e-12)


def test_fit_keeps_training_data_lazy():
    X = da.random.random((500, 4), chunks=(100, 4))
    y = da.random.randint(0, 3, size=500, chunks=100)
    model = KNNClassifier(3).fit(X, y)
    # Fitted through the front door like any model: the index's Dask plan holds the lazy rows.
    assert model._index.plan == "dask"
    train, codes = model._index.store, model._codes
    assert isinstance(train, da.Array) and isinstance(codes, da.Array)
    assert train.chunks[0] == X.chunks[0]


def test_import_does_not_import_dask():
    code = "import sys, knn_gpu; print('dask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_estimators_fitted_on_dask_answer_like_any_model():
    """Fitted through the one front door: host queries get host answers, Dask queries lazy ones."""
    rng = np.random.default_rng(7)
    X = rng.integers(-4, 5, size=(120, 3)).astype(np.float64)
    y = np.array(["red", "green", "blue"])[rng.integers(0, 3, size=120)]
    X_dask, y_dask = da.from_array(X, chunks=(50, 3)), da.from_array(y, chunks=50)
    expected_distances, expected_indices = oracle_kneighbors(X[:9], X, 4)
    model = KNNClassifier(4).fit(X_dask, y_dask)
    distances, indices = model.kneighbors(X[:9])
    assert type(indices) is np.ndarray and indices.dtype == np.int64 and indices.shape == (9, 4)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
    lazy = model.predict(X_dask[:9])
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), KNNClassifier(4).fit(X, y).predict(X[:9]))
    with pytest.raises(ValueError, match=r"kneighbors\(X=None\) is not supported on a model fitted on Dask"):
        model.kneighbors(None)


def test_half_precision_and_label_checks_on_dask():
    rng = np.random.default_rng(8)
    X = rng.integers(-3, 4, size=(90, 2)).astype(np.float16)
    y = rng.integers(0, 4, size=90).astype(np.float64)
    regressor = KNN(3).fit(da.from_array(X, chunks=40), da.from_array(y, chunks=40))
    predicted = regressor.predict(da.from_array(X[:6], chunks=3)).compute()
    np.testing.assert_allclose(predicted, KNN(3).fit(X, y).predict(X[:6]), rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        KNNClassifier(3).fit(da.from_array(X, chunks=40), da.from_array(y + 0.5, chunks=40))
    with pytest.raises(ValueError, match="metric='manhattan' is not supported for Dask arrays"):
        knn_gpu.kneighbors(da.from_array(X, chunks=40), da.from_array(X, chunks=40), 3, metric="manhattan")
