"""The functional search on every backend, against the oracle, NumPy and scikit-learn."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import threadpoolctl
from oracle import oracle_kneighbors, unambiguous_rows
from sklearn.datasets import load_diabetes
from sklearn.neighbors import NearestNeighbors

import knn_gpu
from knn_gpu._engine import search
from knn_gpu._engine.search import batch_bytes_per_query, build_index, default_batch_rows, plan_blocks, search_index

METRICS = ("euclidean", "sqeuclidean", "cosine")


def _run(backend, queries, train, k, **kwargs):
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), k, **kwargs)
    dtype = backend.asarray(train).dtype
    n = np.asarray(queries).shape[0]
    return backend.check(distances, (n, k), dtype), backend.check(indices, (n, k), backend.xp.int64)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_data_matches_oracle_and_numpy(backend, numpy_backend, metric, dtype):
    if dtype == np.float64 and not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(1)
    train = rng.standard_normal((500, 7)).astype(dtype)
    queries = rng.standard_normal((60, 7)).astype(dtype)
    distances, indices = _run(backend, queries, train, 9, metric=metric)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 9, metric)
    np.testing.assert_array_equal(indices, expected_indices)
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(distances, expected_distances, rtol=tolerance, atol=tolerance)
    numpy_distances, numpy_indices = _run(numpy_backend, queries, train, 9, metric=metric)
    np.testing.assert_array_equal(indices, numpy_indices)
    np.testing.assert_allclose(distances, numpy_distances, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("k", [1, 4, 17, 40])
def test_exact_ties_give_identical_indices(backend, numpy_backend, k):
    """Integer features and duplicated rows: distances are exact, so indices must match to the letter."""
    rng = np.random.default_rng(2)
    base = rng.integers(-2, 3, size=(60, 3))
    train = np.concatenate([base, base, base[:20]])  # every row at least twice
    queries = np.concatenate([rng.integers(-2, 3, size=(30, 3)), base[:5]])
    distances, indices = _run(backend, queries.astype(np.float32), train.astype(np.float32), k)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    np.testing.assert_array_equal(
        indices, _run(numpy_backend, queries.astype(np.float32), train.astype(np.float32), k)[1]
    )


def test_all_training_rows_identical(backend):
    train = np.ones((300, 4))
    queries = np.zeros((3, 4))
    distances, indices = _run(backend, queries.astype(np.float32), train.astype(np.float32), 10)
    np.testing.assert_array_equal(indices, np.tile(np.arange(10), (3, 1)))
    np.testing.assert_allclose(distances, 2.0)


def test_integer_input_uses_default_float(backend):
    train = np.arange(12).reshape(6, 2)
    distances, indices = knn_gpu.kneighbors(backend.asarray(train[:2]), backend.asarray(train), 3)
    default = backend.xp.__array_namespace_info__().default_dtypes(device=backend.device)["real floating"]
    backend.check(distances, (2, 3), default)
    np.testing.assert_array_equal(backend.to_numpy(indices), [[0, 1, 2], [1, 0, 2]])


def test_real_dataset_against_oracle_and_sklearn(backend):
    X = load_diabetes().data.astype(np.float32)
    train, queries = X[:350], X[350:]
    distances, indices = _run(backend, queries, train, 6)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 6)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-5)
    sk_distances, sk_indices = NearestNeighbors(n_neighbors=6, algorithm="brute").fit(train).kneighbors(queries)
    clear = unambiguous_rows(queries, train, 6)
    np.testing.assert_array_equal(indices[clear], sk_indices[clear])
    np.testing.assert_allclose(distances, sk_distances, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_metrics_match_sklearn(backend, metric):
    rng = np.random.default_rng(3)
    train = rng.standard_normal((300, 5))
    train[7] = 0.0  # a zero vector: cosine must not produce NaN
    queries = np.concatenate([rng.standard_normal((25, 5)), np.zeros((1, 5))])
    distances, indices = _run(backend, queries.astype(np.float32), train.astype(np.float32), 5, metric=metric)
    sk = NearestNeighbors(n_neighbors=5, algorithm="brute", metric=metric).fit(train)
    sk_distances, sk_indices = sk.kneighbors(queries)
    assert np.isfinite(distances).all()
    np.testing.assert_allclose(distances, sk_distances, rtol=1e-5, atol=1e-6)
    clear = unambiguous_rows(queries, train, 5, metric)
    np.testing.assert_array_equal(indices[clear], sk_indices[clear])


@pytest.mark.parametrize(
    ("num_train", "k", "batch_size"),
    [(1, 1, None), (2, 2, 1), (37, 37, None), (37, 36, 5), (500, 499, 64), (1000, 3, 1), (1000, 3, 7)],
)
def test_edge_shapes_and_batches(backend, num_train, k, batch_size):
    """A single training row, k = n_train, k close to n_train, batches of one."""
    rng = np.random.default_rng(num_train)
    train = rng.standard_normal((num_train, 3)).astype(np.float32)
    queries = rng.standard_normal((11, 3)).astype(np.float32)
    distances, indices = _run(backend, queries, train, k, batch_size=batch_size)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("n_jobs", "batch_size"), [(1, None), (2, None), (3, 4), (-1, 5), (None, 1)])
def test_threaded_search_matches_oracle(backend, monkeypatch, n_jobs, batch_size):
    """Worker threads (NumPy) share batches round-robin; the result is the oracle's, in query order."""
    thresholds = search.MIN_KEYS_PER_WORKER, search.MIN_QUERIES_PER_WORKER
    monkeypatch.setattr(search, "MIN_KEYS_PER_WORKER", 1)  # threads even for this small problem
    monkeypatch.setattr(search, "MIN_QUERIES_PER_WORKER", 1)
    monkeypatch.setattr(search, "available_cores", lambda: 2)
    shares = []  # the batch starts given to each worker
    search_batches = search._search_batches

    def recording_search_batches(index, plan, queries, k, starts, *rest):
        shares.append(list(starts))
        return search_batches(index, plan, queries, k, starts, *rest)

    monkeypatch.setattr(search, "_search_batches", recording_search_batches)
    blas_before = [pool["num_threads"] for pool in threadpoolctl.threadpool_info()]
    rng = np.random.default_rng(8)
    base = rng.integers(-3, 4, size=(150, 4))
    train = np.concatenate([base, base]).astype(np.float32)  # duplicates: exact ties
    queries = rng.integers(-3, 4, size=(23, 4)).astype(np.float32)
    distances, indices = _run(backend, queries, train, 6, batch_size=batch_size, n_jobs=n_jobs)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 6)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    # CPU torch tensors are searched on NumPy views of them (knn_gpu._lib.backends.numpy_views): threads too.
    threaded = backend.name in ("numpy", "torch")
    expected_workers = 1 if not threaded or n_jobs == 1 else 2 if n_jobs in (-1, None) else n_jobs
    assert len(shares) == expected_workers
    all_starts = sorted(start for share in shares for start in share)
    assert len(set(all_starts)) == len(all_starts) and all_starts[0] == 0  # each batch searched once
    assert [pool["num_threads"] for pool in threadpoolctl.threadpool_info()] == blas_before
    if backend.name == "numpy" and n_jobs is None:  # with the real thresholds: one thread for this size
        monkeypatch.setattr(search, "MIN_KEYS_PER_WORKER", thresholds[0])
        monkeypatch.setattr(search, "MIN_QUERIES_PER_WORKER", thresholds[1])
        shares.clear()
        _run(backend, queries, train, 6, batch_size=batch_size, n_jobs=None)
        assert len(shares) == 1


def test_batch_budget_is_shared_by_the_workers():
    index = build_index(np.ones((100_000, 3), dtype=np.float32), "euclidean", xp=np)
    bytes_per_query = batch_bytes_per_query(index, plan_blocks(index, 10))
    assert bytes_per_query >= index.num_stored * 4  # at least the keys
    budget = 100 * bytes_per_query
    assert default_batch_rows(index, 10_000, budget) == 100
    assert default_batch_rows(index, 10_000, budget, num_workers=2) == 50
    assert default_batch_rows(index, 30, budget, num_workers=2) == 15  # every worker gets a batch
    # 200 queries, 40 rows in each worker's share: not 5 batches of 40 (one worker would do 3),
    # but 3 rounds of 2 batches of 34.
    assert default_batch_rows(index, 200, 80 * bytes_per_query, num_workers=2) == 34
    assert default_batch_rows(index, 101, budget) == 51
    assert default_batch_rows(index, 10_240, 10_240 * bytes_per_query) == search.HOST_MAX_BATCH_ROWS  # 20 x 512
    assert default_batch_rows(index, 10_000, 10_000 * bytes_per_query) == 500  # equal batches under the cap


def test_empty_query_batch(backend):
    train = backend.asarray(np.ones((5, 3), dtype=np.float32))
    distances, indices = knn_gpu.kneighbors(backend.asarray(np.ones((0, 3), dtype=np.float32)), train, 2)
    backend.check(distances, (0, 2), backend.xp.float32)
    backend.check(indices, (0, 2), backend.xp.int64)


@pytest.mark.parametrize("k", [10, 100, 1000])
def test_float32_far_from_origin_is_exact(backend, k):
    """Random data offset by up to 1e3: the indices are the float64 oracle's, at every candidate margin."""
    rng = np.random.default_rng(4)
    offset = rng.uniform(-1e3, 1e3, size=8)
    train = (rng.standard_normal((4000, 8)) + offset).astype(np.float32)
    queries = (rng.standard_normal((200, 8)) + offset).astype(np.float32)
    distances, indices = _run(backend, queries, train, k)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    assert (distances >= 0).all() and np.isfinite(distances).all()
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)


def test_float32_near_1e4_finds_the_true_nearest(backend):
    """Points near 1e4 apart by 0.01: the float32 expansion cancels completely there."""
    rng = np.random.default_rng(5)
    train = (1e4 + 0.01 * rng.integers(0, 100, size=(500, 4))).astype(np.float32)
    queries = (train[:50] + np.float32(0.003)).astype(np.float32)
    distances, indices = _run(backend, queries, train, 1)
    _, expected_indices = oracle_kneighbors(queries, train, 1)
    np.testing.assert_array_equal(indices, expected_indices)
    assert (distances >= 0).all()


def test_no_host_synchronisation_in_search(monkeypatch):
    """On array_api_strict's device1, no bool/int/float conversion inside the search but its one explicit read.

    The batches (``search_batches``) read nothing; ``settle_uncertified`` reads one count, through
    ``read_counts``'s explicit copy to the host, after the last batch.
    """
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    rng = np.random.default_rng(6)
    train = xp.asarray(rng.standard_normal((700, 5)), device=device)
    queries = xp.asarray(rng.standard_normal((40, 5)), device=device)
    index = build_index(train, "euclidean", xp=xp)

    def refuse(*args, **kwargs):
        raise AssertionError("host conversion inside the search")

    reads = []

    def read_counts(counts, *, xp):
        reads.append(array_api_compat.device(counts))
        with monkeypatch.context() as allowed:  # the deliberate read: conversions of its host copy only
            for method in ("__int__", "__index__"):
                allowed.setattr(type(train), method, conversions[method])
            return original_read(counts, xp=xp)

    original_read = search.read_counts
    monkeypatch.setattr(search, "read_counts", read_counts)
    conversions = {method: getattr(type(train), method) for method in ("__int__", "__index__")}
    for method in ("__bool__", "__int__", "__float__", "__index__", "__array__"):
        monkeypatch.setattr(type(train), method, refuse, raising=False)
    distances, indices = search_index(index, queries, 5, batch_rows=16)
    monkeypatch.undo()
    assert reads == [device]
    expected_distances, expected_indices = oracle_kneighbors(np.from_dlpack(queries), np.from_dlpack(train), 5)
    np.testing.assert_array_equal(np.from_dlpack(indices), expected_indices)


def test_inputs_are_not_modified(backend):
    rng = np.random.default_rng(7)
    train_host = rng.standard_normal((50, 3)).astype(np.float32)
    queries_host = rng.standard_normal((5, 3)).astype(np.float32)
    train, queries = backend.asarray(train_host), backend.asarray(queries_host)
    knn_gpu.kneighbors(queries, train, 3)
    np.testing.assert_array_equal(backend.to_numpy(train), train_host)
    np.testing.assert_array_equal(backend.to_numpy(queries), queries_host)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_float32_self_distance_is_exactly_zero(backend, metric):
    """Queries equal to training rows: distance 0 exactly, the row itself first.

    Values from about -5 to 11 around a shift of 3: most ``t - 3`` round in
    float32 (not within a factor of 2 of the shift), so the query must be
    shifted with the same rounding as the stored rows.
    """
    rng = np.random.default_rng(10)
    train = (rng.standard_normal((400, 7)) * 2.7 + 3).astype(np.float32)
    distances, indices = _run(backend, train[:60], train, 2, metric=metric)
    np.testing.assert_array_equal(distances[:, 0], 0.0)
    np.testing.assert_array_equal(indices[:, 0], np.arange(60))
