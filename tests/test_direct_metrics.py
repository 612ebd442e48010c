"""Metrics computed directly, block by block: Minkowski (p = 1, 1.5, 3, inf, and names) and precomputed.

Every backend against the plain float64 oracle (tests/oracle.py), NumPy and
scikit-learn's brute force; integer data with duplicates (exact ties: indices
equal to the letter); small budgets forcing many blocks; bad p; the device1
no-sync rule; Dask and out-of-core refusals.
"""

from __future__ import annotations

import math

import array_api_compat
import array_api_compat.numpy
import numpy as np
import pytest
from guards import refusing_host_conversions, traced_peak
from oracle import oracle_distances, oracle_kneighbors
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

import knn_gpu
from knn_gpu._engine import direct, search
from knn_gpu._engine.direct import DirectIndex, direct_bytes, direct_plan, resolve_metric
from knn_gpu._engine.search import build_index, search_index
from knn_gpu._lib.backends import to_host

#: (metric, p) pairs: each named metric and Minkowski powers.
CASES = [
    ("manhattan", None),
    ("l1", None),
    ("cityblock", None),
    ("chebyshev", None),
    ("infinity", None),
    ("minkowski", 1),
    ("minkowski", 1.5),
    ("minkowski", 3),
    ("minkowski", math.inf),
]
CASE_IDS = [f"{metric}-p={p}" for metric, p in CASES]


def _oracle_p(metric, p):
    return 2.0 if p is None else p


def _run(backend, queries, train, k, **kwargs):
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), k, **kwargs)
    dtype = backend.asarray(train).dtype
    n = np.asarray(queries).shape[0]
    return backend.check(distances, (n, k), dtype), backend.check(indices, (n, k), backend.xp.int64)


def _integer_data(seed=2):
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(70, 4))
    train = np.concatenate([base, base, base[:30]])  # every row at least twice
    queries = np.concatenate([rng.integers(-3, 4, size=(25, 4)), base[:5]])
    return queries, train


@pytest.mark.parametrize(("metric", "p"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("k", [1, 7, 64, 170])
def test_integer_ties_match_the_oracle_exactly(backend, numpy_backend, metric, p, k):
    """Integer data with duplicates, a budget forcing many blocks: indices equal the oracle's to the letter."""
    queries, train = _integer_data()
    dtype = np.float64 if backend.has_float64() else np.float32
    queries, train = queries.astype(dtype), train.astype(dtype)
    distances, indices = _run(backend, queries, train, k, metric=metric, p=p, memory_budget=40_000)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k, metric, _oracle_p(metric, p))
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12 if dtype == np.float64 else 1e-6)
    if p == 1.5:
        # |d|^1.5 is inexact: different vectors at mathematically equal distances (permuted
        # differences) may round apart, so only the oracle distances of the neighbours must agree.
        full = oracle_distances(queries, train, metric, p)
        np.testing.assert_allclose(np.take_along_axis(full, indices, axis=1), expected_distances, rtol=1e-12)
        assert all(len(set(row)) == k for row in indices.tolist())
        return
    np.testing.assert_array_equal(indices, expected_indices)
    numpy_indices = _run(numpy_backend, queries, train, k, metric=metric, p=p)[1]
    np.testing.assert_array_equal(indices, numpy_indices)


@pytest.mark.parametrize(("metric", "p"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_data_matches_the_oracle(backend, metric, p, dtype):
    if dtype == np.float64 and not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(1)
    train = rng.standard_normal((300, 6)).astype(dtype)
    queries = rng.standard_normal((40, 6)).astype(dtype)
    distances, indices = _run(backend, queries, train, 9, metric=metric, p=p)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 9, metric, _oracle_p(metric, p))
    np.testing.assert_array_equal(indices, expected_indices)
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(distances, expected_distances, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    ("metric", "p"), [("manhattan", 1), ("chebyshev", math.inf), ("minkowski", 1.5), ("minkowski", 3)]
)
def test_digits_match_scikit_learn_brute(backend, metric, p):
    digits = load_digits().data  # integer pixel values 0..16: many exact ties
    dtype = np.float64 if backend.has_float64() else np.float32
    train, queries = digits[:1200].astype(dtype), digits[1200:1300].astype(dtype)
    distances, indices = _run(backend, queries, train, 10, metric=metric, p=p, memory_budget=2**20)
    reference = NearestNeighbors(n_neighbors=10, algorithm="brute", metric="minkowski", p=p).fit(train)
    expected_distances, expected_indices = reference.kneighbors(queries)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    # scikit-learn's brute force does not keep exact ties in index order: the indices come from the oracle.
    full = oracle_distances(queries, train, "minkowski", p)
    np.testing.assert_allclose(np.take_along_axis(full, indices, axis=1), expected_distances, rtol=1e-6)
    if p != 1.5:
        np.testing.assert_array_equal(indices, oracle_kneighbors(queries, train, 10, "minkowski", p)[1])


@pytest.mark.parametrize("k", [1, 5, 100])
def test_precomputed_selects_from_the_given_rows(backend, numpy_backend, k):
    queries, train = _integer_data(5)
    train_matrix = oracle_distances(train, train, "manhattan")
    query_rows = oracle_distances(queries, train, "manhattan")
    dtype = np.float64 if backend.has_float64() else np.float32
    distances, indices = _run(
        backend, query_rows.astype(dtype), train_matrix.astype(dtype), k, metric="precomputed", memory_budget=30_000
    )
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k, "manhattan")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(distances, expected_distances)
    reference = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="precomputed").fit(train_matrix)
    np.testing.assert_array_equal(distances, reference.kneighbors(query_rows)[0])


def test_precomputed_checks_its_matrices():
    square = np.ones((4, 4))
    with pytest.raises(ValueError, match="square"):
        knn_gpu.kneighbors(np.ones((2, 3)), np.ones((4, 3)), 2, metric="precomputed")
    with pytest.raises(ValueError, match="negative"):
        knn_gpu.kneighbors(np.ones((2, 4)), -square, 2, metric="precomputed")
    with pytest.raises(ValueError, match="queries must hold distances"):
        knn_gpu.kneighbors(-np.ones((2, 4)), square, 2, metric="precomputed")
    with pytest.raises(ValueError, match="4 features"):
        knn_gpu.kneighbors(np.ones((2, 3)), square, 2, metric="precomputed")


@pytest.mark.parametrize(
    ("p", "error", "match"),
    [
        # 0 < p < 1 is scikit-learn's semi-metric, with its warning (tests/test_sklearn_native.py).
        (0, ValueError, "p must be > 0"),
        (-1, ValueError, "p must be > 0"),
        (float("nan"), ValueError, "p must be > 0"),
        ("3", TypeError, "p must be a real number"),
        (True, TypeError, "p must be a real number"),
        ([3], TypeError, "p must be a real number"),
    ],
)
def test_bad_p_is_refused(p, error, match):
    with pytest.raises(error, match=match):
        knn_gpu.kneighbors(np.ones((2, 3)), np.ones((4, 3)), 2, metric="minkowski", p=p)


def test_p_below_one_is_scikit_learns_rule_a_warning_and_exact_neighbours():
    """One rule for p everywhere (the registry's check_p): 0 < p < 1 warns, as scikit-learn's brute force."""
    rng = np.random.default_rng(4)
    train, queries = rng.integers(0, 4, size=(40, 3)).astype(float), rng.integers(0, 4, size=(6, 3)).astype(float)
    with pytest.warns(UserWarning, match="are not distance metrics"):
        distances, indices = knn_gpu.kneighbors(queries, train, 5, metric="minkowski", p=0.5)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 5, metric="minkowski", p=0.5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)


def test_minkowski_p2_and_l2_take_the_euclidean_path():
    rng = np.random.default_rng(3)
    train = rng.standard_normal((50, 4))
    assert resolve_metric("minkowski", None) == ("euclidean", None)
    assert resolve_metric("minkowski", 2) == ("euclidean", None)
    assert resolve_metric("l2", 3) == ("euclidean", None)
    assert resolve_metric("manhattan", 3) == ("minkowski", 1.0)  # p is ignored, as scikit-learn does
    assert not isinstance(build_index(train, "minkowski", xp=array_api_compat.numpy), DirectIndex)
    assert isinstance(build_index(train, "minkowski", xp=array_api_compat.numpy, p=3), DirectIndex)
    expected = knn_gpu.kneighbors(train[:5], train, 4)
    for metric, p in (("l2", None), ("minkowski", None), ("minkowski", 2.0)):
        distances, indices = knn_gpu.kneighbors(train[:5], train, 4, metric=metric, p=p)
        np.testing.assert_array_equal(indices, expected[1])
        np.testing.assert_allclose(distances, expected[0])


def test_unknown_metric_names_the_choices():
    with pytest.raises(ValueError, match="'chebyshev'"):
        knn_gpu.kneighbors(np.ones((2, 3)), np.ones((4, 3)), 2, metric="wminkowski")


def test_radius_search_takes_direct_metrics():
    """Formerly refused: the functional radius search now takes the direct metrics (tests/test_radius_direct.py)."""
    distances, indices, offsets = knn_gpu.radius_neighbors(np.zeros((2, 3)), np.eye(4, 3), 1.0, metric="manhattan")
    assert indices.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and offsets.tolist() == [0, 4, 8]
    np.testing.assert_array_equal(distances, [1.0, 1.0, 1.0, 0.0] * 2)


@pytest.mark.parametrize("method", ["cdist", "numpy_loop", "broadcast"])
@pytest.mark.parametrize("budget", [2**14, 2**17, 2**22])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_plan_fits_the_budget(monkeypatch, method, budget, dtype):
    monkeypatch.setattr(direct, "block_method", lambda index: method)
    train = np.zeros((3000, 16), dtype=dtype)
    index = build_index(train, "manhattan", xp=array_api_compat.numpy)
    for k in (1, 10, 500):
        rows, block = direct_plan(index, 1000, k, budget)
        per_query, per_column, per_block_row = direct_bytes(index, block, k, method=method)
        assert rows >= 1 and 1 <= block <= 3000
        if rows > 1 or block > 1:
            assert rows * (per_query + block * per_column) + block * per_block_row <= budget


@pytest.mark.parametrize("method", ["numpy_loop", "broadcast"])
def test_numpy_fast_paths_and_the_standard_one_agree(monkeypatch, method):
    queries, train = _integer_data(7)
    queries, train = queries.astype(float), train.astype(float)
    for metric, p in CASES:
        native = knn_gpu.kneighbors(queries, train, 12, metric=metric, p=p, memory_budget=50_000)
        monkeypatch.setattr(direct, "block_method", lambda index: method)
        other = knn_gpu.kneighbors(queries, train, 12, metric=metric, p=p, memory_budget=50_000)
        monkeypatch.undo()
        if p != 1.5:
            np.testing.assert_array_equal(native[1], other[1])
        np.testing.assert_allclose(native[0], other[0], rtol=1e-13)


def test_threads_give_the_same_neighbours():
    rng = np.random.default_rng(4)
    train, queries = rng.integers(0, 5, (2000, 8)) * 1.0, rng.integers(0, 5, (1500, 8)) * 1.0
    one = knn_gpu.kneighbors(queries, train, 10, metric="cityblock", n_jobs=1)
    several = knn_gpu.kneighbors(queries, train, 10, metric="cityblock", n_jobs=3, batch_size=100)
    np.testing.assert_array_equal(one[1], several[1])
    np.testing.assert_array_equal(one[0], several[0])


@pytest.mark.parametrize(
    ("metric", "p"), [("manhattan", None), ("minkowski", 3), ("chebyshev", None), ("precomputed", None)]
)
def test_no_host_synchronisation_in_the_blocked_search(monkeypatch, metric, p):
    """device1, every conversion refused and no data-dependent shapes inside the search and predictions."""
    xp = pytest.importorskip("array_api_strict")

    device = xp.Device("device1")
    rng = np.random.default_rng(6)
    train_host, queries_host = rng.standard_normal((300, 5)), rng.standard_normal((40, 5))
    if metric == "precomputed":
        train_host, queries_host = oracle_distances(train_host, train_host), oracle_distances(queries_host, train_host)
    labels_host = rng.integers(0, 3, size=300)
    train, queries = xp.asarray(train_host, device=device), xp.asarray(queries_host, device=device)
    strict_search = search.search_index

    def guarded_search(*args, **kwargs):
        with refusing_host_conversions(monkeypatch, xp):
            return strict_search(*args, **kwargs)

    monkeypatch.setattr(knn_gpu._engine.index, "search_index", guarded_search)
    for k in (5, 250):
        distances, indices = knn_gpu.kneighbors(
            queries, train, k, metric=metric, p=p, batch_size=16, memory_budget=2**16
        )
        assert array_api_compat.device(indices) == device
        expected = knn_gpu.kneighbors(queries_host, train_host, k, metric=metric, p=p)
        np.testing.assert_array_equal(to_host(indices), expected[1])
    if metric == "precomputed":
        return
    classifier = knn_gpu.KNNClassifier(5, metric=metric, weights="distance").fit(
        train, xp.asarray(labels_host, device=device)
    )
    predicted = classifier.predict(queries)
    assert array_api_compat.device(predicted) == device
    expected = (
        knn_gpu.KNNClassifier(5, metric=metric, weights="distance").fit(train_host, labels_host).predict(queries_host)
    )
    np.testing.assert_array_equal(to_host(predicted), expected)


def test_estimators_take_the_direct_metric_names():
    queries, train = _integer_data(8)
    labels = np.arange(train.shape[0]) % 3
    model = knn_gpu.KNNClassifier(4, metric="manhattan").fit(train, labels)
    distances, indices = model.kneighbors(queries)
    expected = oracle_kneighbors(queries, train, 4, "manhattan")
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_allclose(distances, expected[0])
    reference = NearestNeighbors(n_neighbors=4, algorithm="brute", metric="manhattan").fit(train)
    np.testing.assert_array_equal(model.kneighbors()[0], reference.kneighbors()[0])


def test_search_index_with_an_explicit_p():
    rng = np.random.default_rng(9)
    train, queries = rng.standard_normal((200, 3)), rng.standard_normal((10, 3))
    index = build_index(train, "minkowski", xp=array_api_compat.numpy, p=4)
    distances, indices = search_index(index, queries, 6, memory_budget=10_000)
    expected = oracle_kneighbors(queries, train, 6, "minkowski", 4)
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_allclose(distances, expected[0], rtol=1e-12)


def test_dask_and_out_of_core_refuse_direct_metrics():
    with pytest.raises(ValueError, match="out-of-core"):
        knn_gpu.kneighbors(np.ones((2, 3)), np.ones((4, 3)), 2, metric="manhattan", out_of_core=True)
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="Dask"):
        knn_gpu.kneighbors(da.ones((2, 3)), da.ones((4, 3)), 2, metric="chebyshev")


def test_models_stream_the_named_metrics_but_not_precomputed():
    """A model's out-of-core search builds a direct index per chunk; precomputed rows cannot be chunked."""
    queries, train = _integer_data(10)
    labels = np.arange(train.shape[0]) % 3
    model = knn_gpu.KNNClassifier(5, metric="chebyshev", out_of_core=True, memory_budget=2**14).fit(train, labels)
    np.testing.assert_array_equal(model.kneighbors(queries)[1], oracle_kneighbors(queries, train, 5, "chebyshev")[1])
    matrix = oracle_distances(train, train, "manhattan")
    model = knn_gpu.KNNClassifier(5, metric="precomputed", out_of_core=True).fit(matrix, labels)
    with pytest.raises(ValueError, match="out-of-core"):
        model.kneighbors(oracle_distances(queries, train, "manhattan"))


def test_models_take_precomputed_distances_and_leave_one_out():
    queries, train = _integer_data(11)
    labels = np.arange(train.shape[0]) % 3
    matrix = oracle_distances(train, train, "manhattan")
    model = knn_gpu.KNNClassifier(5, metric="precomputed").fit(matrix, labels)
    indices = model.kneighbors(oracle_distances(queries, train, "manhattan"))[1]
    np.testing.assert_array_equal(indices, oracle_kneighbors(queries, train, 5, "manhattan")[1])
    reference = NearestNeighbors(n_neighbors=5, algorithm="brute", metric="precomputed").fit(matrix)
    np.testing.assert_array_equal(model.kneighbors()[0], reference.kneighbors()[0])


@pytest.mark.parametrize("method", ["cdist", "numpy_loop", "broadcast"])
@pytest.mark.parametrize(
    ("shape", "k", "p"), [((6_000, 32), 10, 1), ((4_000, 16), 500, 3), ((2_000, 100), 20, math.inf)]
)
def test_direct_temporaries_stay_within_the_budget(monkeypatch, method, shape, k, p):
    """tracemalloc sees NumPy's buffers: one direct search's peak, less its output, is under the budget."""
    if method == "cdist" and p == 3:
        pytest.skip("cdist takes p = 1 and infinity only")
    monkeypatch.setattr(direct, "block_method", lambda index: method)
    rng = np.random.default_rng(13)
    train = rng.standard_normal(shape, dtype=np.float32)
    queries = rng.standard_normal((700, shape[1]), dtype=np.float32)
    index = build_index(train, "minkowski", xp=array_api_compat.numpy, p=p)
    budget = 8 * 2**20
    (distances, indices), peak = traced_peak(lambda: search_index(index, queries, k, memory_budget=budget, n_jobs=2))
    output = distances.nbytes + indices.nbytes
    assert peak - output <= budget, (peak / 2**20, output / 2**20)
    np.testing.assert_array_equal(indices[:10], oracle_kneighbors(queries[:10], train, k, "minkowski", p)[1])


@pytest.mark.parametrize("model_class", [knn_gpu.KNN, knn_gpu.KNNClassifier, knn_gpu.KNeighborsClassifier])
def test_models_refuse_bad_precomputed_distances(model_class):
    """As the functional call and scikit-learn: a precomputed X must be square and nonnegative, queries too."""
    y = np.arange(6) % 2
    with pytest.raises(ValueError, match="square matrix of distances"):
        model_class(3, metric="precomputed").fit(np.ones((6, 4)), y)
    with pytest.raises(ValueError, match="negative values"):
        model_class(3, metric="precomputed").fit(-np.ones((6, 6)), y)
    model = model_class(3, metric="precomputed").fit(np.ones((6, 6)) - np.eye(6), y)
    with pytest.raises(ValueError, match="negative values"):
        model.predict(-np.ones((2, 6)))
    assert model.predict(np.ones((2, 6))).shape == (2,)  # still usable after the rejected call
