"""Out-of-core copies overlap the search: chunk i + 1 is loaded before chunk i is searched, two chunks at most.

The schedule (knn_gpu._engine.batches.halving_batches with ``load=``) is backend-neutral
and runs on every stand-in; CuPy's pinned-buffer / second-stream uploader is
checked against a recording stand-in of CuPy's stream API here and on a real
GPU where CuPy has one.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from guards import traced_peak
from oracle import oracle_kneighbors

import knn_gpu
from knn_gpu._engine import streaming
from knn_gpu._engine.batches import halving_batches
from knn_gpu._engine.prefetch import CupyPrefetch
from knn_gpu._engine.streaming import CHUNK_COPIES, DirectUpload, chunk_rows_for
from knn_gpu._lib.backends import cupy_gpu_status, to_host


class Loaded:
    """A loaded range that counts how many are alive."""

    alive = 0
    most = 0

    def __init__(self, start, stop):
        self.span = (start, stop)
        Loaded.alive += 1
        Loaded.most = max(Loaded.most, Loaded.alive)

    def __del__(self):
        Loaded.alive -= 1


@pytest.fixture
def counting():
    Loaded.alive = Loaded.most = 0
    yield Loaded
    assert Loaded.alive == 0


def test_the_next_range_is_loaded_before_this_one_is_searched(counting):
    events = []

    def load(start, stop):
        events.append(("load", start))
        return Loaded(start, stop)

    def search(start, stop, loaded):
        assert loaded.span == (start, stop)
        events.append(("search", start))
        return start

    results = list(
        halving_batches(search, range(0, 40, 10), 10, 40, xp=np, device="cpu", memory_budget=None, load=load)
    )
    assert [start for start, _ in results] == [0, 10, 20, 30]
    assert events == [
        ("load", 0),
        ("load", 10),
        ("search", 0),
        ("load", 20),
        ("search", 10),
        ("load", 30),
        ("search", 20),
        ("search", 30),
    ]
    assert counting.most == 2


def test_a_range_out_of_memory_drops_both_loads_and_resumes_in_halves(counting):
    out_of_memory = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
    events = []

    def load(start, stop):
        events.append(("load", start, stop))
        return Loaded(start, stop)

    def search(start, stop, loaded):
        assert counting.alive <= 2
        events.append(("search", start, stop))
        if start == 20 and stop - start > 5:
            raise out_of_memory("injected")
        return list(range(start, stop))

    results = list(
        halving_batches(search, range(0, 40, 10), 10, 40, xp=np, device="cpu", memory_budget=None, load=load)
    )
    assert [row for _, rows in results for row in rows] == list(range(40))
    failed = events.index(("search", 20, 30))
    # After the failure the loads restart at the failed range, at the halved size.
    assert events[failed + 1 : failed + 4] == [("load", 20, 25), ("load", 25, 30), ("search", 20, 25)]
    assert counting.most == 2


def test_streaming_uploads_one_chunk_ahead(backend, monkeypatch):
    """Every stand-in: upload of chunk i + 1 before the index of chunk i is built; same results as in memory."""
    rng = np.random.default_rng(4)
    train = rng.integers(-4, 5, size=(400, 6)).astype(np.float32)
    queries = rng.integers(-4, 5, size=(30, 6)).astype(np.float32)
    budget = 2 * CHUNK_COPIES * 7 * 4 * 100  # chunks of 100 rows
    assert chunk_rows_for(6, 4, budget) == 100
    events = []
    original_start, original_build = DirectUpload.start, streaming.build_index

    def start(self, host_rows):
        events.append(("upload", int(host_rows.shape[0])))
        return original_start(self, host_rows)

    def build_index(chunk, *args, **kwargs):
        events.append(("search", int(chunk.shape[0])))
        return original_build(chunk, *args, **kwargs)

    monkeypatch.setattr(DirectUpload, "start", start)
    monkeypatch.setattr(streaming, "build_index", build_index)
    q = backend.asarray(queries)
    distances, indices = knn_gpu.kneighbors(q, train, 9, out_of_core=True, memory_budget=budget)
    kinds = [kind for kind, _ in events]
    assert kinds == ["upload", "upload", "search", "upload", "search", "upload", "search", "search"]
    backend.check(indices, (30, 9), backend.xp.int64)
    expected = knn_gpu.kneighbors(queries, train, 9)
    np.testing.assert_array_equal(to_host(indices), expected[1])
    np.testing.assert_array_equal(to_host(distances), expected[0])
    np.testing.assert_array_equal(to_host(indices), oracle_kneighbors(queries, train, 9)[1])


def test_strict_device_streaming_peak_is_within_the_budget():
    """array_api_strict's device1 copies each chunk (as a GPU does): two chunks resident stay within the budget."""
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(5)
    train = rng.standard_normal((20_000, 32), dtype=np.float32)
    queries = rng.standard_normal((500, 32), dtype=np.float32)
    budget = 4 * 2**20
    q = xp.asarray(queries, device=xp.Device("device1"))
    knn_gpu.kneighbors(q[:5, ...], train[:300], 3, out_of_core=True, memory_budget=budget)  # one-time caches
    (distances, indices), peak = traced_peak(
        lambda: knn_gpu.kneighbors(q, train, 10, out_of_core=True, memory_budget=budget)
    )
    output = 500 * 10 * (4 + 8)
    assert peak <= budget + 4 * output, (peak / 2**20, budget / 2**20)
    np.testing.assert_array_equal(to_host(indices)[:40], oracle_kneighbors(queries[:40], train, 10)[1])


def test_fake_cuda_torch_falls_back_to_direct_copies():
    """torch without CUDA cannot make a stream or pinned memory: chunks are copied directly, on the fake device."""
    torch = pytest.importorskip("torch")
    from fake_cuda import fake_cuda

    with fake_cuda(num_devices=2):
        anchor = torch.empty(0, device=torch.device("cuda", 1))
        train = streaming.StreamedTrain(np.zeros((10, 3), np.float32), anchor, torch.float32, "euclidean")
        uploader = streaming.chunk_uploader(train, 5)
        assert isinstance(uploader, DirectUpload)
        chunk = uploader.finish(uploader.start(train.rows[:5]))
        assert chunk.device == torch.device("cuda", 1) and chunk.dtype == torch.float32


class RecordingCuda:
    """A stand-in for CuPy's stream API on NumPy: records the order of copies, records and waits."""

    def __init__(self):
        self.log = []
        self.search_stream = self.Stream(self, "search")

    class Stream:
        def __init__(self, api, name="copy", non_blocking=False):
            self.api, self.name = api, name
            self.recorded = 0

        def record(self):
            self.recorded += 1
            event = SimpleNamespace(name=f"{self.name}{self.recorded}", synchronize=None)
            event.synchronize = lambda: self.api.log.append(("host waits", event.name))
            self.api.log.append(("record", event.name))
            return event

        def wait_event(self, event):
            self.api.log.append((f"{self.name} waits", event.name))

    def namespace(self):
        api = self

        class DeviceArray(np.ndarray):
            def set(self, host, stream=None):
                api.log.append(("copy", stream.name, host.shape[0]))
                self[...] = host

        def empty(shape, dtype):
            return np.empty(shape, dtype).view(DeviceArray)

        return SimpleNamespace(
            Stream=lambda non_blocking=False: self.Stream(self),
            current_stream=lambda: self.search_stream,
            empty=empty,
            empty_pinned=lambda shape, dtype: np.empty(shape, dtype),
        )


def test_cupy_prefetch_orders_its_copies_with_events():
    """Copy on the second stream after the search stream's queued work; the search waits on the copy's event."""
    cuda = RecordingCuda()
    uploader = CupyPrefetch(np, np.float32, 4, 3, api=cuda.namespace())
    host = [np.arange(12, dtype=np.float64).reshape(4, 3) + 100 * i for i in range(3)]
    pending = [uploader.start(host[0]), uploader.start(host[1])]
    first = uploader.finish(pending[0])
    pending.append(uploader.start(host[2][:2]))  # the third chunk reuses the first chunk's pinned buffer
    assert cuda.log == [
        ("record", "search1"),
        ("copy waits", "search1"),
        ("copy", "copy", 4),
        ("record", "copy1"),
        ("record", "search2"),
        ("copy waits", "search2"),
        ("copy", "copy", 4),
        ("record", "copy2"),
        ("search waits", "copy1"),  # finish(first): a device-side wait, the host goes on
        ("host waits", "copy1"),  # the buffer of copy 1 is refilled only when that copy is done
        ("record", "search3"),
        ("copy waits", "search3"),
        ("copy", "copy", 2),
        ("record", "copy3"),
    ]
    # Staged in the working dtype on the host: the values NumPy's float64 -> float32 cast gives.
    np.testing.assert_array_equal(first, host[0].astype(np.float32))
    assert first.dtype == np.float32
    np.testing.assert_array_equal(uploader.finish(pending[2]), host[2][:2].astype(np.float32))
    np.testing.assert_array_equal(uploader.finish(pending[1]), host[1].astype(np.float32))


CUPY_USABLE, CUPY_REASON = cupy_gpu_status()


@pytest.mark.skipif(not CUPY_USABLE, reason=f"no usable GPU for CuPy: {CUPY_REASON}")
def test_cupy_streaming_uses_the_second_stream_and_equals_numpy():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(6)
    train = rng.standard_normal((5000, 16)).astype(np.float32)
    queries = rng.standard_normal((64, 16)).astype(np.float32)
    anchor = cupy.empty(0, dtype=cupy.float32)
    train_rows = streaming.StreamedTrain(train, anchor, cupy.float32, "euclidean")
    assert isinstance(streaming.chunk_uploader(train_rows, 1000), CupyPrefetch)
    budget = 2 * CHUNK_COPIES * 17 * 4 * 1000
    distances, indices = knn_gpu.kneighbors(cupy.asarray(queries), train, 8, out_of_core=True, memory_budget=budget)
    expected = knn_gpu.kneighbors(queries, train, 8, out_of_core=True, memory_budget=budget)
    np.testing.assert_array_equal(cupy.asnumpy(indices), expected[1])
    np.testing.assert_array_equal(cupy.asnumpy(distances), expected[0])
