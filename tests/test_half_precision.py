"""Half-precision input (float16; bfloat16 on torch): stored as given, ranked in float32, answered in float32.

The oracle is the float64 one of ``oracle.py`` computed from the half values
upcast (exact), so indices must match it to the letter on integer-valued data
with ties and within rounding elsewhere; distances come back in float32.
array_api_strict has no float16 (the standard has no half type), so its runs
skip.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from guards import traced_peak
from oracle import oracle_kneighbors, unambiguous_rows

import knn_gpu
from knn_gpu import KNN, KNNClassifier
from knn_gpu._engine import search
from knn_gpu._engine.search import build_index, search_index
from knn_gpu._engine.streaming import CHUNK_COPIES

METRICS = ("euclidean", "sqeuclidean", "cosine", "inner_product")


def _half(backend, name="float16"):
    """The backend's half dtype, or skip where it has none."""
    dtype = getattr(backend.xp, name, None)
    if dtype is None:
        pytest.skip(f"{backend.name} has no {name}")
    return dtype


def _as_half(backend, values, dtype):
    return backend.xp.astype(backend.asarray(np.asarray(values, dtype=np.float32)), dtype)


def _public(distances, metric):
    """knn_gpu returns inner products (largest first); the oracle, their negation."""
    return -distances if metric == "inner_product" else distances


def _tied(num_train, num_features=4, seed=0, scale=1):
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(num_train // 2, num_features)) * scale
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = (rng.integers(-3, 4, size=(21, num_features)) * scale).astype(np.float32)
    return queries, train


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "inner_product"])
@pytest.mark.parametrize("k", [1, 10, 299, 600])
def test_integer_ties_give_the_oracle_exactly(backend, half, metric, k):
    """Integer values (exact in both half types): exact distances, so the lower index must win every tie."""
    dtype = _half(backend, half)
    queries, train = _tied(600)
    distances, indices = knn_gpu.kneighbors(
        _as_half(backend, queries, dtype), _as_half(backend, train, dtype), k, metric=metric
    )
    distances = backend.check(distances, (21, k), backend.xp.float32)
    indices = backend.check(indices, (21, k), backend.xp.int64)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k, metric)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(_public(distances, metric), expected_distances, rtol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_random_half_data_matches_the_oracle_of_its_values(backend, metric):
    dtype = _half(backend)
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((3000, 24)) * 2 + 40).astype(np.float16)  # far from the origin: the shift matters
    queries = (rng.standard_normal((50, 24)) * 2 + 40).astype(np.float16)
    distances, indices = knn_gpu.kneighbors(
        _as_half(backend, queries, dtype), _as_half(backend, train, dtype), 15, metric=metric, batch_size=16
    )
    distances = backend.check(distances, (50, 15), backend.xp.float32)
    indices = backend.check(indices, (50, 15), backend.xp.int64)
    upcast_queries, upcast_train = queries.astype(np.float64), train.astype(np.float64)
    expected_distances, expected_indices = oracle_kneighbors(upcast_queries, upcast_train, 15, metric)
    clear = unambiguous_rows(upcast_queries, upcast_train, 15, metric, gap=1e-6)
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(indices[clear], expected_indices[clear])
    np.testing.assert_allclose(_public(distances, metric), expected_distances, rtol=1e-6, atol=1e-6)


def test_bfloat16_on_torch_matches_the_oracle():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    train = torch.asarray(rng.standard_normal((2000, 12)), dtype=torch.bfloat16)
    queries = torch.asarray(rng.standard_normal((30, 12)), dtype=torch.bfloat16)
    for metric in METRICS:
        distances, indices = knn_gpu.kneighbors(queries, train, 8, metric=metric)
        assert distances.dtype == torch.float32 and indices.dtype == torch.int64
        host_queries, host_train = queries.double().numpy(), train.double().numpy()
        expected_distances, expected_indices = oracle_kneighbors(host_queries, host_train, 8, metric)
        clear = unambiguous_rows(host_queries, host_train, 8, metric, gap=1e-6)
        np.testing.assert_array_equal(indices.numpy()[clear], expected_indices[clear])
        np.testing.assert_allclose(_public(distances.numpy(), metric), expected_distances, rtol=1e-6, atol=1e-6)


def test_the_index_stores_half_rows_and_ranks_in_float32(backend):
    dtype = _half(backend)
    queries, train = _tied(500, seed=3)
    index = build_index(_as_half(backend, train, dtype), "euclidean", xp=backend.xp)
    assert index.rows.dtype == dtype and tuple(index.rows.shape) == (index.num_stored, 4)
    assert index.rank_dtype == backend.xp.float32 and index.distance_dtype == backend.xp.float32
    assert index.key_column.dtype == backend.xp.float32 and index.exact_rows is None
    assert index.num_stored > 500  # padding rows exist and must rank last
    distances, indices = search_index(index, _as_half(backend, queries, dtype), 500)
    np.testing.assert_array_equal(backend.to_numpy(indices), oracle_kneighbors(queries, train, 500)[1])


def test_values_beyond_the_half_range_come_back_in_float32(backend):
    """Points near 6e4: squared distances reach 1e10, far above float16's 65504."""
    dtype = _half(backend)
    queries, train = _tied(300, seed=4, scale=8000)  # integers up to 24000, exact in float16
    distances, indices = knn_gpu.kneighbors(
        _as_half(backend, queries, dtype), _as_half(backend, train, dtype), 5, metric="sqeuclidean"
    )
    distances = backend.check(distances, (21, 5), backend.xp.float32)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 5, "sqeuclidean")
    assert expected_distances.max() > 65504
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-7)


def test_mixed_half_and_float32_follow_the_result_type(backend):
    dtype = _half(backend)
    queries, train = _tied(200, seed=5)
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), _as_half(backend, train, dtype), 4)
    backend.check(distances, (21, 4), backend.xp.float32)
    np.testing.assert_array_equal(backend.to_numpy(indices), oracle_kneighbors(queries, train, 4)[1])


def _dtype_name(dtype) -> str:
    """``"float16"`` for NumPy's (type or dtype), torch's (``torch.float16``) and the standard's float16."""
    if isinstance(dtype, type) and issubclass(dtype, np.generic):
        return np.dtype(dtype).name
    return str(dtype).rsplit(".", 1)[-1]


def test_estimators_keep_the_half_dtype(backend):
    dtype = _half(backend)
    queries, train = _tied(400, seed=6)
    targets = (np.arange(400) % 9).astype(np.float32)
    labels = np.arange(400) % 3
    _, neighbors = oracle_kneighbors(queries, train, 5)
    regressor = KNN(5).fit(_as_half(backend, train, dtype), backend.asarray(targets))
    # (torch CPU tensors are searched by NumPy on views of them: the stored rows are then NumPy's float16)
    assert regressor._fit_X.dtype == dtype and regressor._index.dtype == dtype
    assert _dtype_name(regressor._index.rows.dtype) == _dtype_name(dtype)
    predicted = backend.check(regressor.predict(_as_half(backend, queries, dtype)), (21,), backend.xp.float32)
    np.testing.assert_allclose(predicted, targets[neighbors].mean(axis=1), rtol=1e-6)
    classifier = KNNClassifier(5, metric="inner_product").fit(_as_half(backend, train, dtype), labels)
    assert _dtype_name(classifier._index.rows.dtype) == _dtype_name(dtype)
    proba = backend.check(classifier.predict_proba(_as_half(backend, queries, dtype)), (21, 3), backend.xp.float32)
    _, ip_neighbors = oracle_kneighbors(queries, train, 5, "inner_product")
    votes = np.stack([(labels[ip_neighbors] == c).sum(axis=1) for c in range(3)], axis=1)
    np.testing.assert_allclose(proba, votes / 5)
    distances, indices = regressor.kneighbors(_as_half(backend, queries, dtype))
    backend.check(distances, (21, 5), backend.xp.float32)
    np.testing.assert_array_equal(backend.to_numpy(indices), neighbors)


@pytest.mark.parametrize("metric", METRICS)
def test_out_of_core_half_rows(metric):
    queries, train = _tied(600, num_features=5, seed=7)
    half_queries, half_train = queries.astype(np.float16), train.astype(np.float16)
    budget = 2 * CHUNK_COPIES * 6 * 4 * 150  # four chunks of float32 rows
    distances, indices = knn_gpu.kneighbors(
        half_queries, half_train, 20, metric=metric, out_of_core=True, memory_budget=budget
    )
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    in_memory_distances, in_memory_indices = knn_gpu.kneighbors(half_queries, half_train, 20, metric=metric)
    np.testing.assert_allclose(distances, in_memory_distances, rtol=1e-6)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 20, metric)
    # Integer data: exact but for cosine, whose parallel rows tie only up to rounding (and the
    # streamed float32 chunks round their unit rows, the half path re-scores the rows themselves).
    if metric != "cosine":
        np.testing.assert_array_equal(indices, in_memory_indices)
        np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(_public(distances, metric), expected_distances, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("metric", METRICS)
def test_build_index_never_copies_the_training_set_to_float32(metric):
    """tracemalloc sees NumPy's buffers: fit's peak stays under what one float32 copy would take."""
    rng = np.random.default_rng(8)
    train = rng.standard_normal((100_000, 64)).astype(np.float16)
    float32_copy = train.size * 4
    xp = array_api_compat.array_namespace(train)
    _, peak_build = traced_peak(lambda: build_index(train, metric, xp=xp))
    model, peak_fit = traced_peak(lambda: KNN(3, metric=metric).fit(train, np.zeros(train.shape[0], dtype=np.float32)))
    assert model._index.rows.dtype == np.float16
    # The stored rows (one float16 copy, in the block layout: half a float32 copy), the layout's int64
    # row numbers and chunk-sized temporaries: well under a float32 copy.
    assert peak_build < 0.75 * float32_copy, (peak_build / 2**20, float32_copy / 2**20)
    assert peak_fit < 0.75 * float32_copy, (peak_fit / 2**20, float32_copy / 2**20)


def test_half_batch_temporaries_stay_within_the_budget():
    rng = np.random.default_rng(9)
    train = rng.standard_normal((40_000, 48)).astype(np.float16)
    queries = rng.standard_normal((700, 48)).astype(np.float16)
    index = build_index(train, "euclidean", xp=array_api_compat.array_namespace(train))
    budget = 24 * 2**20
    (distances, indices), peak = traced_peak(lambda: search_index(index, queries, 50, memory_budget=budget, n_jobs=2))
    output = distances.nbytes + indices.nbytes
    assert peak - output <= budget, (peak / 2**20, output / 2**20)
    assert search.batch_fixed_bytes(index) > 0
    expected = oracle_kneighbors(queries[:20].astype(np.float64), train.astype(np.float64), 50)[1]
    np.testing.assert_array_equal(indices[:20], expected)


def test_threaded_half_search_matches_one_thread(monkeypatch):
    monkeypatch.setattr(search, "MIN_KEYS_PER_WORKER", 1)
    monkeypatch.setattr(search, "MIN_QUERIES_PER_WORKER", 1)
    queries, train = _tied(2000, seed=10)
    half_queries, half_train = np.tile(queries, (10, 1)).astype(np.float16), train.astype(np.float16)
    threaded = knn_gpu.kneighbors(half_queries, half_train, 7, n_jobs=2, batch_size=30)
    single = knn_gpu.kneighbors(half_queries, half_train, 7, n_jobs=1)
    np.testing.assert_array_equal(threaded[1], single[1])
    np.testing.assert_array_equal(threaded[1][:21], oracle_kneighbors(queries, train, 7)[1])


@pytest.mark.parametrize("model_class", [KNN, KNNClassifier])
def test_out_of_core_estimators_keep_half_rows_on_the_host(model_class):
    queries, train = _tied(500, num_features=5, seed=11)
    half_train, half_queries = train.astype(np.float16), queries.astype(np.float16)
    labels = np.arange(500) % 4
    streamed = model_class(7, out_of_core=True, memory_budget=6 * 3 * 6 * 4 * 90).fit(half_train, labels)
    assert streamed._index.rows is half_train  # as given: no copy, in the half type
    in_memory = model_class(7).fit(half_train, labels)
    distances, indices = streamed.kneighbors(half_queries)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 7)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)
    predicted, expected = streamed.predict(half_queries), in_memory.predict(half_queries)
    assert predicted.dtype == expected.dtype
    np.testing.assert_allclose(predicted, expected, rtol=1e-6)
    np.testing.assert_array_equal(streamed.kneighbors()[1], in_memory.kneighbors()[1])
