"""A batch that runs out of device memory is searched again in halves (knn_gpu._engine.batches), in every batch loop.

The device libraries' errors are stood in for by classes with their module
and name, raised by the engines' batch functions (monkeypatched) for batches
above a size: the searches must then give exactly the undisturbed results.
"""

from __future__ import annotations

import subprocess
import sys
import weakref
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from oracle import oracle_kneighbors

import knn_gpu
from knn_gpu._engine import batches, direct, radius, radius_direct, radius_streamed, search, streaming
from knn_gpu._engine.batches import MAX_HALVINGS, DeviceMemoryError, halving_batches, is_out_of_memory
from knn_gpu._lib.backends import to_host


def fake_error_class(module: str, name: str, base: type = Exception) -> type:
    """An exception class that claims to be ``module.name`` (as CuPy's and torch's are recognised)."""
    cls = type(name, (base,), {})
    cls.__module__ = module
    cls.__qualname__ = name
    return cls


CupyOutOfMemory = fake_error_class("cupy.cuda.memory", "OutOfMemoryError", MemoryError)
TorchOutOfMemory = fake_error_class("torch", "OutOfMemoryError", RuntimeError)
FAKE_ERRORS = {"cupy": CupyOutOfMemory, "torch": TorchOutOfMemory}


def _data(num_queries=50, num_train=300, num_features=6, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.integers(-4, 5, size=(num_train, num_features)).astype(np.float32)  # ties, exact distances
    queries = rng.integers(-4, 5, size=(num_queries, num_features)).astype(np.float32)
    return queries, train


class Injector:
    """Wraps ``module.name`` so that it raises ``error`` when its ``rows_of(args)`` exceeds ``limit``; records sizes."""

    def __init__(self, monkeypatch, module, name, rows_of, error=CupyOutOfMemory, limit=0):
        self.original = getattr(module, name)
        self.rows_of, self.error, self.limit = rows_of, error, limit
        self.sizes: list[int] = []
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        rows = self.rows_of(*args)
        self.sizes.append(rows)
        if rows > self.limit:
            raise self.error(f"Out of memory allocating {rows * 1000:,} bytes (injected)")
        return self.original(*args, **kwargs)


def _queries_rows(index, queries, *rest):
    return int(queries.shape[0])


def _product_batch_rows(index, plan, queries, *rest):
    return int(queries.shape[0])


#: The rows of a batch, from the arguments of each engine's batch function.
BATCH_ROWS = {search: _product_batch_rows, direct: _queries_rows}


def _chunk_rows(chunk, *rest):
    return int(chunk.shape[0])


def _host_all(result):
    return [to_host(part) for part in result]


# --- recognising the errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        CupyOutOfMemory("Out of memory allocating 1,024 bytes"),
        TorchOutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB"),
        fake_error_class("torch.cuda", "OutOfMemoryError", RuntimeError)("old name"),
        fake_error_class("cupy.cuda.memory", "OutOfMemoryError", MemoryError)("any message"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total capacity)"),
        fake_error_class("torch", "AcceleratorError", RuntimeError)("CUDA error: out of memory"),
        fake_error_class("cupy_backends.cuda.api.runtime", "CUDARuntimeError", RuntimeError)(
            "cudaErrorMemoryAllocation: out of memory"
        ),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        DeviceMemoryError("an inner loop gave up"),
    ],
    ids=lambda error: f"{type(error).__module__}.{type(error).__qualname__}",
)
def test_out_of_memory_errors_are_recognised(error):
    assert is_out_of_memory(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("CUDA out of memory"),  # not a runtime or memory error
        RuntimeError("CUDA error: device-side assert triggered"),
        fake_error_class("torch", "AcceleratorError", RuntimeError)("CUDA error: an illegal memory access"),
        fake_error_class("mylib", "OutOfMemoryError", MemoryError)("CUDA out of memory"),  # another library's class
        MemoryError("Unable to allocate 8.00 GiB for an array"),  # host memory: not the device's
        KeyError("OutOfMemoryError"),
    ],
    ids=repr,
)
def test_other_errors_are_not_out_of_memory(error):
    assert not is_out_of_memory(error)


def test_recognising_imports_neither_cupy_nor_torch():
    code = (
        "import sys, knn_gpu._engine.batches as b\n"
        "before = {'cupy', 'torch'} & set(sys.modules)\n"
        "class E(MemoryError): pass\n"
        "E.__module__ = 'cupy.cuda.memory'; E.__qualname__ = 'OutOfMemoryError'\n"
        "assert b.is_out_of_memory(E()) and not b.is_out_of_memory(ValueError())\n"
        "assert b.is_out_of_memory(RuntimeError('CUDA out of memory.'))\n"
        "after = {'cupy', 'torch'} & set(sys.modules)\n"
        "assert before == after, (before, after)\n"
        "print(sorted(after))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# --- the runner ----------------------------------------------------------------------------------


def _runner(search, starts, batch_rows, num_rows, **options):
    return list(
        halving_batches(search, starts, batch_rows, num_rows, xp=np, device="cpu", memory_budget=4096, **options)
    )


def test_halving_covers_every_row_once_in_order():
    tried = []

    def search(start, stop):
        tried.append((start, stop))
        if stop - start > 3:
            raise CupyOutOfMemory("injected")
        return list(range(start, stop))

    results = _runner(search, [0, 10, 20], 10, 25)
    assert [row for _, rows in results for row in rows] == list(range(25))
    assert [start for start, _ in results] == sorted(start for start, _ in results)
    # 10 -> 5 -> 3 (two halvings), then the smaller size sticks for every later range.
    assert tried[:3] == [(0, 10), (0, 5), (0, 3)]
    assert all(stop - start <= 3 for start, stop in tried[3:])


def test_halving_is_bounded_then_a_clear_error_names_memory_budget():
    tried = []

    def search(start, stop):
        tried.append(stop - start)
        raise TorchOutOfMemory("CUDA out of memory. Tried to allocate 1.00 GiB")

    with pytest.raises(DeviceMemoryError, match=r"memory_budget=4096 bytes.*smaller memory_budget") as caught:
        _runner(search, [0], 64, 64)
    assert tried == [64, 32, 16, 8, 4, 2]  # MAX_HALVINGS halvings, then it gives up
    assert len(tried) == MAX_HALVINGS + 1
    assert isinstance(caught.value, MemoryError)
    assert isinstance(caught.value.__cause__, TorchOutOfMemory)
    assert "2 queries at once (batches of 64 halved 5 times)" in str(caught.value)


def test_a_single_row_is_not_halved():
    tried = []

    def search(start, stop):
        tried.append(stop - start)
        raise CupyOutOfMemory("injected")

    with pytest.raises(DeviceMemoryError, match="1 queries at once"):
        _runner(search, [0, 1], 1, 2)
    assert tried == [1]


def test_other_errors_pass_through_the_runner_untouched():
    tried = []

    def search(start, stop):
        tried.append(stop - start)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _runner(search, [0], 8, 8)
    assert tried == [8]


def test_the_failed_batch_is_freed_before_the_retry():
    """The exception's traceback holds the batch's arrays: they must be gone when the halves run."""
    held = []

    def search(start, stop):
        scratch = np.ones((stop - start, 1000))
        alive_before = [ref() is not None for ref in held]
        held.append(weakref.ref(scratch))
        assert not any(alive_before), "a failed batch's array was still alive at the retry"
        if stop - start > 2:
            raise CupyOutOfMemory("injected")
        return float(scratch.sum())

    assert [result for _, result in _runner(search, [0], 8, 8)] == [2000.0] * 4


def test_on_failure_is_called_once_per_failure():
    calls = []

    def search(start, stop):
        if stop - start > 2:
            raise CupyOutOfMemory("injected")
        return stop - start

    _runner(search, [0], 8, 8, on_failure=lambda: calls.append(1))
    assert len(calls) == 2


def test_release_device_memory_empties_the_library_pools(monkeypatch):
    """torch: the CUDA cache, for CUDA tensors only; CuPy: the default pool's free blocks (stand-in modules)."""
    freed = []
    torch = pytest.importorskip("torch")
    import array_api_compat

    xp = array_api_compat.array_namespace(torch.empty(0))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append("torch"))
    batches.release_device_memory(xp, torch.device("cpu"))
    assert freed == []
    batches.release_device_memory(xp, torch.device("cuda", 0))
    assert freed == ["torch"]
    fake_cupy = SimpleNamespace(
        get_default_memory_pool=lambda: SimpleNamespace(free_all_blocks=lambda: freed.append("cupy"))
    )
    with monkeypatch.context() as patch:  # only for this call: array-api-compat looks CuPy up in sys.modules
        patch.setitem(sys.modules, "cupy", fake_cupy)
        batches.release_device_memory(ModuleType("cupy"), 0)
    assert freed == ["torch", "cupy"]


# --- every batch loop, on every stand-in backend --------------------------------------------------


@pytest.mark.parametrize("library", ["cupy", "torch"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])  # product engine, direct engine
def test_k_search_recovers_with_the_same_results(backend, monkeypatch, library, metric):
    queries, train = _data()
    q, t = backend.asarray(queries), backend.asarray(train)
    expected = _host_all(knn_gpu.kneighbors(q, t, 7, metric=metric, batch_size=16))
    module = direct if metric == "manhattan" else search
    injector = Injector(monkeypatch, module, "_search_batch", BATCH_ROWS[module], FAKE_ERRORS[library], limit=5)
    distances, indices = knn_gpu.kneighbors(q, t, 7, metric=metric, batch_size=16)
    assert injector.sizes[:3] == [16, 8, 4]  # the first batch failed twice, then every batch ran at 4
    assert max(injector.sizes[3:]) <= 4
    backend.check(indices, (50, 7), backend.xp.int64)
    backend.check(distances, (50, 7), backend.xp.float32)
    np.testing.assert_array_equal(to_host(indices), expected[1])
    np.testing.assert_array_equal(to_host(distances), expected[0])
    np.testing.assert_array_equal(to_host(indices), oracle_kneighbors(queries, train, 7, metric)[1])


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_radius_search_recovers_with_the_same_results(backend, monkeypatch, metric):
    queries, train = _data()
    q, t = backend.asarray(queries), backend.asarray(train)
    options = {"metric": metric, "batch_size": 16, "sort_results": True}
    expected = _host_all(knn_gpu.radius_neighbors(q, t, 4.0, **options))
    module = radius_direct if metric == "manhattan" else radius
    injector = Injector(monkeypatch, module, "_radius_batch", _queries_rows, limit=5)
    result = _host_all(knn_gpu.radius_neighbors(q, t, 4.0, **options))
    assert injector.sizes[:3] == [16, 8, 4]
    assert len(result) == len(expected)
    for got, want in zip(result, expected):
        np.testing.assert_array_equal(got, want)


def test_out_of_core_chunks_recover_with_the_same_results(backend, monkeypatch):
    queries, train = _data(num_train=400)
    q = backend.asarray(queries)
    budget = 2 * streaming.CHUNK_COPIES * 7 * 4 * 100  # chunks of 100 rows
    expected = _host_all(knn_gpu.kneighbors(q, train, 9, out_of_core=True, memory_budget=budget))
    injector = Injector(monkeypatch, streaming, "build_index", _chunk_rows, limit=30)
    distances, indices = knn_gpu.kneighbors(q, train, 9, out_of_core=True, memory_budget=budget)
    assert injector.sizes[:3] == [100, 50, 25]
    assert max(injector.sizes[3:]) <= 25
    backend.check(indices, (50, 9), backend.xp.int64)
    np.testing.assert_array_equal(to_host(indices), expected[1])
    np.testing.assert_array_equal(to_host(distances), expected[0])
    np.testing.assert_array_equal(to_host(indices), oracle_kneighbors(queries, train, 9)[1])


def test_out_of_core_radius_chunks_recover_with_the_same_results(backend, monkeypatch):
    queries, train = _data(num_train=400)
    q = backend.asarray(queries)
    budget = 2 * streaming.CHUNK_COPIES * 7 * 4 * 100
    model = knn_gpu.NearestNeighbors(out_of_core=True, memory_budget=budget).fit(train)

    def lists():
        distances, indices = model.radius_neighbors(q, 4.0, sort_results=True)
        return [to_host(row) for row in distances], [to_host(row) for row in indices]

    expected = lists()
    injector = Injector(monkeypatch, radius_streamed, "build_index", _chunk_rows, limit=30)
    result = lists()
    assert injector.sizes[:3] == [100, 50, 25]
    assert sum(len(row) for row in result[1]) > 50  # neighbours were found
    for got, want in zip(result, expected):
        for got_row, want_row in zip(got, want, strict=True):
            np.testing.assert_array_equal(got_row, want_row)


def test_an_inner_loop_that_gives_up_halves_the_chunk():
    """Out of core, a chunk whose batches gave up (DeviceMemoryError) is searched again in halves."""
    queries, train = _data(num_train=400)
    budget = 2 * streaming.CHUNK_COPIES * 7 * 4 * 100
    expected = knn_gpu.kneighbors(queries, train, 9, out_of_core=True, memory_budget=budget)
    chunk_sizes = []
    original = search._search_batch

    def fails_for_big_chunks(index, plan, batch, k, *rest, **options):
        chunk_sizes.append(index.num_samples)
        if index.num_samples > 60:
            raise CupyOutOfMemory("injected")
        return original(index, plan, batch, k, *rest, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "_search_batch", fails_for_big_chunks)
        distances, indices = knn_gpu.kneighbors(queries, train, 9, out_of_core=True, memory_budget=budget)
    assert 100 in chunk_sizes and 50 in chunk_sizes
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_array_equal(distances, expected[0])


@pytest.mark.parametrize(("metric", "p", "module"), [("euclidean", 2, search), ("minkowski", 1, direct)])
def test_a_model_stays_usable_after_giving_up(backend, monkeypatch, metric, p, module):
    queries, train = _data()
    model = knn_gpu.NearestNeighbors(n_neighbors=7, metric=metric, p=p, batch_size=16).fit(backend.asarray(train))
    q = backend.asarray(queries)
    with monkeypatch.context() as patch:
        injector = Injector(patch, module, "_search_batch", BATCH_ROWS[module], limit=0)
        with pytest.raises(DeviceMemoryError, match="memory_budget"):
            model.kneighbors(q)
        assert injector.sizes == [16, 8, 4, 2, 1]  # a single query is not halved
    distances, indices = model.kneighbors(q)
    oracle_metric = "manhattan" if p == 1 else "euclidean"
    np.testing.assert_array_equal(to_host(indices), oracle_kneighbors(queries, train, 7, oracle_metric)[1])


def test_an_unrelated_error_in_a_batch_is_not_swallowed(backend, monkeypatch):
    queries, train = _data()
    injector = Injector(monkeypatch, search, "_search_batch", _product_batch_rows, ValueError, limit=0)
    with pytest.raises(ValueError, match="injected"):
        knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), 3, batch_size=16)
    assert injector.sizes == [16]


def test_fake_cuda_recovers_on_its_device(monkeypatch):
    """torch on a (fake) second GPU: the retried batches stay on it, no hidden host sync, same results."""
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    queries, train = _data()
    expected = knn_gpu.kneighbors(queries, train, 5, batch_size=16)
    with fake_cuda(num_devices=2, allowed_sync_sites=ENGINE_SYNC_SITES):
        device = torch.device("cuda", 1)
        q, t = torch.asarray(queries, device=device), torch.asarray(train, device=device)
        injector = Injector(monkeypatch, search, "_search_batch", _product_batch_rows, TorchOutOfMemory, limit=5)
        distances, indices = knn_gpu.kneighbors(q, t, 5, batch_size=16)
        assert indices.device == device and distances.device == device
        with allow_sync():
            host_indices, host_distances = indices.cpu().numpy(), distances.cpu().numpy()
    assert injector.sizes[:3] == [16, 8, 4]
    np.testing.assert_array_equal(host_indices, expected[1])
    np.testing.assert_array_equal(host_distances, expected[0])
