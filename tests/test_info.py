"""``knn-gpu info`` / ``knn_gpu.show_config()``: a diagnosis that reports every backend and never crashes."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

import knn_gpu
from knn_gpu._lib import backends
from knn_gpu.cli import info
from knn_gpu.cli.main import main

HAS_CUPY = importlib.util.find_spec("cupy") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
BACKEND_ROWS = [
    ("numpy", "cpu"),
    ("cupy", "cuda"),
    ("torch", "cpu"),
    ("torch", "cuda"),
    ("array_api_strict", "CPU_DEVICE"),
    ("dask", "cpu"),
]


@pytest.fixture
def fresh_cupy_status():
    """Forget the cached CuPy answer before and after a test that fakes CuPy's import."""
    backends.cupy_gpu_status.cache_clear()
    yield
    backends.cupy_gpu_status.cache_clear()


def _status_of(backend: str, device: str) -> dict:
    """What the probe of one backend reports (the probe alone: the others are slow)."""
    return next(probe for b, d, probe in info.PROBES if (b, d) == (backend, device))()


def test_config_info_has_every_key_and_numpy_is_usable():
    report = knn_gpu.config_info()
    assert set(report) == {"versions", "location", "blas", "backends", "gpus", "gpu_note"}
    expected_versions = {"knn_gpu", "python", "platform", *info.REQUIRED_LIBRARIES, *info.OPTIONAL_LIBRARIES}
    assert set(report["versions"]) == expected_versions
    assert report["versions"]["knn_gpu"] == knn_gpu.__version__
    for label in info.REQUIRED_LIBRARIES:
        assert report["versions"][label], label
    assert [(s["backend"], s["device"]) for s in report["backends"]] == BACKEND_ROWS
    for status in report["backends"]:
        assert set(status) == {"backend", "device", "usable", "reason", "fix"}
        if not status["usable"]:  # every "no" comes with a why and a what-to-do
            assert status["reason"] and status["fix"], status
    assert report["backends"][0]["usable"] is True
    assert any(pool["internal_api"] for pool in report["blas"])  # NumPy's BLAS at least
    assert bool(report["gpus"]) != bool(report["gpu_note"])


@pytest.mark.skipif(not HAS_CUPY, reason="CuPy is not installed")
def test_cupy_status_on_this_machine_matches_cupy_gpu_status():
    usable, reason = backends.cupy_gpu_status()
    status = _status_of("cupy", "cuda")
    assert status["usable"] is usable
    if usable:
        assert info.gpu_devices()[0][0]["source"] == "cupy"
    else:
        assert status["reason"].startswith(reason)  # CuPy's own words first, then the diagnosis
        assert "pip install" in status["fix"] or "driver" in status["fix"]


def test_text_output_renders_every_section(capsys):
    buffer = io.StringIO()
    knn_gpu.show_config(file=buffer)
    text = buffer.getvalue()
    for heading in ("versions", "BLAS (threadpoolctl)", "backends", "GPUs"):
        assert f"\n{heading}\n" in text
    for backend, device in BACKEND_ROWS:
        assert any(line.split()[:2] == [backend, device] for line in text.splitlines() if line.strip()), backend
    assert main(["info"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"knn_gpu {knn_gpu.__version__} at ")
    assert "\nbackends\n" in printed


def test_json_output_is_valid_json(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backends"][0] == {"backend": "numpy", "device": "cpu", "usable": True, "reason": "", "fix": ""}


def test_console_command_exits_0_even_with_unusable_backends():
    result = subprocess.run([sys.executable, "-m", "knn_gpu", "info", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["versions"]["numpy"]


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_cpu_build_is_named_with_its_fix(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    status = _status_of("torch", "cuda")
    assert status["usable"] is False
    assert "CPU-only build" in status["reason"] and "torch.version.cuda is None" in status["reason"]
    assert "install a CUDA build of torch" in status["fix"]
    assert _status_of("torch", "cpu")["usable"] is True


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_cuda_build_without_device_reports_torchs_warning(monkeypatch):
    import torch

    def unavailable():
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old", UserWarning, stacklevel=2)
        return False

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    status = _status_of("torch", "cuda")
    assert status["usable"] is False
    assert "built for CUDA 12.8" in status["reason"]
    assert "The NVIDIA driver on your system is too old" in status["reason"]
    assert "update the NVIDIA driver to one supporting CUDA 12.8" in status["fix"]


def test_torch_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # find_spec and import both see "no torch"
    for device in ("cpu", "cuda"):
        status = _status_of("torch", device)
        assert status["usable"] is False
        assert status["reason"] == "torch is not installed"
        assert "pip install torch" in status["fix"]
    assert info.library_versions()["torch"] is None


def test_cupy_not_installed(monkeypatch, fresh_cupy_status):
    monkeypatch.setitem(sys.modules, "cupy", None)
    status = _status_of("cupy", "cuda")
    assert status == {
        "backend": "cupy",
        "device": "cuda",
        "usable": False,
        "reason": "CuPy is not installed",
        "fix": info.CUPY_INSTALL_FIX,
    }
    assert 'pip install "knn-gpu[cuda12]"' in status["fix"] and "knn-gpu[cuda13]" in status["fix"]


def test_cupy_import_failure_asks_for_one_clean_cupy(monkeypatch, fresh_cupy_status):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(info, "_is_installed", lambda module: True)  # ... although a CuPy is installed
    status = _status_of("cupy", "cuda")
    assert status["usable"] is False
    assert status["reason"].startswith("CuPy is not importable (ModuleNotFoundError: import of cupy halted")
    assert status["fix"] == info.CUPY_REINSTALL_FIX


@pytest.mark.parametrize(
    ("cupy_reason", "driver_detail", "expected_cause", "expected_fix"),
    [
        (
            "CuPy cannot use a GPU (CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver version is "
            "insufficient for CUDA runtime version)",
            ("the driver supports CUDA 11.8, CuPy's runtime is CUDA 12.9", False),
            "the driver is too old for this CuPy's CUDA runtime",
            info.CUPY_DRIVER_FIX,
        ),
        (
            "CuPy cannot use a GPU (CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver version is "
            "insufficient for CUDA runtime version)",
            ("no NVIDIA driver is loaded (CuPy's CUDA runtime is 12.9)", True),
            "there is no NVIDIA GPU here, or its driver is not installed",
            info.NO_DRIVER_FIX,
        ),
        (
            "CuPy found no CUDA device",
            ("the driver supports CUDA 12.9, CuPy's runtime is CUDA 12.9", False),
            "no GPU is visible",
            info.NO_DEVICE_FIX,
        ),
    ],
    ids=["old-driver", "no-driver", "no-device"],
)
def test_cupy_driver_problems_are_told_apart(monkeypatch, cupy_reason, driver_detail, expected_cause, expected_fix):
    monkeypatch.setattr(info, "_is_installed", lambda module: True)
    monkeypatch.setattr(backends, "cupy_gpu_status", lambda: (False, cupy_reason))
    monkeypatch.setattr(info, "_cupy_driver_detail", lambda: driver_detail)
    status = _status_of("cupy", "cuda")
    assert status["reason"].startswith(cupy_reason)
    assert driver_detail[0] in status["reason"] and expected_cause in status["reason"]
    assert status["fix"] == expected_fix


def test_a_probe_that_raises_becomes_a_reason(monkeypatch):
    def broken():
        raise OSError("libcuda.so: cannot open shared object file")

    probes = tuple((b, d, broken if b == "array_api_strict" else probe) for b, d, probe in info.PROBES)
    monkeypatch.setattr(info, "PROBES", probes)
    status = next(s for s in info.backend_status() if s["backend"] == "array_api_strict")
    assert status["usable"] is False
    assert status["reason"] == "the check failed (OSError: libcuda.so: cannot open shared object file)"
    assert status["fix"]
    assert main(["info"]) == 0


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_gpus_listed_from_torch_when_cupy_cannot(monkeypatch):
    import torch

    monkeypatch.setattr(backends, "cupy_gpu_status", lambda: (False, "CuPy is not importable"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda index: SimpleNamespace(name="Fake H100", major=9, minor=0)
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (40 * info.GIB, 80 * info.GIB))
    gpus, note = info.gpu_devices()
    assert note == ""
    assert gpus == [
        {
            "index": 0,
            "name": "Fake H100",
            "compute_capability": "9.0",
            "source": "torch",
            "free_gib": 40.0,
            "total_gib": 80.0,
        }
    ]
    report = {"versions": {"knn_gpu": "0"}, "location": "-", "blas": [], "backends": [], "gpus": gpus, "gpu_note": ""}
    assert "  0: Fake H100, compute capability 9.0, 40.00 GiB free of 80.00 GiB (from torch)" in info.render_config(
        report
    )


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_gpu_listing_failure_becomes_a_note(monkeypatch):
    import torch

    def crash():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(backends, "cupy_gpu_status", lambda: (False, "no"))
    monkeypatch.setattr(torch.cuda, "is_available", crash)
    gpus, note = info.gpu_devices()
    assert gpus == []
    assert "listing GPUs with torch failed (RuntimeError: driver exploded)" in note
