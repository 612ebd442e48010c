"""Which array libraries can run the search here, and moving arrays between them.

Every array that enters knn_gpu keeps its namespace and device; these helpers
are the only places where data crosses from one library to another, and each
crossing is explicit (the caller asked for another backend, or for results in
the namespace of its queries).
"""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "BACKENDS",
    "available_backends",
    "cupy_gpu_status",
    "namespace_of_backend",
    "to_backend",
    "to_host",
    "convert_like",
]

#: Backend names accepted by ``backend=`` (besides ``None`` and ``"auto"``).
BACKENDS = ("numpy", "cupy", "torch", "array_api_strict")


@functools.lru_cache(maxsize=1)
def cupy_gpu_status() -> tuple[bool, str]:
    """Say whether CuPy can run on a GPU now, and if not, why.

    Importing CuPy proves nothing: it imports on machines with no GPU or with a
    driver too old for its CUDA runtime. Only a device query tells, and that
    query raises rather than returning 0 on such machines.

    Returns
    -------
    usable : bool
        True when CuPy imports and at least one CUDA device answers.
    reason : str
        Empty when usable; otherwise what CuPy reported.
    """
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return False, "CuPy found no CUDA device"
        cupy.zeros(1)  # a driver too old for the runtime fails here at the latest
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, ...
        return False, f"CuPy cannot use a GPU ({type(exc).__name__}: {exc})"
    return True, ""


def available_backends() -> list[str]:
    """Names of the backends usable on this machine right now.

    ``"numpy"`` is always first. ``"cupy"`` is listed only when a GPU is
    usable; ``"torch"`` and ``"array_api_strict"`` when they are installed
    (they are found without being imported).

    Returns
    -------
    list of str

    Examples
    --------
    >>> import knn_gpu
    >>> knn_gpu.available_backends()[0]
    'numpy'
    """
    names = ["numpy"]
    if cupy_gpu_status()[0]:
        names.append("cupy")
    for optional in ("torch", "array_api_strict"):
        if importlib.util.find_spec(optional) is not None:
            names.append(optional)
    return names


def _import_backend(name: str) -> ModuleType:
    """Import the library behind backend ``name``, with a clear error."""
    if name == "cupy":
        usable, reason = cupy_gpu_status()
        if not usable:
            msg = (
                f"backend='cupy' needs a usable CUDA GPU, but {reason}. "
                "Use backend='auto' to fall back to NumPy silently, or "
                "install a CuPy build matching your driver (knn-gpu[cuda12] "
                "or knn-gpu[cuda13])."
            )
            raise RuntimeError(msg)
        import cupy

        return cupy
    if name == "numpy":
        return np
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = f"backend={name!r} needs the {name!r} package, which is not installed"
        raise RuntimeError(msg) from exc


def namespace_of_backend(name: str) -> ModuleType:
    """Array API namespace of backend ``name`` (``"numpy"``, ``"cupy"``, ...)."""
    library = _import_backend(name)
    return array_api_compat.array_namespace(library.asarray([0.0]))


def to_host(x: Any) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array on the host.

    This is an explicit device-to-host copy; knn_gpu calls it only where the
    caller asked for NumPy results or for host-side data (string labels).
    """
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_dask_array(x):
        return to_host(x.compute())
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        import array_api_strict

        cpu = array_api_strict.__array_namespace_info__().default_device()
        return np.asarray(array_api_compat.to_device(x, cpu))
    try:
        return np.from_dlpack(x)
    except Exception as exc:
        msg = f"cannot copy an array of type {type(x).__name__} to NumPy: {exc}"
        raise TypeError(msg) from exc


def to_backend(x: Any, name: str) -> Any:
    """Move array ``x`` to backend ``name`` (a no-op when it is already there)."""
    xp = namespace_of_backend(name)
    if array_api_compat.array_namespace(x) is xp:
        return x
    return xp.asarray(to_host(x))


def convert_like(x: Any, like: Any) -> Any:
    """Return ``x`` in the namespace and on the device of array ``like``.

    Within one namespace this is ``to_device``; across namespaces the data
    goes through the host, once.

    Raises
    ------
    TypeError
        When ``x`` cannot be converted (an unsupported array type).
    """
    xp_like = array_api_compat.array_namespace(like)
    device_like = array_api_compat.device(like)
    xp_x = array_api_compat.array_namespace(x)
    if xp_x is xp_like:
        if array_api_compat.device(x) == device_like:
            return x
        return array_api_compat.to_device(x, device_like)
    host = to_host(x)
    if array_api_compat.is_numpy_namespace(xp_like):
        return host
    return xp_like.asarray(host, device=device_like)
