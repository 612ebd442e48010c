"""Backend choice: CPU fallback with CuPy installed but no GPU, and clear errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import knn_gpu
from knn_gpu import KNN
from knn_gpu._lib.backends import cupy_gpu_status

HAS_CUPY = importlib.util.find_spec("cupy") is not None
GPU_USABLE = cupy_gpu_status()[0]


def test_numpy_is_always_available():
    names = knn_gpu.available_backends()
    assert names[0] == "numpy"
    assert ("cupy" in names) == GPU_USABLE


def test_import_does_not_import_heavy_optional_libraries():
    code = "import sys, knn_gpu; print(sorted(m for m in ('cupy', 'torch', 'dask', 'sklearn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(GPU_USABLE, reason="a GPU is usable here: the fallback path is not taken")
def test_auto_falls_back_to_numpy_without_gpu():
    X = np.arange(12.0).reshape(6, 2)
    model = KNN(2, backend="auto").fit(X, np.arange(6.0))
    assert type(model.predict(X)) is np.ndarray
    assert model._index.xp.__name__.endswith("numpy")


@pytest.mark.skipif(GPU_USABLE, reason="a GPU is usable here")
def test_cupy_backend_without_gpu_raises_clearly():
    with pytest.raises(RuntimeError, match="backend='cupy' needs a usable CUDA GPU") as info:
        KNN(2, backend="cupy").fit(np.ones((3, 2)), np.ones(3))
    if HAS_CUPY:
        assert "CuPy cannot use a GPU" in str(info.value) or "no CUDA device" in str(info.value)
    else:
        assert "not importable" in str(info.value)


@pytest.mark.skipif(not HAS_CUPY, reason="CuPy is not installed")
def test_cupy_imports_without_gpu():
    import cupy  # noqa: F401  (importing must work even where no GPU is usable)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict", "torch"])
def test_named_backend_moves_training_data(name):
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    X = np.arange(20.0).reshape(10, 2)
    model = KNN(3, backend=name).fit(X, np.arange(10.0))
    assert name in model._index.xp.__name__
    predicted = model.predict(X[:3])
    assert type(predicted) is np.ndarray  # back in the query's namespace
    np.testing.assert_allclose(predicted, KNN(3).fit(X, np.arange(10.0)).predict(X[:3]))


def test_cli_demo_runs_in_process_and_as_module(capsys):
    from knn_gpu.cli.main import main

    assert main(["demo"]) == 0
    output = capsys.readouterr().out
    assert "backend: numpy" in output or "backend: cupy" in output
    assert output.count("predicted") == 4
    result = subprocess.run([sys.executable, "-m", "knn_gpu", "demo"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.count("predicted") == 4
