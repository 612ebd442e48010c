"""Backend fixture: every test that takes ``backend`` runs once per library.

Ids are the backend names, so ``-k "cupy or torch-cuda"`` selects exactly the
runs on a real GPU (CuPy, torch on CUDA; each skipped with its reason where
unusable) and ``-k device1`` the strict namespace's non-default device, which
refuses implicit host copies and device mixing as CuPy does. Every run on a
real GPU also carries the ``gpu`` marker (``-m gpu``). ``-k "cupy or cuda"``
selects those runs and, besides, tests named after CUDA or CuPy that run on the
CPU (the fake CUDA device of ``fake_cuda.py``, CuPy-less fallbacks).

With the environment variable ``KNN_GPU_SYNC_DEBUG=error`` (or ``warn``), the
torch-cuda runs call every k-search's batch loop (``search_batches``; the search's
one deliberate read, its count of uncertified queries, comes after it) under
``torch.cuda.set_sync_debug_mode``: a batch loop that waits on the host fails.
Only the search is guarded: building the index (a host-to-device copy of the
block layout), radius searches (their result sizes live on the device) and the
tests' own checks (which copy results to the host) legitimately synchronise.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pytest

from knn_gpu._lib.backends import cupy_gpu_status, to_host, torch_cuda_probe


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any
    device: Any

    @property
    def option(self) -> str:
        """What knn_gpu's ``backend=`` argument calls this backend (``"torch:cuda:0"`` for ``torch-cuda``)."""
        if self.name == "torch-cuda":
            return f"torch:cuda:{self.device.index}"
        return self.name

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
    if name == "torch-cuda":
        import torch

        xp = array_api_compat.array_namespace(torch.empty(0))
        return Backend(name, xp, torch.device("cuda", 0))
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
    if name == "torch-cuda":
        usable, reason = torch_cuda_probe()
        if not usable:
            return f"no usable GPU for torch: {reason}"
    if name == "cupy":
        usable, reason = cupy_gpu_status()
        if not usable:
            return f"no usable GPU for CuPy: {reason}"
    return None


BACKEND_NAMES = ("numpy", "array_api_strict", "array_api_strict-device1", "torch", "torch-cuda", "cupy")

#: The backends on a real GPU: their runs carry the ``gpu`` marker.
GPU_BACKEND_NAMES = ("torch-cuda", "cupy")

#: ``KNN_GPU_SYNC_DEBUG``'s values: torch.cuda.set_sync_debug_mode's modes.
SYNC_DEBUG_MODES = ("warn", "error")

#: The fake CUDA device is a torch module: without torch, pytest's doctest
#: collection must not import it (its tests skip on their own).
collect_ignore = [] if importlib.util.find_spec("torch") is not None else ["fake_cuda.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: runs on a real GPU (the cupy and torch-cuda backends)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend") if callspec is not None else None
        if name is not None:
            item.user_properties.append(("backend", name))  # in --junitxml: tests per backend, exactly
        if name in GPU_BACKEND_NAMES:
            item.add_marker(pytest.mark.gpu)


def sync_debug_mode() -> str | None:
    """The mode asked for by ``KNN_GPU_SYNC_DEBUG`` (None when unset, empty or ``"0"``)."""
    mode = os.environ.get("KNN_GPU_SYNC_DEBUG", "").strip().lower()
    if mode in ("", "0", "off", "default"):
        return None
    if mode not in SYNC_DEBUG_MODES:
        msg = f"KNN_GPU_SYNC_DEBUG must be one of {', '.join(SYNC_DEBUG_MODES)} (or unset), got {mode!r}"
        raise pytest.UsageError(msg)
    return mode


def without_host_syncs(search: Callable, mode: str, cuda: Any) -> Callable:
    """``search`` run under ``cuda.set_sync_debug_mode(mode)``, the previous mode restored after it.

    Work queued before the call is finished first, so that only the search's
    own synchronisations count.
    """

    @functools.wraps(search)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        cuda.synchronize()
        previous = cuda.get_sync_debug_mode()
        cuda.set_sync_debug_mode(mode)
        try:
            return search(*args, **kwargs)
        finally:
            cuda.set_sync_debug_mode(previous)

    guarded.sync_guarded = True
    return guarded


def guard_searches(monkeypatch: pytest.MonkeyPatch, mode: str, cuda: Any) -> int:
    """Replace ``search_batches`` wherever a knn_gpu module holds it by its guarded form; return how many."""
    from knn_gpu._engine import search as search_module

    original = search_module.search_batches
    guarded = without_host_syncs(original, mode, cuda)
    patched = 0
    for name, module in list(sys.modules.items()):
        if (name == "knn_gpu" or name.startswith("knn_gpu.")) and getattr(module, "search_batches", None) is original:
            monkeypatch.setattr(module, "search_batches", guarded)
            patched += 1
    return patched


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    chosen = _make_backend(request.param)
    mode = sync_debug_mode()
    if mode is not None and chosen.name == "torch-cuda":
        import torch

        guard_searches(request.getfixturevalue("monkeypatch"), mode, torch.cuda)
    return chosen


@pytest.fixture
def numpy_backend() -> Backend:
    return _make_backend("numpy")
