"""metric="inner_product" (maximum inner product search) on every backend, the estimators and streaming.

The oracle is written plainly here: the float64 products ``Q @ T.T``, sorted
by a stable argsort of their negation (largest first, ties to the lower
training index). What users get is the inner products themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import oracle_inner_products

import knn_gpu
from knn_gpu import KNN, KNNClassifier
from knn_gpu._engine.streaming import CHUNK_COPIES


def _tied(num_train: int, num_features: int = 4, seed: int = 0):
    """Small integers, every training row at least twice: inner products are exact and tie often."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(num_train // 2, num_features))
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = rng.integers(-3, 4, size=(19, num_features)).astype(np.float32)
    return queries, train


@pytest.mark.parametrize("k", [1, 5, 37, 300, 600])
def test_integer_ties_match_the_oracle_on_every_backend(backend, numpy_backend, k):
    queries, train = _tied(600)
    scores, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), k, metric="inner_product")
    scores = backend.check(scores, (19, k), backend.xp.float32)
    indices = backend.check(indices, (19, k), backend.xp.int64)
    expected_scores, expected_indices = oracle_inner_products(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)  # small integers: exact
    assert (np.diff(scores, axis=1) <= 0).all()  # largest first
    numpy_scores, numpy_indices = knn_gpu.kneighbors(queries, train, k, metric="inner_product")
    np.testing.assert_array_equal(indices, numpy_indices)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_data_matches_the_oracle(backend, dtype):
    if dtype == np.float64 and not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((2000, 9)) * rng.uniform(0.1, 3.0, size=(2000, 1))).astype(dtype)  # norms vary
    queries = rng.standard_normal((40, 9)).astype(dtype)
    scores, indices = knn_gpu.kneighbors(
        backend.asarray(queries), backend.asarray(train), 12, metric="inner_product", batch_size=16
    )
    scores = backend.check(scores, (40, 12), backend.asarray(train).dtype)
    expected_scores, expected_indices = oracle_inner_products(queries, train, 12)
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(scores, expected_scores, rtol=tolerance, atol=tolerance)


def test_faiss_index_flat_ip_agrees():
    """FAISS's IndexFlatIP returns the same inner products, largest first."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    train = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((25, 16)).astype(np.float32)
    flat = faiss.IndexFlatIP(16)
    flat.add(train)
    faiss_scores, faiss_indices = flat.search(queries, 8)
    scores, indices = knn_gpu.kneighbors(queries, train, 8, metric="inner_product")
    np.testing.assert_allclose(scores, faiss_scores, rtol=1e-5, atol=1e-5)
    assert (indices == faiss_indices).mean() > 0.99  # FAISS ranks in float32 without re-scoring


def test_regressor_and_classifier(backend):
    queries, train = _tied(200, seed=3)
    targets = np.arange(200, dtype=np.float32) % 7
    labels = np.arange(200) % 3
    _, neighbors = oracle_inner_products(queries, train, 5)
    regressor = KNN(5, metric="inner_product").fit(backend.asarray(train), backend.asarray(targets))
    predicted = backend.check(regressor.predict(backend.asarray(queries)), (19,), backend.xp.float32)
    np.testing.assert_allclose(predicted, targets[neighbors].mean(axis=1), rtol=1e-6)
    classifier = KNNClassifier(5, metric="inner_product").fit(backend.asarray(train), backend.asarray(labels))
    votes = np.stack([(labels[neighbors] == c).sum(axis=1) for c in range(3)], axis=1)
    proba = backend.check(classifier.predict_proba(backend.asarray(queries)), (19, 3), backend.xp.float32)
    np.testing.assert_allclose(proba, votes / 5, rtol=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(classifier.predict(backend.asarray(queries))), votes.argmax(1))
    scores, indices = classifier.kneighbors(backend.asarray(queries))
    np.testing.assert_array_equal(backend.to_numpy(indices), neighbors)
    np.testing.assert_array_equal(backend.to_numpy(scores), oracle_inner_products(queries, train, 5)[0])


def test_callable_weights_receive_the_inner_products():
    queries, train = _tied(100, seed=4)
    targets = np.random.default_rng(5).standard_normal(100).astype(np.float32)
    seen = []

    def softmax_weights(similarities):
        seen.append(similarities)
        return np.exp(similarities - similarities.max(axis=1, keepdims=True))

    predicted = KNN(6, metric="inner_product", weights=softmax_weights).fit(train, targets).predict(queries)
    expected_scores, neighbors = oracle_inner_products(queries, train, 6)
    np.testing.assert_array_equal(seen[0], expected_scores)
    weight = np.exp(expected_scores - expected_scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(predicted, (weight * targets[neighbors]).sum(1) / weight.sum(1), rtol=1e-5)


def test_kneighbors_of_the_training_set_and_get_neighbors():
    rng = np.random.default_rng(6)
    train = rng.standard_normal((80, 3))
    model = KNN(4, metric="inner_product").fit(train, np.zeros(80))
    scores, indices = model.kneighbors()
    full = train @ train.T
    np.fill_diagonal(full, -np.inf)  # a point is never its own neighbour
    expected = np.argsort(-full, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-12)
    pairs = model.get_neighbors(train[0])
    assert [index for index, _ in pairs] == np.argsort(-(train @ train[0]), kind="stable")[:4].tolist()
    assert pairs[0][1] == pytest.approx(float(np.max(train @ train[0])))


@pytest.mark.parametrize("estimator", [KNN, KNNClassifier])
def test_distance_weights_are_refused_at_fit(estimator):
    model = estimator(3, metric="inner_product", weights="distance")
    with pytest.raises(ValueError, match=r"weights='distance'.*metric='inner_product'"):
        model.fit(np.ones((5, 2)), np.arange(5) % 2)
    assert not hasattr(model, "n_features_in_")  # refused before any work
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match=r"weights='distance'.*metric='inner_product'"):
        model.fit(da.ones((5, 2)), da.from_array(np.arange(5) % 2))


def test_unknown_metric_lists_inner_product():
    with pytest.raises(ValueError, match="'inner_product', .*; got 'dot'"):
        knn_gpu.kneighbors(np.ones((2, 2)), np.ones((3, 2)), 1, metric="dot")


@pytest.mark.parametrize("chunks", [1, 4])
@pytest.mark.parametrize("k", [3, 150])
def test_out_of_core_equals_the_oracle(chunks, k):
    queries, train = _tied(600, num_features=5, seed=7)
    budget = 2 * CHUNK_COPIES * 6 * 4 * (-(-600 // chunks))  # about `chunks` chunks of float32 rows
    scores, indices = knn_gpu.kneighbors(
        queries, train, k, metric="inner_product", out_of_core=True, memory_budget=budget
    )
    expected_scores, expected_indices = oracle_inner_products(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)
    assert scores.dtype == np.float32


def test_strict_host_train_streams_to_device1():
    xp = pytest.importorskip("array_api_strict")
    queries, train = _tied(400, seed=8)
    scores, indices = knn_gpu.kneighbors(
        xp.asarray(queries, device=xp.Device("device1")),
        xp.asarray(train),
        9,
        metric="inner_product",
        memory_budget=6000,
    )
    expected_scores, expected_indices = oracle_inner_products(queries, train, 9)
    np.testing.assert_array_equal(np.from_dlpack(xp.asarray(indices, device=xp.Device("CPU_DEVICE"))), expected_indices)
    np.testing.assert_array_equal(np.from_dlpack(xp.asarray(scores, device=xp.Device("CPU_DEVICE"))), expected_scores)


def test_float64_ranked_in_float32_is_re_scored_exactly(backend):
    """The GPU policy for float64 data, forced: inner products 10 + j * 1e-9 tie in float32, not in float64."""
    if not backend.has_float64():
        pytest.skip("device has no float64")
    from knn_gpu._engine.search import build_index, search_index

    rng = np.random.default_rng(9)
    direction = np.eye(6)[0]
    near = np.stack([direction * (10 + j * 1e-9) for j in (3, 1, 4, 0, 2)])
    train = np.concatenate([rng.uniform(-1, 1, size=(400, 6)), near, rng.uniform(-1, 1, size=(300, 6))])
    queries = direction[None, :]
    index = build_index(backend.asarray(train), "inner_product", xp=backend.xp, rank_dtype=backend.xp.float32)
    assert index.rank_dtype == backend.xp.float32
    distances, indices = search_index(index, backend.asarray(queries), 3)
    np.testing.assert_array_equal(backend.to_numpy(indices), [[402, 400, 404]])
    np.testing.assert_allclose(backend.to_numpy(distances), [[-(10 + 4e-9), -(10 + 3e-9), -(10 + 2e-9)]], rtol=1e-15)


@pytest.mark.parametrize("model_class", [KNN, KNNClassifier])
def test_out_of_core_estimators_equal_the_oracle(model_class):
    """out_of_core=True keeps X in host memory; kneighbors (with X and leave-one-out) flips the sign once."""
    queries, train = _tied(500, num_features=5, seed=11)
    labels = np.arange(500) % 4
    streamed = model_class(7, metric="inner_product", out_of_core=True, memory_budget=6 * 3 * 6 * 4 * 90).fit(
        train, labels
    )
    assert streamed._index.plan == "streamed"
    in_memory = model_class(7, metric="inner_product").fit(train, labels)
    scores, indices = streamed.kneighbors(queries)
    expected_scores, expected_indices = oracle_inner_products(queries, train, 7)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_allclose(streamed.predict(queries), in_memory.predict(queries), rtol=1e-6)
    leave_one_out, expected = streamed.kneighbors(), in_memory.kneighbors()
    np.testing.assert_array_equal(leave_one_out[1], expected[1])
    np.testing.assert_array_equal(leave_one_out[0], expected[0])
    assert (np.diff(leave_one_out[0], axis=1) <= 0).all()
