"""benchmarks/gpu_cost_model.py: its pricing checked by hand, its trace against a real run, its report's structure.

No wall-clock time is asserted: the model's figures are computed from shapes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fake_cuda import HiddenHostSync, allow_sync, fake_cuda  # noqa: E402
from oracle import oracle_kneighbors  # noqa: E402

PROGRAM = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_cost_model.py"


@pytest.fixture(scope="module")
def model():
    spec = importlib.util.spec_from_file_location("gpu_cost_model", PROGRAM)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_one_matmul_priced_by_hand(model):
    """(1000 x 512) @ (512 x 2000) float32: 2.048 GFLOP at 50 TFLOP/s = 40.96 us, above its bytes and the launch."""
    with model.device_context() as gpu:
        left = torch.empty((1000, 512), device="cuda")
        right = torch.empty((512, 2000), device="cuda")
        traced = model.trace(gpu, lambda: torch.mm(left, right))
    assert [op.op for op in traced.ops] == ["mm"]
    (op,) = traced.ops
    assert op.flops == 2 * 1000 * 2000 * 512
    assert op.bytes == 4 * (1000 * 512 + 512 * 2000 + 1000 * 2000)
    assert op.seconds == pytest.approx(40.96e-6, rel=1e-12)
    assert traced.kernels == 1
    assert traced.syncs == 0


def test_elementwise_sync_and_copy_priced_by_hand(model):
    """An add is priced by its bytes (or the launch); a host read is a sync; host data put on the device a copy."""
    with model.device_context() as gpu:
        big = torch.empty((1000, 1_000_000), device="cuda")  # meta: no memory
        small = torch.empty(10, device="cuda")
        host = torch.ones(1000)

        def work():
            big + 1  # 4 GB read, 4 GB written: 8e9 / 3.5e12 s
            small * 2  # 80 bytes: the launch, 5 us
            with allow_sync():
                bool(small.sum() > 0)  # two kernels and a host read
            torch.asarray(host, device="cuda")  # 4,000 bytes from pageable memory: 10 us + 4e3 / 20e9 s

        traced = model.trace(gpu, work)
    names = [op.op for op in traced.ops]
    assert names == ["add", "mul", "sum", "gt", "_local_scalar_dense", "_to_copy"]
    add, mul, _, _, sync, copy = traced.ops
    assert add.seconds == pytest.approx(8e9 / 3.5e12)
    assert mul.seconds == pytest.approx(5e-6)
    assert sync.kind == "sync" and sync.seconds == pytest.approx(20e-6 + 5e-6)
    assert copy.kind == "h2d" and copy.kernels == 0 and copy.seconds == pytest.approx(10e-6 + 4000 / 20e9)
    assert traced.syncs == 1
    assert traced.copies == 1


def test_topk_reads_its_input_once_per_digit(model):
    with model.device_context() as gpu:
        values = torch.empty((10_000, 1_000_000), device="cuda")
        traced = model.trace(gpu, lambda: torch.topk(values, 10, dim=1, largest=False, sorted=False))
    (op,) = traced.ops
    block = 4 * 10_000 * 1_000_000
    assert op.kernels == 5
    assert op.bytes == 5 * block + 10_000 * 10 * (4 + 8)
    assert op.seconds == pytest.approx(op.bytes / 3.5e12)


def test_meta_storage_refuses_nothing_the_real_device_allows_and_catches_syncs(model):
    """A search traced on meta still runs under the fake device's checks: a hidden sync raises."""
    with model.device_context() as gpu:
        values = torch.empty(10, device="cuda")
        with pytest.raises(HiddenHostSync, match="hidden host sync"):
            model.trace(gpu, lambda: float(values.sum()))


def test_fake_cuda_rejects_an_unknown_storage():
    with pytest.raises(ValueError, match="storage must be 'cpu' or 'meta'"):
        with fake_cuda(storage="cuda"):
            pass


def test_peer_is_a_correct_search(model):
    """The peer is a real k-NN (against the float64 oracle), not a strawman."""
    rng = np.random.default_rng(0)
    train = rng.integers(-8, 8, size=(300, 6)).astype(np.float32)
    queries = rng.integers(-8, 8, size=(40, 6)).astype(np.float32)
    distances, indices = model.peer_kneighbors(torch.asarray(queries), torch.asarray(train), 5, batch_rows=16)
    expected_distances, _ = oracle_kneighbors(queries, train, 5)
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-5, atol=1e-5)
    # Integer data has ties: every returned index must be at its query's oracle distance.
    oracle = np.sqrt(((queries[:, None, :].astype(np.float64) - train[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(np.take_along_axis(oracle, indices.numpy(), axis=1), expected_distances, atol=1e-5)


def test_small_run_report(model, tmp_path):
    path = tmp_path / "model.json"
    report = model.main(["--shapes", "small", "--json", str(path)])
    assert json.loads(path.read_text())["summary"] == pytest.approx(report["summary"])
    assert report["validation"]["identical"], report["validation"]["first_difference"]
    assert len(report["results"]) == len(model.SHAPES["small"])
    for result in report["results"]:
        for name in ("functional", "fitted", "peer", "peer_fitted"):
            part = result[name]
            assert part["kernels"] > 0 and part["bytes"] > 0 and part["modeled_s"] > 0
            assert part["host_s"] > 0
        # The knn_gpu search and the peer do the same product: neither can beat one GEMM at the peak.
        assert result["fitted"]["modeled_s"] >= result["floor_s"]
        assert result["peer_fitted"]["modeled_s"] >= result["floor_s"]
        assert result["ratio_fitted"] == pytest.approx(
            result["fitted"]["modeled_s"] / result["peer_fitted"]["modeled_s"]
        )
        # The functional call checks both inputs (one host read each) and reads one number at its build
        # (whether the keys need scaling), the fitted one checks only the queries; each search then
        # reads its count of uncertified queries once, after every batch.
        assert result["functional"]["syncs"] == 4
        assert result["fitted"]["syncs"] == 2
    summary = report["summary"]
    ratios = [result["ratio_functional"] for result in report["results"]]
    assert summary["worst_functional"] == max(ratios)
    assert summary["geomean_functional"] == pytest.approx(math.prod(ratios) ** (1 / len(ratios)))
    assert "| shape |" in report["table"]


def test_measured_times_are_put_beside_the_model(model, tmp_path):
    """A GPU run's JSON (two spellings of the shape) is matched by shape and divided by the model."""
    measured = tmp_path / "gpu.json"
    measured.write_text(
        json.dumps(
            {
                "records": [
                    {"n_query": 200, "n_train": 5000, "dim": 16, "k": 10, "knn_gpu_fitted_s": 0.002, "gpu": "H200"},
                    {"shape": {"num_queries": 10, "num_train": 5000, "dim": 16, "k": 10}, "peer_s": 0.0005},
                    {"n_query": 7, "n_train": 5000, "dim": 16, "k": 10, "fitted_s": 1.0},  # a shape not modeled
                    {"n_query": 200, "note": "no shape"},
                ]
            }
        )
    )
    assert model.load_measured(measured) == {
        (200, 5000, 16, 10): {"fitted": 0.002},
        (10, 5000, 16, 10): {"peer": 0.0005},
        (7, 5000, 16, 10): {"fitted": 1.0},
    }
    report = model.main(["--shapes", "small", "--json", str(tmp_path / "model.json"), "--measured", str(measured)])
    lines = report["calibration"].splitlines()[2:]
    assert len(lines) == 2
    first, second = report["results"]
    expected = 0.002 / first["fitted"]["modeled_s"]
    assert lines[0].startswith(f"| {first['label']} | fitted |") and lines[0].endswith(f"| {expected:.2f} |")
    assert lines[1].startswith(f"| {second['label']} | peer |")
    assert lines[1].endswith(f"| {0.0005 / second['peer_fitted']['modeled_s']:.2f} |")


def test_bench_gpu_records_are_read_as_measurements(model, tmp_path):
    """benchmarks/bench_gpu.py's records (method, backend, seconds_min): torch only, in memory, no failed method."""
    common = {"n_query": 200, "n_train": 5000, "dim": 16, "k": 10, "out_of_core": False, "error": ""}
    records = [
        {**common, "method": "peer", "backend": "torch", "seconds_min": 0.001},
        {**common, "method": "floor", "backend": "torch", "seconds_min": 0.0002},
        {**common, "method": "knn_gpu [torch]", "backend": "torch", "seconds_min": 0.003},
        {**common, "method": "knn_gpu fitted [torch]", "backend": "torch", "seconds_min": 0.0015},
        {**common, "method": "knn_gpu fitted [cupy]", "backend": "cupy", "seconds_min": 9.0},  # not what is traced
        {**common, "method": "knn_gpu [torch]", "backend": "torch", "seconds_min": 9.0, "out_of_core": True},
        {**common, "method": "peer", "backend": "torch", "seconds_min": None, "error": "OutOfMemoryError"},
    ]
    measured = tmp_path / "bench_gpu.json"
    measured.write_text(json.dumps(records))
    assert model.load_measured(measured) == {
        (200, 5000, 16, 10): {"peer": 0.001, "floor": 0.0002, "functional": 0.003, "fitted": 0.0015}
    }
