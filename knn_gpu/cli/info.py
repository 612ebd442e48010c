"""``knn-gpu info``: what this machine offers knn_gpu, and what to do about what is missing.

:func:`config_info` gathers library versions, the BLAS in use, which backend
can run here (with the reason and the fix when one cannot) and the GPUs;
:func:`show_config` prints the same as text. Every probe catches its own
exceptions and turns them into a reason: a diagnosis must not crash on the
machine it is diagnosing. Nothing here is imported by ``import knn_gpu``
except this module, and this module imports the optional libraries only when
called.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .._lib import backends

__all__ = ["config_info", "show_config", "render_config", "gpu_devices", "backend_status", "library_versions"]

#: Libraries knn_gpu depends on: label -> importable module name.
REQUIRED_LIBRARIES = {
    "numpy": "numpy",
    "array-api-compat": "array_api_compat",
    "array-api-extra": "array_api_extra",
    "threadpoolctl": "threadpoolctl",
}
#: Libraries reported when installed: label -> importable module name.
OPTIONAL_LIBRARIES = {
    "cupy": "cupy",
    "torch": "torch",
    "array_api_strict": "array_api_strict",
    "dask": "dask",
    "scikit-learn": "sklearn",
    "faiss": "faiss",
    "pandas": "pandas",
    "scipy": "scipy",
}

CUPY_INSTALL_FIX = (
    'pip install "knn-gpu[cuda12]" (CuPy for a driver that supports CUDA 12) or "knn-gpu[cuda13]" (CUDA 13); '
    "nvidia-smi shows the CUDA version your driver supports"
)
CUPY_REINSTALL_FIX = (
    "reinstall exactly one CuPy build: pip uninstall cupy cupy-cuda12x cupy-cuda13x, then "
    'pip install "knn-gpu[cuda12]" or "knn-gpu[cuda13]" (the CUDA version nvidia-smi shows)'
)
CUPY_DRIVER_FIX = (
    "update the NVIDIA driver, or install the CuPy build for the CUDA version your driver supports "
    '(nvidia-smi shows it): pip install "knn-gpu[cuda12]" (cupy-cuda12x) or "knn-gpu[cuda13]" (cupy-cuda13x)'
)
NO_DRIVER_FIX = (
    "if this machine has an NVIDIA GPU, install its driver (nvidia-smi must then list the GPU); otherwise run on "
    "a machine that has one. Meanwhile backend='auto' uses NumPy"
)
NO_DEVICE_FIX = (
    "check that nvidia-smi lists a GPU and that CUDA_VISIBLE_DEVICES does not hide it; "
    "meanwhile backend='auto' uses NumPy"
)
TORCH_CPU_BUILD_FIX = (
    "install a CUDA build of torch for the CUDA version your driver supports, e.g. "
    "pip install torch --index-url https://download.pytorch.org/whl/cu128 "
    "(see https://pytorch.org/get-started/locally/)"
)
TORCH_INSTALL_FIX = "pip install torch (add a CUDA build for the GPU: https://pytorch.org/get-started/locally/)"
STRICT_INSTALL_FIX = "pip install array-api-strict"
DASK_INSTALL_FIX = 'pip install "knn-gpu[dask]"'
GIB = 2.0**30


def _is_installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def _distributions_by_module() -> dict[str, list[str]]:
    """Importable top-level name -> distributions providing it (one scan of the installed metadata)."""
    try:
        return importlib.metadata.packages_distributions()
    except Exception:
        return {}


def _distribution_version(module: str, label: str) -> str:
    """Version of the distribution(s) providing ``module``, e.g. ``"14.2.0 (cupy-cuda12x)"``.

    Read from the package metadata, so that CuPy or torch need not be imported;
    two distributions for one module (``cupy-cuda12x`` and ``cupy-cuda13x``)
    are both listed, since that is a broken install worth seeing.
    """
    distributions = _distributions_by_module().get(module, [])
    versions = []
    for distribution in dict.fromkeys(distributions):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        plain = distribution.replace("-", "_").lower() == label.replace("-", "_").lower()
        versions.append(version if plain else f"{version} ({distribution})")
    if versions:
        return ", ".join(versions)
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception as exc:
        return f"unknown ({type(exc).__name__}: {exc})"


def library_versions() -> dict[str, str | None]:
    """Versions of knn_gpu, Python, the platform and the libraries around knn_gpu.

    Returns
    -------
    dict
        Label -> version string; ``None`` for an optional library that is
        not installed.

    Examples
    --------
    >>> versions = library_versions()
    >>> versions["numpy"] is not None
    True
    """
    from .._version import __version__

    versions: dict[str, str | None] = {
        "knn_gpu": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
    }
    for label, module in REQUIRED_LIBRARIES.items():
        versions[label] = _distribution_version(module, label) if _is_installed(module) else None
    for label, module in OPTIONAL_LIBRARIES.items():
        versions[label] = _distribution_version(module, label) if _is_installed(module) else None
    return versions


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process, as threadpoolctl sees them.

    NumPy's is always among them (knn_gpu imports NumPy); others appear when
    the caller has imported libraries that bring their own (SciPy, ...).

    Returns
    -------
    list of dict
        ``internal_api`` (openblas, mkl, ...), ``version``, ``num_threads``
        and ``filepath`` of each; empty when threadpoolctl finds none or fails.
    """
    try:
        from threadpoolctl import threadpool_info

        pools = threadpool_info()
    except Exception as exc:
        return [{"internal_api": None, "version": None, "num_threads": None, "error": f"{type(exc).__name__}: {exc}"}]
    return [
        {key: pool.get(key) for key in ("internal_api", "version", "num_threads", "filepath")}
        for pool in pools
        if pool.get("user_api") == "blas"
    ]


def _status(backend: str, device: str, usable: bool, reason: str = "", fix: str = "") -> dict[str, Any]:
    return {"backend": backend, "device": device, "usable": usable, "reason": reason, "fix": fix}


def _probe_numpy() -> dict[str, Any]:
    xp = backends.namespace_of_backend("numpy")
    xp.matmul(xp.ones((2, 2)), xp.ones((2, 2)))
    return _status("numpy", "cpu", True)


def _cuda_version_text(code: int) -> str:
    """CUDA's integer version (12090) as text (12.9)."""
    return f"{code // 1000}.{code % 1000 // 10}"


def _cupy_driver_detail() -> tuple[str, bool]:
    """What CuPy says about its runtime and the driver; True when no driver is loaded at all."""
    import cupy

    runtime = cupy.cuda.runtime.runtimeGetVersion()
    driver = cupy.cuda.runtime.driverGetVersion()
    if driver == 0:
        return f"no NVIDIA driver is loaded (CuPy's CUDA runtime is {_cuda_version_text(runtime)})", True
    return (
        f"the driver supports CUDA {_cuda_version_text(driver)}, CuPy's runtime is CUDA {_cuda_version_text(runtime)}",
        False,
    )


def _probe_cupy() -> dict[str, Any]:
    if not _is_installed("cupy"):
        return _status("cupy", "cuda", False, "CuPy is not installed", CUPY_INSTALL_FIX)
    usable, reason = backends.cupy_gpu_status()
    if usable:
        return _status("cupy", "cuda", True)
    if "not importable" in reason:
        return _status("cupy", "cuda", False, reason, CUPY_REINSTALL_FIX)
    try:
        detail, no_driver = _cupy_driver_detail()
    except Exception as exc:
        detail, no_driver = f"the driver version is unknown ({type(exc).__name__}: {exc})", False
    if no_driver:
        cause = "there is no NVIDIA GPU here, or its driver is not installed"
        return _status("cupy", "cuda", False, f"{reason}; {detail}: {cause}", NO_DRIVER_FIX)
    if "InsufficientDriver" in reason:
        cause = "the driver is too old for this CuPy's CUDA runtime"
        return _status("cupy", "cuda", False, f"{reason}; {detail}: {cause}", CUPY_DRIVER_FIX)
    cause = "the driver answers but no GPU is visible"
    return _status("cupy", "cuda", False, f"{reason}; {detail}: {cause}", NO_DEVICE_FIX)


def _probe_torch_cpu() -> dict[str, Any]:
    if not _is_installed("torch"):
        return _status("torch", "cpu", False, "torch is not installed", TORCH_INSTALL_FIX)
    import torch

    torch.matmul(torch.ones(2, 2), torch.ones(2, 2))
    return _status("torch", "cpu", True)


def _probe_torch_cuda() -> dict[str, Any]:
    if not _is_installed("torch"):
        return _status("torch", "cuda", False, "torch is not installed", TORCH_INSTALL_FIX)
    import torch

    usable, reason = backends.torch_cuda_probe()
    if not usable and torch.version.cuda is None:
        return _status("torch", "cuda", False, reason, TORCH_CPU_BUILD_FIX)
    if not usable:
        fix = (
            f"update the NVIDIA driver to one supporting CUDA {torch.version.cuda}, or install the torch build for "
            "the CUDA version nvidia-smi shows (https://pytorch.org/get-started/locally/); check CUDA_VISIBLE_DEVICES"
        )
        return _status("torch", "cuda", False, reason, fix)
    torch.ones(2, device="cuda").sum().item()  # the context is created here: a broken driver fails now
    return _status("torch", "cuda", True)


def _probe_array_api_strict() -> dict[str, Any]:
    if not _is_installed("array_api_strict"):
        return _status("array_api_strict", "CPU_DEVICE", False, "array_api_strict is not installed", STRICT_INSTALL_FIX)
    xp = backends.namespace_of_backend("array_api_strict")
    xp.matmul(xp.ones((2, 2)), xp.ones((2, 2)))
    return _status("array_api_strict", "CPU_DEVICE", True)


def _probe_dask() -> dict[str, Any]:
    if not _is_installed("dask"):
        return _status("dask", "cpu", False, "Dask is not installed", DASK_INSTALL_FIX)
    try:
        import dask.array
    except ImportError as exc:
        reason = f"dask is installed without its array part ({type(exc).__name__}: {exc})"
        return _status("dask", "cpu", False, reason, DASK_INSTALL_FIX)
    dask.array.ones((2, 2), chunks=1).sum().compute(scheduler="synchronous")
    return _status("dask", "cpu", True)


#: (backend, device, probe) for every backend knn-gpu info reports, in order.
PROBES: tuple[tuple[str, str, Callable[[], dict[str, Any]]], ...] = (
    ("numpy", "cpu", _probe_numpy),
    ("cupy", "cuda", _probe_cupy),
    ("torch", "cpu", _probe_torch_cpu),
    ("torch", "cuda", _probe_torch_cuda),
    ("array_api_strict", "CPU_DEVICE", _probe_array_api_strict),
    ("dask", "cpu", _probe_dask),
)


def backend_status() -> list[dict[str, Any]]:
    """Whether each backend can run here; if not, why and what to do.

    Returns
    -------
    list of dict
        One per backend and device (``torch`` appears for ``cpu`` and for
        ``cuda``), with ``backend``, ``device``, ``usable``, ``reason`` and
        ``fix`` (both empty when usable). A probe that raises is reported as
        not usable with the exception as its reason.

    Examples
    --------
    >>> numpy_status = backend_status()[0]
    >>> numpy_status["backend"], numpy_status["usable"]
    ('numpy', True)
    """
    statuses = []
    for backend, device, probe in PROBES:
        try:
            status = probe()
        except Exception as exc:
            reason = f"the check failed ({type(exc).__name__}: {exc})"
            status = _status(backend, device, False, reason, "see the reason; `knn-gpu info --json` has the details")
        statuses.append(status)
    return statuses


def _cupy_gpus() -> list[dict[str, Any]]:
    import cupy

    gpus = []
    for index in range(cupy.cuda.runtime.getDeviceCount()):
        properties = cupy.cuda.runtime.getDeviceProperties(index)
        name = properties["name"]
        gpu = {
            "index": index,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{properties['major']}.{properties['minor']}",
            "source": "cupy",
        }
        try:
            with cupy.cuda.Device(index):
                free, total = cupy.cuda.runtime.memGetInfo()
            gpu.update(free_gib=round(free / GIB, 2), total_gib=round(total / GIB, 2))
        except Exception as exc:
            gpu.update(free_gib=None, total_gib=round(properties["totalGlobalMem"] / GIB, 2), error=str(exc))
        gpus.append(gpu)
    return gpus


def _torch_gpus() -> list[dict[str, Any]]:
    import torch

    gpus = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        gpu = {
            "index": index,
            "name": properties.name,
            "compute_capability": f"{properties.major}.{properties.minor}",
            "source": "torch",
        }
        try:
            free, total = torch.cuda.mem_get_info(index)
            gpu.update(free_gib=round(free / GIB, 2), total_gib=round(total / GIB, 2))
        except Exception as exc:
            gpu.update(free_gib=None, total_gib=None, error=str(exc))
        gpus.append(gpu)
    return gpus


def gpu_devices() -> tuple[list[dict[str, Any]], str]:
    """The GPUs, from CuPy when it is usable, else from ``torch.cuda``.

    Returns
    -------
    gpus : list of dict
        ``index``, ``name``, ``compute_capability``, ``free_gib``,
        ``total_gib`` and ``source`` (``"cupy"`` or ``"torch"``) of each.
    note : str
        Why the list is empty (or what failed); empty when GPUs were found.
    """
    notes = []
    try:
        if backends.cupy_gpu_status()[0]:
            return _cupy_gpus(), ""
        notes.append("CuPy cannot use a GPU")
    except Exception as exc:
        notes.append(f"listing GPUs with CuPy failed ({type(exc).__name__}: {exc})")
    try:
        if _is_installed("torch"):
            import torch

            if torch.cuda.is_available():  # listing asks only this; the backend's status is in backend_status()
                return _torch_gpus(), ""
            notes.append("torch.cuda is not available")
        else:
            notes.append("torch is not installed")
    except Exception as exc:
        notes.append(f"listing GPUs with torch failed ({type(exc).__name__}: {exc})")
    return [], "no GPU found: " + "; ".join(notes)


def config_info() -> dict[str, Any]:
    """Everything ``knn-gpu info`` reports, as a dict (what ``--json`` prints).

    Returns
    -------
    dict
        ``versions`` (library name to version, None when absent),
        ``location`` (where knn_gpu is imported from), ``blas`` (the BLAS
        libraries threadpoolctl sees), ``backends`` (each backend, whether it
        is usable here and, if not, why and the fix), ``gpus`` and
        ``gpu_note`` (each GPU's index, name, compute capability and memory).

    Examples
    --------
    >>> info = config_info()
    >>> sorted(info)
    ['backends', 'blas', 'gpu_note', 'gpus', 'location', 'versions']
    """
    blas = blas_info()  # before the probes load other libraries' BLAS: this is NumPy's, and the caller's
    statuses = backend_status()
    gpus, note = gpu_devices()
    return {
        "versions": library_versions(),
        "location": str(Path(__file__).resolve().parent),
        "blas": blas,
        "backends": statuses,
        "gpus": gpus,
        "gpu_note": note,
    }


def _wrapped(label: str, text: str, indent: int = 6) -> list[str]:
    """``label: text`` wrapped at 80 columns without breaking words or paths."""
    return textwrap.wrap(
        f"{label}: {text}",
        width=80,
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + 2),
        break_long_words=False,
        break_on_hyphens=False,
    )


def render_config(info: dict[str, Any]) -> str:
    """The text of ``knn-gpu info`` for a dict from :func:`config_info`."""
    lines = [f"knn_gpu {info['versions']['knn_gpu']} at {info['location']}", "", "versions"]
    for label, version in info["versions"].items():
        lines.append(f"  {label:<18}{version if version is not None else 'not installed'}")
    lines += ["", "BLAS (threadpoolctl)"]
    for pool in info["blas"] or [{"internal_api": "none found", "version": None, "num_threads": None}]:
        threads = f", {pool['num_threads']} threads" if pool.get("num_threads") is not None else ""
        lines.append(f"  {pool['internal_api']} {pool.get('version') or ''}{threads}".rstrip())
        if pool.get("filepath"):
            lines.append(f"    {pool['filepath']}")
        if pool.get("error"):
            lines += _wrapped("error", pool["error"], indent=4)
    lines += ["", "backends"]
    for status in info["backends"]:
        verdict = "usable" if status["usable"] else "NOT usable"
        lines.append(f"  {status['backend']:<18}{status['device']:<12}{verdict}")
        if not status["usable"]:
            lines += _wrapped("reason", status["reason"])
            lines += _wrapped("fix", status["fix"])
    lines += ["", "GPUs"]
    for gpu in info["gpus"]:
        free = f"{gpu['free_gib']:.2f}" if gpu.get("free_gib") is not None else "?"
        total = f"{gpu['total_gib']:.2f}" if gpu.get("total_gib") is not None else "?"
        lines.append(
            f"  {gpu['index']}: {gpu['name']}, compute capability {gpu['compute_capability']}, "
            f"{free} GiB free of {total} GiB (from {gpu['source']})"
        )
    if not info["gpus"]:
        lines += _wrapped("none", info["gpu_note"].removeprefix("no GPU found: "), indent=2)
    return "\n".join(lines)


def show_config(file: TextIO | None = None) -> None:
    """Print what ``knn-gpu info`` prints: versions, BLAS, backends, GPUs.

    Parameters
    ----------
    file : file-like, optional
        Where to write; standard output by default.

    Examples
    --------
    >>> show_config()  # doctest: +ELLIPSIS
    knn_gpu ...
    versions
    ...
    """
    print(render_config(config_info()), file=file if file is not None else sys.stdout)


def run_info(as_json: bool = False) -> int:
    """Run ``knn-gpu info``; always returns 0 (a diagnosis, not a check)."""
    info = config_info()
    print(json.dumps(info, indent=2) if as_json else render_config(info))
    return 0
