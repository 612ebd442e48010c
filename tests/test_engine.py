"""The search engine at every k, block size and device: selection, exact re-scoring, memory, syncs."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from guards import refusing_host_conversions, traced_peak
from oracle import oracle_kneighbors

import knn_gpu
from knn_gpu._engine import budget as budget_module
from knn_gpu._engine import search
from knn_gpu._engine.metrics import PRODUCT_METRICS as METRICS
from knn_gpu._engine.search import BlockPlan, build_index, plan_blocks, search_index
from knn_gpu._engine.topk import kth_smallest_by_bisection, smallest_k_columns
from knn_gpu._lib.backends import to_host
from knn_gpu._lib.devices import device_scope, free_device_bytes


def _tied_data(num_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer rows, every one at least twice: distances are exact and ties abound."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(num_train // 2, 4))
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = rng.integers(-3, 4, size=(17, 4)).astype(np.float32)
    return train, queries


@pytest.mark.parametrize("k", [1, 100, 700, 1500])
def test_large_k_matches_oracle(backend, numpy_backend, k):
    train, queries = _tied_data(1500)
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), k)
    indices = backend.check(indices, (17, k), backend.xp.int64)
    distances = backend.check(distances, (17, k), backend.xp.float32)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    _, numpy_indices = knn_gpu.kneighbors(queries, train, k)
    np.testing.assert_array_equal(indices, numpy_indices)


def _forced_plans(index, k):
    """Every block grouping the index allows, and keeping every block."""
    num_candidates = search.candidate_count(k, index.num_samples, index.num_features)
    group = 1
    while group <= index.max_group:
        num_groups = index.num_fine_blocks // group
        if num_candidates < num_groups:
            yield BlockPlan(group, num_groups, num_candidates, num_candidates, group * index.fine_block_size)
        group *= 2
    num_groups = index.num_fine_blocks
    yield BlockPlan(1, num_groups, num_groups, num_candidates, index.fine_block_size)


@pytest.mark.parametrize("num_train", [1, 37, 900, 20_000])
def test_every_block_grouping_gives_the_oracle(backend, monkeypatch, num_train):
    """Each power-of-two merge of the bit-reversed fine blocks prunes correctly, ties to the lower index."""
    rng = np.random.default_rng(num_train)
    base = rng.integers(-2, 3, size=(max(1, num_train // 3), 3))
    train = np.concatenate([base, base, base])[:num_train].astype(np.float32)
    if num_train < 3:
        train = rng.integers(-2, 3, size=(num_train, 3)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(9, 3)).astype(np.float32)
    k = min(num_train, 5)
    index = build_index(backend.asarray(train), "euclidean", xp=backend.xp)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k)
    plans = list(_forced_plans(index, k))
    assert len(plans) >= (2 if num_train >= 900 else 1)
    for plan in plans:
        monkeypatch.setattr(search, "plan_blocks", lambda index, k, plan=plan: plan)
        distances, indices = search_index(index, backend.asarray(queries), k, batch_rows=4)
        np.testing.assert_array_equal(backend.check(indices, (9, k), backend.xp.int64), expected_indices, str(plan))
        np.testing.assert_allclose(backend.to_numpy(distances), expected_distances, rtol=1e-6)


def test_block_size_shrinks_as_k_grows():
    index = build_index(np.zeros((100_000, 2), dtype=np.float32), "euclidean", xp=array_api_compat.numpy)
    sizes = [plan_blocks(index, k).block_size for k in (1, 10, 100, 1000)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert all(plan_blocks(index, k).prunes for k in (1, 10, 100, 1000))
    assert not plan_blocks(index, 100_000).prunes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bisection_selects_like_partition(dtype):
    """The sort-free k-th value (CuPy's large-k path) on NumPy and torch, with signed zeros and infinities."""
    rng = np.random.default_rng(3)
    namespaces = [array_api_compat.numpy]
    try:
        import torch

        namespaces.append(array_api_compat.array_namespace(torch.zeros(1)))
    except ImportError:
        pass
    for trial in range(40):
        width = int(rng.integers(2, 300))
        values = (rng.standard_normal((3, width)) * 10.0 ** rng.integers(-30, 30)).astype(dtype)
        if trial % 3 == 0:
            values = rng.integers(-3, 3, size=(3, width)).astype(dtype)
            values[values == 0] = -0.0 if trial % 2 else 0.0
        if trial % 5 == 0:
            values[:, 0], values[:, -1] = np.inf, -np.inf
        k = int(rng.integers(1, width + 1))
        expected = np.partition(values, k - 1, axis=1)[:, k - 1 : k]
        for xp in namespaces:
            got = kth_smallest_by_bisection(xp.asarray(values), k, xp=xp)
            np.testing.assert_array_equal(to_host(got), expected)


def test_torch_top_k_keeps_the_lower_column_among_ties():
    torch = pytest.importorskip("torch")
    xp = array_api_compat.array_namespace(torch.zeros(1))
    values = np.asarray([[2.0, 1.0, 1.0, 3.0, 1.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    columns = smallest_k_columns(torch.asarray(values), 3, xp=xp)
    assert columns.device.type == "cpu" and columns.dtype == torch.int64
    np.testing.assert_array_equal(columns.numpy(), [[1, 2, 5], [0, 1, 2]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sorting_selection_keeps_the_lower_column_among_ties(dtype):
    """torch-on-GPU's selection by stable sorts (run here on CPU tensors) against NumPy's lexsort:
    ties, signed zeros, infinities, widths on both sides of a one-kernel sort (4,096)."""
    torch = pytest.importorskip("torch")
    from knn_gpu._engine.topk import smallest_k_columns_by_sort

    rng = np.random.default_rng(5)
    for trial in range(30):
        width = int(rng.choice([2, 7, 300, 4096, 5000]))
        values = rng.integers(-3, 3, size=(4, width)).astype(dtype)
        if trial % 2:
            values[values == 0] = -0.0  # -0.0 and +0.0 mixed: equal, so the lower column wins
            values[:, ::3] = np.where(values[:, ::3] == -0.0, 0.0, values[:, ::3])
        else:
            values = (values * rng.standard_normal(values.shape)).astype(dtype)
        if trial % 5 == 0:
            values[:, 1], values[:, -1] = np.inf, -np.inf
        k = int(rng.integers(1, width))
        # (value, column) order; -0.0 == 0.0 for the comparison, as for IEEE '<'.
        order = np.lexsort((np.broadcast_to(np.arange(width), values.shape), values + 0.0), axis=1)
        expected = np.sort(order[:, :k], axis=1)
        got = smallest_k_columns_by_sort(torch.asarray(values), k)
        assert got.dtype == torch.int64 and tuple(got.shape) == (4, k)
        np.testing.assert_array_equal(got.numpy(), expected)
        # The standard path (any namespace) agrees.
        np.testing.assert_array_equal(
            smallest_k_columns(values, k, xp=array_api_compat.array_namespace(values)), expected
        )


def test_float64_ranked_in_float32_stays_exact(backend):
    """The GPU policy (rank float64 data in float32, re-score in float64), forced on every backend.

    Five training points sit at distances 1 + j * 1e-10 of the query: the same
    in float32, distinct in float64. Only the float64 re-scoring orders them.
    """
    if not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(11)
    direction = np.eye(6)[0]
    near = np.stack([direction * (1 + j * 1e-10) for j in (3, 1, 4, 0, 2)])
    train = np.concatenate([rng.uniform(3, 9, size=(400, 6)), near, rng.uniform(3, 9, size=(300, 6))]) + 50.0
    queries = np.zeros((1, 6)) + 50.0
    index = build_index(backend.asarray(train), "euclidean", xp=backend.xp, rank_dtype=backend.xp.float32)
    assert index.rank_dtype == backend.xp.float32 and index.exact_rows is not None
    distances, indices = search_index(index, backend.asarray(queries), 3)
    distances = backend.check(distances, (1, 3), backend.xp.float64)
    np.testing.assert_array_equal(backend.to_numpy(indices), [[403, 401, 404]])
    np.testing.assert_allclose(distances, [[1.0, 1 + 1e-10, 1 + 2e-10]], rtol=1e-14)
    # And on ordinary data: the float64 oracle, to float64 precision.
    train, queries = rng.standard_normal((800, 5)), rng.standard_normal((30, 5))
    index = build_index(backend.asarray(train), "sqeuclidean", xp=backend.xp, rank_dtype=backend.xp.float32)
    distances, indices = search_index(index, backend.asarray(queries), 7)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 7, "sqeuclidean")
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances, rtol=1e-12)


@pytest.mark.parametrize(("shape", "k"), [((20_000, 64), 100), ((30_000, 16), 1000), ((4_000, 300), 10)])
def test_batch_temporaries_stay_within_the_budget(shape, k):
    """tracemalloc sees NumPy's buffers: one search's peak, less its output, is under the budget."""
    rng = np.random.default_rng(12)
    train = rng.standard_normal(shape, dtype=np.float32)
    queries = rng.standard_normal((600, shape[1]), dtype=np.float32)
    index = build_index(train, "euclidean", xp=array_api_compat.numpy)
    budget = 24 * 2**20
    (distances, indices), peak = traced_peak(lambda: search_index(index, queries, k, memory_budget=budget, n_jobs=2))
    output = distances.nbytes + indices.nbytes
    assert peak - output <= budget, (peak / 2**20, output / 2**20)
    np.testing.assert_array_equal(indices[:20], oracle_kneighbors(queries[:20], train, k)[1])


def test_classifier_votes_of_many_classes_stay_within_the_budget(monkeypatch):
    """1,000 classes: the per-batch vote keeps (rows, k, classes) inside the budget."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((5_000, 8), dtype=np.float32)
    y = np.arange(5_000) % 1_000
    queries = rng.standard_normal((3_000, 8), dtype=np.float32)
    budget = 16 * 2**20
    monkeypatch.setattr(budget_module, "DEFAULT_MEMORY_BUDGET", budget)
    model = knn_gpu.KNNClassifier(num_neighbors=5).fit(X, y)
    proba, peak_proba = traced_peak(lambda: model.predict_proba(queries))
    predicted, peak_predict = traced_peak(lambda: model.predict(queries))  # proba is held before, not counted
    assert peak_proba - proba.nbytes <= budget
    assert peak_predict - predicted.nbytes <= budget
    _, neighbors = oracle_kneighbors(queries[:50], X, 5)
    votes = np.stack([np.bincount(y[row], minlength=1_000) for row in neighbors])
    np.testing.assert_array_equal(predicted[:50], np.argmax(votes, axis=1))


@pytest.mark.parametrize("metric", METRICS)
def test_no_host_synchronisation_in_any_search_or_prediction(monkeypatch, metric):
    """On device1, every metric and both estimators' predictions run their batch loops without a host sync.

    Validation may read one boolean (the NaN check) on purpose; the search and
    the per-batch reductions (vote, mean) may not, nor index by a boolean mask.
    """
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    rng = np.random.default_rng(6)
    train_host, queries_host = rng.standard_normal((700, 5)), rng.standard_normal((40, 5))
    labels_host = rng.integers(0, 3, size=700)
    train = xp.asarray(train_host, device=device)
    queries = xp.asarray(queries_host, device=device)
    strict_search = search.search_index

    def guarded_search(*args, **kwargs):
        with refusing_host_conversions(monkeypatch, xp):
            return strict_search(*args, **kwargs)

    monkeypatch.setattr(knn_gpu._engine.index, "search_index", guarded_search)
    for k in (5, 400):
        distances, indices = knn_gpu.kneighbors(queries, train, k, metric=metric, batch_size=16)
        assert array_api_compat.device(indices) == device
        np.testing.assert_array_equal(
            to_host(indices),
            knn_gpu.kneighbors(queries_host, train_host, k, metric=metric)[1],
        )
    # 1 / d of a similarity is refused; a callable of the inner products runs inside the batches.
    weights = "distance" if metric != "inner_product" else (lambda similarities: xp.exp(similarities))
    regressor = knn_gpu.KNN(5, metric=metric, weights=weights).fit(train, xp.asarray(labels_host * 1.0, device=device))
    classifier = knn_gpu.KNNClassifier(5, metric=metric).fit(train, xp.asarray(labels_host, device=device))
    for result in (regressor.predict(queries), classifier.predict(queries), classifier.predict_proba(queries)):
        assert array_api_compat.device(result) == device
    expected = knn_gpu.KNNClassifier(5, metric=metric).fit(train_host, labels_host).predict(queries_host)
    predicted = classifier.predict(queries)
    np.testing.assert_array_equal(to_host(predicted), expected)


def test_device_scope_and_free_memory_read_the_datas_cupy_device(monkeypatch):
    """CuPy reads free memory of the *current* device: the search makes the data's device current first."""
    cupy = pytest.importorskip("cupy")
    xp = pytest.importorskip("array_api_compat.cupy")
    current = [0]
    seen = []

    class FakeDevice:
        def __init__(self, device_id=None):
            self.id = current[0] if device_id is None else getattr(device_id, "id", device_id)

        def __enter__(self):
            self.previous, current[0] = current[0], self.id
            return self

        def __exit__(self, *exc):
            current[0] = self.previous

    def mem_get_info():
        seen.append(current[0])
        return (8 * 2**30, 16 * 2**30)

    class Pool:
        def free_bytes(self):
            return 2**30

    monkeypatch.setattr(cupy.cuda, "Device", FakeDevice)
    monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", mem_get_info)
    monkeypatch.setattr(cupy, "get_default_memory_pool", lambda: Pool())
    with device_scope(xp, FakeDevice(1)):
        assert free_device_bytes(xp, FakeDevice(1)) == 9 * 2**30
    assert seen == [1] and current == [0]
