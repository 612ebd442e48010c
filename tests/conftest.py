"""Backend fixture: every test that takes ``backend`` runs once per library.

Ids are the backend names, so ``-k cupy`` selects the GPU runs and
``-k device1`` the strict namespace's non-default device, which refuses
implicit host copies and device mixing as CuPy does.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pytest

from knn_gpu._lib.backends import cupy_gpu_status, to_host


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any
    device: Any

    def asarray(self, values: Any) -> Any:
        """A host array (or list) placed on this backend and device."""
        return self.xp.asarray(np.asarray(values), device=self.device)

    @staticmethod
    def to_numpy(array: Any) -> np.ndarray:
        return to_host(array)

    def has_float64(self) -> bool:
        return "float64" in self.xp.__array_namespace_info__().dtypes(device=self.device)

    def check(self, array: Any, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        """Assert namespace, device, shape (and dtype) of a result; return it on the host."""
        assert array_api_compat.array_namespace(array) is self.xp, type(array)
        assert array_api_compat.device(array) == self.device
        assert tuple(array.shape) == shape
        if dtype is not None:
            assert array.dtype == dtype, (array.dtype, dtype)
        return self.to_numpy(array)


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        xp = array_api_compat.array_namespace(np.empty(0))
        return Backend(name, xp, "cpu")
    if name.startswith("array_api_strict"):
        import array_api_strict as xp

        device_name = "device1" if name.endswith("device1") else "CPU_DEVICE"
        return Backend(name, xp, xp.Device(device_name))
    if name == "torch":
        import torch

        xp = array_api_compat.array_namespace(torch.empty(0))
        return Backend(name, xp, torch.device("cpu"))
    if name == "cupy":
        import cupy

        xp = array_api_compat.array_namespace(cupy.empty(0))
        return Backend(name, xp, cupy.cuda.Device(0))
    raise ValueError(name)


def _skip_reason(name: str) -> str | None:
    if name == "torch" and importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if name.startswith("array_api_strict") and importlib.util.find_spec("array_api_strict") is None:
        return "array_api_strict is not installed"
    if name == "cupy":
        usable, reason = cupy_gpu_status()
        if not usable:
            return f"no usable GPU for CuPy: {reason}"
    return None


BACKEND_NAMES = ("numpy", "array_api_strict", "array_api_strict-device1", "torch", "cupy")

#: The fake CUDA device is a torch module: without torch, pytest's doctest
#: collection must not import it (its tests skip on their own).
collect_ignore = [] if importlib.util.find_spec("torch") is not None else ["fake_cuda.py"]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return _make_backend(request.param)


@pytest.fixture
def numpy_backend() -> Backend:
    return _make_backend("numpy")
