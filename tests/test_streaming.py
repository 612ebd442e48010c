"""Out-of-core search: host training rows streamed through the device in chunks."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from guards import traced_peak
from oracle import oracle_kneighbors

import knn_gpu
from knn_gpu._engine.streaming import CHUNK_COPIES, chunk_rows_for, is_host_array
from knn_gpu._lib.backends import to_host

METRICS = ("euclidean", "sqeuclidean", "cosine")


def _tied(num_train: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(num_train // 2, 5))
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = rng.integers(-3, 4, size=(23, 5)).astype(np.float32)
    return queries, train


def _budget_for_chunks(num_train: int, num_features: int, chunks: int) -> int:
    """A memory budget that makes about ``chunks`` chunks of float32 rows."""
    chunk_bytes = 2 * CHUNK_COPIES * (num_features + 1) * 4
    return max(chunk_bytes, chunk_bytes * (-(-num_train // chunks)))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 7, 150])
def test_strict_host_train_streams_to_device1(metric, k):
    """array_api_strict's CPU device is the host and device1 the GPU: results on device1, as the oracle."""
    xp = pytest.importorskip("array_api_strict")
    host, device1 = xp.Device("CPU_DEVICE"), xp.Device("device1")
    queries, train = _tied(600)
    budget = _budget_for_chunks(600, 5, chunks=7)  # chunks of ~86 rows: some smaller than k
    assert chunk_rows_for(5, 4, budget) < 150
    distances, indices = knn_gpu.kneighbors(
        xp.asarray(queries, device=device1), xp.asarray(train, device=host), k, metric=metric, memory_budget=budget
    )
    for result, dtype in ((distances, xp.float32), (indices, xp.int64)):
        assert array_api_compat.device(result) == device1 and result.dtype == dtype and result.shape == (23, k)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k, metric)
    in_memory_distances, in_memory_indices = knn_gpu.kneighbors(queries, train, k, metric=metric)
    np.testing.assert_array_equal(to_host(indices), in_memory_indices)
    if metric != "cosine":  # integer data: exact distances, so the oracle's ties are the only right answer
        np.testing.assert_array_equal(to_host(indices), expected_indices)
    np.testing.assert_allclose(to_host(distances), expected_distances, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("chunks", [1, 3, 10])
def test_numpy_out_of_core_equals_in_memory(chunks):
    """Host and device the same memory: forced streaming gives the in-memory indices, float32 data far from 0."""
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((3000, 12)) + 100).astype(np.float32)
    queries = (rng.standard_normal((150, 12)) + 100).astype(np.float32)
    budget = _budget_for_chunks(3000, 12, chunks)
    streamed = knn_gpu.kneighbors(queries, train, 9, out_of_core=True, memory_budget=budget)
    in_memory = knn_gpu.kneighbors(queries, train, 9)
    np.testing.assert_array_equal(streamed[1], in_memory[1])
    np.testing.assert_allclose(streamed[0], in_memory[0], rtol=1e-6)
    assert streamed[0].dtype == np.float32 and streamed[1].dtype == np.int64
    np.testing.assert_array_equal(streamed[1], oracle_kneighbors(queries, train, 9)[1])


def test_out_of_core_peak_is_within_the_budget_plus_the_output():
    rng = np.random.default_rng(2)
    train = rng.standard_normal((60_000, 32), dtype=np.float32)
    queries = rng.standard_normal((2_000, 32), dtype=np.float32)
    budget = 16 * 2**20
    (distances, indices), peak = traced_peak(
        lambda: knn_gpu.kneighbors(queries, train, 10, out_of_core=True, memory_budget=budget)
    )
    # The running k best, a chunk's k best and their merge are (queries, 2k)-sized: output-sized.
    output = distances.nbytes + indices.nbytes
    assert peak <= budget + 4 * output, (peak / 2**20, budget / 2**20, output / 2**20)
    np.testing.assert_array_equal(indices[:30], oracle_kneighbors(queries[:30], train, 10)[1])


def test_host_numpy_train_streams_to_fake_cuda():
    """numpy training rows and torch queries on a (fake) GPU: chunks go to the queries' device, no hidden sync."""
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    queries, train = _tied(400, seed=3)
    budget = _budget_for_chunks(400, 5, chunks=4)
    expected = knn_gpu.kneighbors(queries, train, 6)
    with fake_cuda(num_devices=2, allowed_sync_sites=ENGINE_SYNC_SITES) as gpu:
        device = torch.device("cuda", 1)
        distances, indices = knn_gpu.kneighbors(torch.asarray(queries, device=device), train, 6, memory_budget=budget)
        for result, dtype in ((distances, torch.float32), (indices, torch.int64)):
            assert result.device == device and result.dtype == dtype and tuple(result.shape) == (23, 6)
        with allow_sync():  # fetching the final results is the one wanted copy
            host_indices, host_distances = indices.cpu().numpy(), distances.cpu().numpy()
    assert all(query.device == 1 for query in gpu.memory_queries)
    np.testing.assert_array_equal(host_indices, expected[1])
    np.testing.assert_allclose(host_distances, expected[0], rtol=1e-6)


def test_is_host_array():
    assert is_host_array(np.zeros(2))
    xp = pytest.importorskip("array_api_strict")
    assert is_host_array(xp.asarray([1.0]))
    assert not is_host_array(xp.asarray([1.0], device=xp.Device("device1")))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"memory_budget": 0}, ValueError, "memory_budget"),
        ({"memory_budget": -5}, ValueError, "memory_budget"),
        ({"memory_budget": 1.5}, TypeError, "memory_budget"),
        ({"memory_budget": True}, TypeError, "memory_budget"),
        ({"out_of_core": "yes"}, TypeError, "out_of_core"),
        ({"out_of_core": 1}, TypeError, "out_of_core"),
    ],
)
def test_bad_streaming_parameters_are_rejected(kwargs, error, match):
    train = np.ones((5, 2))
    with pytest.raises(error, match=match):
        knn_gpu.kneighbors(train, train, 2, **kwargs)


def test_never_streaming_refuses_mixed_devices():
    xp = pytest.importorskip("array_api_strict")
    train = xp.asarray(np.ones((5, 2)))
    queries = xp.asarray(np.ones((2, 2)), device=xp.Device("device1"))
    with pytest.raises(ValueError, match="same device"):
        knn_gpu.kneighbors(queries, train, 2, out_of_core=False)


@pytest.mark.parametrize("model_class", [knn_gpu.KNN, knn_gpu.KNNClassifier])
def test_out_of_core_estimators_equal_in_memory(model_class):
    """out_of_core=True keeps X in host memory; every query method gives the in-memory model's answers."""
    queries, train = _tied(500, seed=5)
    labels = np.arange(500) % 4
    budget = _budget_for_chunks(500, 5, chunks=6)
    streamed = model_class(7, out_of_core=True, memory_budget=budget).fit(train, labels)
    in_memory = model_class(7).fit(train, labels)
    assert streamed._index.plan == "streamed" and streamed._index.rows is train
    for method in ("predict", "kneighbors"):
        got, expected = getattr(streamed, method)(queries), getattr(in_memory, method)(queries)
        for got_part, expected_part in zip(np.atleast_1d(got), np.atleast_1d(expected)):
            np.testing.assert_allclose(got_part, expected_part, rtol=1e-6)
    leave_one_out, expected = streamed.kneighbors(), in_memory.kneighbors()  # X=None: the rows are the queries
    np.testing.assert_array_equal(leave_one_out[1], expected[1])
    np.testing.assert_allclose(leave_one_out[0], expected[0], rtol=1e-6)


def test_torch_cuda_backend_and_automatic_out_of_core(monkeypatch):
    """backend='torch:cuda:1' and 'auto' on a fake GPU; too little free memory keeps X on the host."""
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    from knn_gpu._lib import backends

    monkeypatch.setattr(backends, "torch_cuda_status", lambda: (True, ""))  # the CPU build, faked into CUDA
    monkeypatch.setattr(backends, "cupy_gpu_status", lambda: (False, "no GPU for CuPy"))
    queries, train = _tied(600, seed=6)
    labels = np.arange(600) % 3
    expected = knn_gpu.KNNClassifier(5).fit(train, labels)
    sites = ENGINE_SYNC_SITES
    with fake_cuda(num_devices=2, allowed_sync_sites=sites, free_bytes=1 << 40) as gpu:
        model = knn_gpu.KNNClassifier(5, backend="torch:cuda:1").fit(train, labels)
        assert model._index.plan == "product" and model._index.device == torch.device("cuda", 1)
        with allow_sync():  # NumPy queries: NumPy results, like X, the one wanted copy to the host
            host_result = model.predict(queries)
        device_result = model.predict(torch.asarray(queries, device="cuda:1"))
        assert device_result.device == torch.device("cuda", 1) and device_result.dtype == torch.int64
        assert knn_gpu._estimators.knn.resolve_backend("auto", train)[1] == torch.device("cuda", 0)
        with allow_sync():
            device_result = device_result.cpu().numpy()
    assert isinstance(host_result, np.ndarray)
    np.testing.assert_array_equal(host_result, expected.predict(queries))
    np.testing.assert_array_equal(device_result, expected.predict(queries))
    assert all(query.device == 1 for query in gpu.memory_queries)
    # 32 KiB free: the training rows (600 x 6 x 4 bytes, twice: 28.8 KB) do not fit in half of it, so they stream.
    with fake_cuda(num_devices=1, allowed_sync_sites=sites, free_bytes=32 * 1024):
        model = knn_gpu.KNNClassifier(5, backend="torch:cuda").fit(train, labels)
        assert model._index.plan == "streamed" and model._index.rows is train
        predicted = model.predict(torch.asarray(queries, device="cuda"))
        with allow_sync():
            predicted = predicted.cpu().numpy()
    np.testing.assert_array_equal(predicted, expected.predict(queries))


def test_unknown_torch_device_names_are_rejected():
    with pytest.raises(ValueError, match="backend must be None, 'auto' or one of"):
        knn_gpu.KNN(1, backend="torch:tpu").fit(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="whole number"):
        knn_gpu.KNN(1, backend="torch:cuda:x").fit(np.ones((3, 2)), np.ones(3))


def test_half_precision_streams_in_half_and_answers_in_float32():
    """float16 host rows stream as float16 chunks; distances float32, indices those of the in-memory search."""
    rng = np.random.default_rng(9)
    train = rng.integers(-4, 5, size=(900, 6)).astype(np.float16)
    queries = rng.integers(-4, 5, size=(40, 6)).astype(np.float16)
    streamed = knn_gpu.kneighbors(queries, train, 8, out_of_core=True, memory_budget=_budget_for_chunks(900, 6, 5))
    in_memory = knn_gpu.kneighbors(queries, train, 8)
    assert streamed[0].dtype == np.float32 and streamed[1].dtype == np.int64
    np.testing.assert_array_equal(streamed[1], in_memory[1])
    np.testing.assert_array_equal(streamed[1], oracle_kneighbors(queries, train, 8)[1])
    model = knn_gpu.KNN(8, out_of_core=True, memory_budget=_budget_for_chunks(900, 6, 5)).fit(train, np.ones(900))
    assert model._index.rows.dtype == np.float16 and model._index.dtype == np.float16


def test_streamed_minkowski_keeps_its_power():
    """A streamed model with metric='minkowski' and p = 3 ranks by p = 3 in every chunk, not by euclidean.

    Integer data: the p = 3 sums are exact, so the streamed and in-memory
    searches must agree to the index.
    """
    from knn_gpu._engine.streaming import StreamedTrain, streamed_search

    rng = np.random.default_rng(11)
    train = rng.integers(-9, 10, size=(500, 5)).astype(np.float32)
    queries = rng.integers(-9, 10, size=(23, 5)).astype(np.float32)
    budget = _budget_for_chunks(500, 5, chunks=4)
    streamed = StreamedTrain(train, np.zeros(0, dtype=np.float32), np.float32, "minkowski", memory_budget=budget, p=3)
    distances, indices = streamed_search(streamed, queries, 6)
    expected = knn_gpu.kneighbors(queries, train, 6, metric="minkowski", p=3)
    euclidean = knn_gpu.kneighbors(queries, train, 6)
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_allclose(distances, expected[0], rtol=1e-6)
    assert not np.array_equal(expected[1], euclidean[1])  # the data tell p = 3 from p = 2
