"""Which array libraries can run the search here, and moving arrays between them.

Every array that enters knn_gpu keeps its namespace and device; these helpers
are the only places where data crosses from one library to another, and each
crossing is explicit (the caller asked for another backend, or for results in
the namespace of its queries).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "BACKENDS",
    "available_backends",
    "auto_backend",
    "move_to",
    "cupy_gpu_status",
    "parse_backend",
    "torch_cuda_probe",
    "torch_cuda_status",
    "namespace_of_backend",
    "to_backend",
    "to_host",
    "convert_like",
    "resolve_backend",
    "numpy_views",
    "as_torch_tensors",
]

#: Backend names accepted by ``backend=`` (besides ``None``, ``"auto"`` and
#: ``"torch:cuda:N"`` for the N-th CUDA device). ``"torch"`` is torch on the
#: CPU; ``"torch:cuda"`` torch on the current CUDA device.
BACKENDS = ("numpy", "cupy", "torch", "torch:cuda", "array_api_strict")


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


@functools.lru_cache(maxsize=1)
def torch_cuda_status() -> tuple[bool, str]:
    """:func:`torch_cuda_probe`, asked once per process (the engine's view)."""
    return torch_cuda_probe()


def torch_cuda_probe() -> tuple[bool, str]:
    """Say whether torch can run on a CUDA device now, and if not, why (imports torch if installed).

    The reason quotes what torch warned while answering ``is_available()``
    (it explains driver problems there). ``knn-gpu info`` asks afresh and
    adds the fix.
    """
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    try:
        import torch

        if torch.version.cuda is None:
            return False, f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = bool(torch.cuda.is_available())
        if not available:
            warned = "; ".join(str(warning.message).strip() for warning in caught)
            reason = (
                f"torch is built for CUDA {torch.version.cuda} but torch.cuda.is_available() is False: "
                "no NVIDIA GPU is visible, or the driver is too old for that CUDA version"
            )
            return False, reason + (f" (torch says: {warned})" if warned else "")
    except Exception as exc:  # a broken install
        return False, f"torch cannot use CUDA ({type(exc).__name__}: {exc})"
    return True, ""


def available_backends() -> list[str]:
    """Names of the backends usable on this machine right now.

    ``"numpy"`` is always first. ``"cupy"`` is listed only when a GPU is
    usable; ``"torch"`` and ``"array_api_strict"`` when they are installed
    (found without being imported); ``"torch:cuda"`` when torch also sees a
    CUDA device (which imports torch).

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
            if optional == "torch" and torch_cuda_status()[0]:
                names.append("torch:cuda")
    return names


def auto_backend() -> str:
    """What ``backend="auto"`` picks: CuPy with a usable GPU, else torch on CUDA, else NumPy."""
    if cupy_gpu_status()[0]:
        return "cupy"
    if torch_cuda_status()[0]:
        return "torch:cuda"
    return "numpy"


def parse_backend(name: str) -> tuple[str, Any]:
    """``(library, device)`` of a backend name: ``"torch:cuda:1"`` -> ``("torch", torch.device("cuda", 1))``.

    The device is None where the library's default device is meant.

    Raises
    ------
    ValueError
        For a name that is not a backend.
    """
    if name in ("numpy", "cupy", "torch", "array_api_strict"):
        return name, None
    library, _, device = name.partition(":")
    if library == "torch" and (device == "cuda" or device.startswith("cuda:")):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            msg = f"backend {name!r}: the device index must be a whole number, as in 'torch:cuda:1'"
            raise ValueError(msg)
        usable, reason = torch_cuda_status()
        if not usable:
            msg = (
                f"backend={name!r} needs torch with a usable CUDA device, but {reason}. Use backend='auto' to "
                "fall back silently, or install a CUDA build of torch (knn-gpu info says which)."
            )
            raise RuntimeError(msg)
        import torch

        return "torch", torch.device("cuda", int(index) if index else torch.cuda.current_device())
    msg = f"backend must be None, 'auto' or one of {', '.join(map(repr, BACKENDS))} (or 'torch:cuda:N'); got {name!r}"
    raise ValueError(msg)


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
    library, device = parse_backend(name)
    xp = namespace_of_backend(library)
    if array_api_compat.array_namespace(x) is not xp:
        x = xp.asarray(to_host(x), device=device)
    if device is not None and array_api_compat.device(x) != device:
        x = array_api_compat.to_device(x, device)
    return x


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


def move_to(data: Any, xp: Any, device: Any = None) -> Any:
    """``data`` in namespace ``xp`` (through the host when libraries differ), on ``device`` if given."""
    if array_api_compat.array_namespace(data) is not xp:
        data = xp.asarray(to_host(data), device=device)
    if device is not None and array_api_compat.device(data) != device:
        data = array_api_compat.to_device(data, device)
    return data


def resolve_backend(backend: Any, data: Any) -> tuple[Any, Any]:
    """``(namespace, device)`` the model computes in: ``backend``'s, or if None the data's own.

    The device is None where the namespace's default device (or the data's,
    for ``backend=None``) is meant. Dask arrays stay Dask arrays, whatever
    ``backend``: each chunk is searched in its own library, on its own device.
    """
    if backend is None or array_api_compat.is_dask_array(data):
        return array_api_compat.array_namespace(data), None
    if backend == "auto":
        backend = auto_backend()
    if not isinstance(backend, str):
        msg = f"backend must be None, 'auto' or a backend name such as 'cupy' or 'torch:cuda'; got {backend!r}"
        raise ValueError(msg)
    library, device = parse_backend(backend)
    return namespace_of_backend(library), device


#: dtypes NumPy searches as fast as or faster than torch's CPU kernels, and holds as a zero-copy view.
_VIEWED_DTYPES = ("float16", "float32", "float64")


def numpy_views(*arrays: Any) -> tuple | None:
    """Zero-copy NumPy views of CPU torch tensors, or None where NumPy should not take them.

    NumPy's search (threads over batches, each with a single-threaded BLAS)
    is 1.2 to 3.9 times as fast as torch's CPU kernels on the same tensors
    (``benchmarks/bench_torch_cpu.py``), so the searches compute on views of
    CPU tensors and hand the results back as tensors
    (:func:`as_torch_tensors`). None (torch computes) unless every array is a
    floating CPU tensor NumPy can view as is: no autograd, no
    conjugate or negative bit, no bfloat16 (NumPy has none). Integer and
    bool tensors are refused here; the front door casts them to torch's
    default floating dtype (float32) first, then views them.
    ``build_neighbors_index(..., host_views=True)`` is the one caller: the
    functions and the estimators with ``backend=None`` search through it,
    and ``backend="torch"`` keeps torch's own kernels.
    """
    if not arrays or not all(array_api_compat.is_torch_array(array) for array in arrays):
        return None
    import torch

    views = []
    for array in arrays:
        if array.device.type != "cpu" or array.requires_grad or array.layout != torch.strided:
            return None
        if str(array.dtype).rsplit(".", 1)[-1] not in _VIEWED_DTYPES:
            return None
        try:
            views.append(array.numpy())
        except (RuntimeError, TypeError):  # conjugate or negative bit set, or a tensor subclass NumPy refuses
            return None
    return tuple(views)


def as_torch_tensors(result: Any) -> Any:
    """NumPy arrays (in a tuple, at any depth) as CPU torch tensors, sharing their memory where torch can."""
    if isinstance(result, tuple):
        return tuple(as_torch_tensors(part) for part in result)
    if isinstance(result, np.ndarray):
        import torch

        if not result.flags.writeable or any(stride < 0 for stride in result.strides):
            result = np.array(result)  # torch.from_numpy refuses negative strides and warns on read-only memory
        return torch.from_numpy(result)
    return result
