"""The data's device: working under it, how much memory it has free, what it computes fast.

A search runs *under the device of its data*: CuPy creation functions ignore
``device=`` (array-api-compat passes it to nothing) and ``memGetInfo`` reads
the *current* device, so on a machine with two GPUs a search of data on the
second one must make it current, as must torch's allocator queries. These
helpers never import CuPy or torch to ask a question: they look at the
namespace first, as array-api-compat does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = ["is_gpu", "device_scope", "free_device_bytes", "synchronize", "read_counts", "read_number"]


def is_gpu(xp: ModuleType, device: Any) -> bool:
    """True for CuPy arrays and torch tensors on CUDA (or another accelerator)."""
    if array_api_compat.is_cupy_namespace(xp):
        return True
    if array_api_compat.is_torch_namespace(xp):
        return getattr(device, "type", "cpu") not in ("cpu", "meta")
    return False


@contextlib.contextmanager
def device_scope(xp: ModuleType, device: Any) -> Iterator[None]:
    """Make ``device`` the current device for the duration (CuPy, torch on CUDA); else nothing."""
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        with cupy.cuda.Device(getattr(device, "id", device)):
            yield
        return
    if array_api_compat.is_torch_namespace(xp) and getattr(device, "type", "cpu") == "cuda":
        import torch

        with torch.cuda.device(device):
            yield
        return
    yield


def free_device_bytes(xp: ModuleType, device: Any) -> int | None:
    """Bytes a search may still allocate on ``device``: free memory plus what the library's pool holds unused.

    ``None`` for host memory (the caller then uses a fixed budget). Call it
    under :func:`device_scope`: both libraries report the current device.
    """
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        free_bytes, _ = cupy.cuda.runtime.memGetInfo()
        return int(free_bytes) + int(cupy.get_default_memory_pool().free_bytes())
    if is_gpu(xp, device) and getattr(device, "type", None) == "cuda":
        import torch

        free_bytes, _ = torch.cuda.mem_get_info()
        pooled = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        return int(free_bytes) + max(0, int(pooled))
    return None


def synchronize(array: Any) -> None:
    """Wait until the device holding ``array`` has finished its queued work.

    CuPy and torch on CUDA return before the GPU is done; a clock read
    without this measures the launch, not the work. A no-op for host arrays
    and ``None``. The array is inspected, never converted.
    """
    if array is None:
        return
    if array_api_compat.is_cupy_array(array):
        array.device.synchronize()
    elif array_api_compat.is_torch_array(array) and array.device.type == "cuda":
        import torch

        torch.cuda.synchronize(array.device)


def read_counts(counts: Any, *, xp: ModuleType) -> list[int]:
    """Integer counts on the data's device as Python ints (flattened): the searches' deliberate host reads.

    One explicit copy per call: CuPy ``get()``, torch ``cpu()``, other
    namespaces ``to_device`` to their default (host) device, read through
    DLPack. It waits for
    the device to finish the work queued so far (a synchronisation): the
    radius search calls it once per batch and once at the end, the k-search
    once per search (its count of uncertified queries).
    """
    if array_api_compat.is_torch_namespace(xp):  # the copy here, so that a sync guard sees this site
        return [int(count) for count in xp.reshape(counts, (-1,)).cpu().tolist()]
    return [int(count) for count in _host_values(counts, xp=xp)]


def read_number(value: Any, *, xp: ModuleType) -> float:
    """A 0-d floating array on the data's device as a Python float: a deliberate host read, as :func:`read_counts`.

    The index build reads one: the training rows' largest squared norm, which
    says whether the ranking keys need scaling by a power of two.
    """
    if array_api_compat.is_torch_namespace(xp):  # the copy here, so that a sync guard sees this site
        (number,) = xp.reshape(value, (-1,)).cpu().tolist()  # tolist: no second read (item) of the copy
        return float(number)
    (number,) = _host_values(value, xp=xp)
    return float(number)


def _host_values(values: Any, *, xp: ModuleType) -> list:
    """``values`` flattened into a list of Python numbers, by one explicit copy to the host (not torch)."""
    values = xp.reshape(values, (-1,))
    if array_api_compat.is_numpy_namespace(xp):
        return values.tolist()
    if array_api_compat.is_cupy_namespace(xp):
        return values.get().tolist()
    host = array_api_compat.to_device(values, xp.__array_namespace_info__().default_device())
    # Read through DLPack, an explicit copy, rather than int() or float() on each element (implicit conversions).
    return np.from_dlpack(host).tolist()
