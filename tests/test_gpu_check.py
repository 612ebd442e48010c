"""The GPU check (benchmarks/gpu_check.sh) runs on the CPU: its dry run, the benchmark's smoke test, its helpers.

Nothing here needs a GPU; what a GPU adds (the torch-cuda and CuPy runs, the
sync-debug guard on real CUDA) is exercised by gpu_check.sh where one is lent.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

import knn_gpu
from knn_gpu._engine import search as engine_search

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_prints_every_step_and_imports_the_python_parts(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("environment", "selftest", "gpu-tests", "gpu-tests-summary", "benchmark"):
        assert any(line.startswith(f"(dry run) step {name}, timeout") for line in lines), name
    assert "(dry run) nvidia-smi -L" in lines
    assert any("-m knn_gpu selftest --json" in line for line in lines)
    assert any("KNN_GPU_SYNC_DEBUG=error" in line and "cupy\\ or\\ cuda" in line for line in lines)
    assert any("bench_gpu.py --out" in line and "--deadline" in line for line in lines)
    assert "imported knn_gpu.cli.selftest" in lines and "imported gpu_tests_summary" in lines
    bench = _load("bench_gpu")
    for shape in bench.SHAPES:  # the benchmark's plan, printed by its own --dry-run
        assert any(line.strip().startswith(shape["name"] + ":") for line in lines), shape["name"]
    assert not (tmp_path / "selftest.json").exists()  # nothing ran


def test_the_timeouts_fit_the_eight_minute_budget():
    text = SCRIPT.read_text()
    seconds = [int(part.split()[1]) for part in text.split("\nstep ")[1:]]
    assert len(seconds) == 5 and sum(seconds) <= 8 * 60
    bench = _load("bench_gpu")
    assert max(bench.estimate_seconds(shape) for shape in bench.SHAPES) < 1.0  # each call well inside its cap


def test_benchmark_smoke_on_the_cpu(tmp_path):
    bench = _load("bench_gpu")
    shapes = "2,3"  # the latency shape and the out-of-core one (the streamed peer, knn_gpu streaming)
    code = bench.main(
        ["--quick", "--shapes", shapes, "--repeats", "1", "--seconds-per-method", "0.05", "--out", str(tmp_path)]
    )
    assert code == 0
    records = json.loads((tmp_path / "bench_gpu.json").read_text())
    methods = {(r["shape"], r["method"]) for r in records}
    latency, streamed = bench.QUICK_SHAPES[2]["name"], bench.QUICK_SHAPES[3]["name"]
    assert {(latency, m) for m in ("peer", "floor", "knn_gpu [torch]", "knn_gpu fitted [torch]")} <= methods
    assert {(streamed, m) for m in ("peer", "floor", "knn_gpu [torch]")} <= methods
    for record in records:
        assert record["gpu"] and record["error"] == "" and record["seconds_min"] > 0 and record["repeats"] >= 1
        assert {"n_query", "n_train", "dim", "k", "backend", "seconds_median", "ratio_to_peer"} <= set(record)
        if record["method"] != "floor":  # every search finds the same neighbours as the peer (no ties in N(0,1) data)
            assert record["agreement_with_peer"] == 1.0, record
    streamed_record = next(r for r in records if r["shape"] == streamed and r["method"] == "knn_gpu [torch]")
    assert streamed_record["out_of_core"] and streamed_record["memory_budget"] == bench.QUICK_SHAPES[3]["out_of_core"]
    table = (tmp_path / "bench_gpu.md").read_text()
    assert table.startswith("GPU: CPU") and "| knn_gpu fitted [torch] |" in table


def test_the_streamed_peer_is_exact_with_chunks_smaller_than_k():
    torch = pytest.importorskip("torch")
    bench = _load("bench_gpu")
    generator = torch.Generator().manual_seed(3)
    train, queries = torch.randn((500, 8), generator=generator), torch.randn((37, 8), generator=generator)
    expected = bench.peer(queries, train, 20, batch_rows=37)()
    assert torch.equal(bench.streamed_peer(queries, train, 20, batch_rows=10, chunk_rows=7)(), expected)
    distances = torch.cdist(queries.double(), train.double())
    assert torch.equal(expected, torch.topk(distances, 20, largest=False).indices)


def test_tests_per_backend_from_junit(tmp_path):
    summary = _load("gpu_tests_summary")
    xml = tmp_path / "tests.xml"
    xml.write_text(
        """<testsuites><testsuite>
        <testcase classname="tests.test_kneighbors" name="test_a[euclidean-torch-cuda]"/>
        <testcase classname="tests.test_kneighbors" name="test_a[cupy]"><skipped message="no usable GPU for CuPy"/></testcase>
        <testcase classname="tests.test_kneighbors" name="test_b[cupy-7]"><failure message="wrong"/></testcase>
        <testcase classname="tests.test_fake_cuda" name="test_fake"/>
        <testcase classname="tests.test_info" name="test_cupy_not_installed"/>
        <testcase classname="tests.test_out_of_memory" name="test_k[euclidean-cupy-numpy]">
          <properties><property name="backend" value="numpy"/></properties></testcase>
        <testcase classname="tests.test_out_of_memory" name="test_k[euclidean-torch-torch-cuda]">
          <properties><property name="backend" value="torch-cuda"/></properties></testcase>
        </testsuite></testsuites>"""
    )
    counts, reasons = summary.summarize(xml)
    assert counts["torch-cuda"]["passed"] == 2
    assert counts["cupy"]["skipped"] == 1 and counts["cupy"]["failed"] == 1
    assert counts["other (CPU)"]["passed"] == 3  # the fake-CUDA test, the CuPy-named one, numpy with a CuPy parameter
    assert reasons == {("cupy", "no usable GPU for CuPy"): 1}
    assert "| cupy | 0 | 1 | 0 | 1 |" in summary.markdown(counts, reasons)


def test_the_fixture_records_each_runs_backend_for_junit(tmp_path):
    xml = tmp_path / "tests.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(xml),
         "tests/test_kneighbors.py", "-k", "test_all_training_rows_identical"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    counts, _ = _load("gpu_tests_summary").summarize(xml)
    assert counts["cupy"]["skipped"] == counts["torch-cuda"]["skipped"] == 1
    assert counts["other (CPU)"]["passed"] == len(conftest.BACKEND_NAMES) - 2


def test_tests_per_backend_from_the_verbose_log_when_pytest_timed_out(tmp_path):
    summary = _load("gpu_tests_summary")
    log = tmp_path / "gpu-tests.log"
    log.write_text(
        "tests/test_kneighbors.py::test_a[euclidean-torch-cuda] PASSED                  [  1%]\n"
        "tests/test_kneighbors.py::test_a[cupy] SKIPPED (no usable GPU for CuPy: ...)   [  2%]\n"
        "tests/test_fake_cuda.py::test_fake FAILED                                      [  3%]\n"
        "some other output\n"
    )
    out = tmp_path / "summary.md"
    assert summary.main([str(tmp_path / "missing.xml"), "--log", str(log), "--out", str(out)]) == 0
    text = out.read_text()
    assert "pytest did not finish" in text
    assert "| torch-cuda | 1 | 0 | 0 | 0 |" in text and "| cupy | 0 | 0 | 0 | 1 |" in text
    assert "| other (CPU) | 0 | 1 | 0 | 0 |" in text


class _RecordingCuda:
    """Stands for ``torch.cuda``: records synchronize and the sync-debug modes set."""

    def __init__(self):
        self.mode = 0
        self.events = []

    def synchronize(self, device=None):
        self.events.append("synchronize")

    def get_sync_debug_mode(self):
        return self.mode

    def set_sync_debug_mode(self, mode):
        self.mode = mode
        self.events.append(("mode", mode))


def test_sync_guard_wraps_every_search_and_restores_the_mode(monkeypatch):
    cuda = _RecordingCuda()
    seen_modes = []
    original = engine_search.search_batches

    def observed(*args, **kwargs):
        seen_modes.append(cuda.mode)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_search, "search_batches", observed)
    patched = conftest.guard_searches(monkeypatch, "error", cuda)
    assert patched == 1  # the batch loop of every k-search (functions, estimators, streamed and Dask chunks)
    knn_gpu.kneighbors([[0.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]], 1)
    assert seen_modes == ["error"] and cuda.mode == 0  # the batches ran guarded; the mode is restored after
    assert cuda.events == ["synchronize", ("mode", "error"), ("mode", 0)]


def test_sync_guard_restores_the_mode_when_the_search_raises():
    cuda = _RecordingCuda()

    def failing():
        raise RuntimeError("called a synchronizing operation")

    guarded = conftest.without_host_syncs(failing, "error", cuda)
    with pytest.raises(RuntimeError, match="synchronizing"):
        guarded()
    assert cuda.mode == 0


def test_sync_debug_variable(monkeypatch):
    monkeypatch.delenv("KNN_GPU_SYNC_DEBUG", raising=False)
    assert conftest.sync_debug_mode() is None
    monkeypatch.setenv("KNN_GPU_SYNC_DEBUG", "Error")
    assert conftest.sync_debug_mode() == "error"
    monkeypatch.setenv("KNN_GPU_SYNC_DEBUG", "loud")
    with pytest.raises(pytest.UsageError, match="KNN_GPU_SYNC_DEBUG must be one of warn, error"):
        conftest.sync_debug_mode()


def test_torch_cuda_backend_is_named_for_knn_gpu_and_skips_with_torchs_reason():
    torch = pytest.importorskip("torch")
    assert "torch-cuda" in conftest.BACKEND_NAMES and set(conftest.GPU_BACKEND_NAMES) == {"torch-cuda", "cupy"}
    backend = conftest._make_backend("torch-cuda")
    assert backend.device == torch.device("cuda", 0) and backend.option == "torch:cuda:0"
    assert conftest._make_backend("torch").option == "torch"
    usable, reason = knn_gpu._lib.backends.torch_cuda_probe()
    assert conftest._skip_reason("torch-cuda") == (None if usable else f"no usable GPU for torch: {reason}")


def test_gpu_marker_selects_exactly_the_gpu_backend_runs():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--co",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "gpu",
            "tests/test_kneighbors.py",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert ids and all("torch-cuda" in line or "cupy" in line for line in ids)
    everything = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "tests/test_kneighbors.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    ).stdout.splitlines()
    on_gpu = [
        line
        for line in everything
        if "::" in line and ("-torch-cuda" in line or "[torch-cuda" in line or "cupy" in line)
    ]
    assert sorted(ids) == sorted(on_gpu)
