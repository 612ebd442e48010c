"""A fake CUDA device for torch, so that GPU semantics can be tested on a CPU.

Inside ``with fake_cuda(num_devices=2) as gpu:`` torch behaves, as far as
*placement* and *host synchronisation* go, as if CUDA devices ``cuda:0`` and
``cuda:1`` existed. The data really lives in host memory; what is simulated is
the bookkeeping that a real GPU enforces and that a CPU run never checks:

* **placement**: a tensor asked for on a CUDA device (a creation function or
  conversion given ``device="cuda"``, ``"cuda:1"``, ``torch.device(...)``;
  ``Tensor.to``, ``Tensor.cuda``) is created on the host but *marked* with
  that device: its ``.device`` reports it, so ``array_api_compat.device``
  does too. Results of operations on marked tensors carry the same mark.
  ``device="cuda"`` without an index means the *current* device.
* **mixing**: an operation whose tensor arguments lie on different devices
  raises ``RuntimeError("Expected all tensors to be on the same device ...")``,
  as CUDA does. 0-d CPU tensors and Python scalars mix with anything. So a
  tensor that library code created without ``device=`` (on the CPU) fails as
  soon as it meets device data.
* **host syncs**: ``bool()``, ``float()``, ``int()``, ``__index__``,
  ``.item()``, ``.tolist()``, ``.cpu()``, ``.to("cpu")``, boolean-mask
  indexing, ``nonzero``, ``masked_select``, ``unique`` ... on a marked tensor
  raise :class:`HiddenHostSync` ("hidden host sync: ...") unless inside
  :func:`allow_sync` or called directly from a function named in
  ``allowed_sync_sites``. (``torch.cuda.set_sync_debug_mode("error")`` is the
  real-GPU counterpart.) ``.numpy()``, ``numpy.asarray`` and ``__dlpack__``
  are refused even inside :func:`allow_sync`, as real torch refuses them for
  CUDA tensors: go through ``.cpu()``.
* **torch.cuda**: ``is_available``, ``device_count``, ``current_device``,
  ``set_device``, ``device`` / ``device_of`` (context managers that change the
  current device), ``mem_get_info``, ``synchronize``, ``get_device_name``,
  ``get_device_properties``, ... are patched for the duration, and every call
  is recorded in :attr:`FakeGpu.calls` with the device current at the time.
  The device-generic ``torch.accelerator`` functions are patched alike.

How: a :class:`torch.overrides.TorchFunctionMode` sees every torch call made
in the context (functions, methods, operators, indexing, conversions). It
checks devices and syncs, runs the call on the host (fake devices rewritten
to ``"cpu"``) and marks the results. The mark is a tensor subclass,
:class:`FakeCudaTensor`, whose ``device`` property reports the fake device;
its own ``__torch_function__`` routes to the same checks, so marked tensors
are checked in threads where the mode is not active too (modes are
thread-local; factory calls there with ``device="cuda"`` fail loudly).

Examples
--------
>>> import torch
>>> with fake_cuda(num_devices=2) as gpu:
...     x = torch.arange(4.0, device="cuda:1")
...     y = (x * 2).sum()
...     print(y.device, torch.cuda.device_count())
...     with allow_sync():
...         print(y.cpu().item())
cuda:1 2
12.0
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "CudaCall",
    "ENGINE_SYNC_SITES",
    "FakeCudaTensor",
    "FakeGpu",
    "HiddenHostSync",
    "HostConversionError",
    "MemoryQuery",
    "allow_sync",
    "fake_cuda",
]

#: The engine's deliberate host reads of a search (``allowed_sync_sites``): the finiteness check of each
#: input, the counts read to the host (the k-search's uncertified queries, the radius search's
#: candidates) and the index build's one number (the training rows' largest squared norm: whether the
#: keys need scaling), two where they do.
ENGINE_SYNC_SITES = (
    "knn_gpu._lib.validation.check_finite",
    "knn_gpu._lib.devices.read_counts",
    "knn_gpu._lib.devices.read_number",
)

#: DLPack's device type code for CUDA.
_KDL_CUDA = 2


class HiddenHostSync(RuntimeError):
    """An operation that would copy device data to the host and wait for the GPU."""


class HostConversionError(HiddenHostSync, TypeError):
    """A host library reading device memory directly, which real torch refuses for CUDA tensors."""


class FakeCudaTensor(torch.Tensor):
    """A host tensor that reports a fake CUDA device. Made only by :func:`fake_cuda`."""

    _fake_device: torch.device

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # Reached only where the fake_cuda mode is not on the stack: in another
        # thread, or after the context ended (then it is a plain host tensor).
        gpu = _ACTIVE
        if gpu is None:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        return gpu._dispatch(func, args, kwargs or {})

    @property
    def device(self) -> torch.device:
        return self._fake_device

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return self._fake_device.index

    def __dlpack_device__(self) -> tuple[int, int]:
        return (_KDL_CUDA, self._fake_device.index)


@dataclass(frozen=True)
class CudaCall:
    """One call of a patched ``torch.cuda`` function."""

    name: str
    args: tuple
    current_device: int


@dataclass(frozen=True)
class MemoryQuery:
    """One ``torch.cuda.mem_get_info`` call: what was asked, what was current, what was answered."""

    requested: Any
    current_device: int
    device: int


@dataclass
class FakeGpu:
    """State of a :func:`fake_cuda` context; the context manager yields it.

    Attributes
    ----------
    calls : list of CudaCall
        Every call of a patched ``torch.cuda`` function, in order.
    syncs : list of (str, str)
        Host syncs that were permitted: (operation, where: the calling
        function's qualified name, or ``"allow_sync()"``).
    current : int
        The current device (``torch.cuda.current_device()``).
    torch_calls : int
        torch calls (functions, methods, operators) seen so far: what the
        host issues, one launch or more each on a real GPU.
    """

    num_devices: int
    free_bytes: list[int]
    total_bytes: list[int]
    allowed_sync_sites: tuple[str, ...] = ()
    storage: str = "cpu"
    current: int = 0
    torch_calls: int = 0
    calls: list[CudaCall] = field(default_factory=list)
    syncs: list[tuple[str, str]] = field(default_factory=list)
    _allow_depth: int = 0

    @property
    def memory_queries(self) -> list[MemoryQuery]:
        """The ``mem_get_info`` calls, with the device each one reported on."""
        return [call.args[0] for call in self.calls if call.name == "mem_get_info"]

    @contextlib.contextmanager
    def allow_sync(self) -> Iterator[None]:
        """Permit host syncs in this block (fetching results at the end of a test)."""
        self._allow_depth += 1
        try:
            yield
        finally:
            self._allow_depth -= 1

    # -- devices ------------------------------------------------------------------
    def resolve(self, spec: Any) -> torch.device:
        """A device argument as torch reads it; CUDA gets an explicit, valid index."""
        if isinstance(spec, torch.Tensor):
            return _logical_device(spec)
        if isinstance(spec, int) and not isinstance(spec, bool):
            device = torch.device("cuda", spec)  # a bare int is a CUDA ordinal
        else:
            device = torch.device(spec)
        if device.type != "cuda":
            return device
        index = self.current if device.index is None else device.index
        if not 0 <= index < self.num_devices:
            msg = f"CUDA error: invalid device ordinal (fake_cuda has {self.num_devices} device(s); got {spec!r})"
            raise RuntimeError(msg)
        return torch.device("cuda", index)

    def cuda_index(self, spec: Any, *, optional: bool = False) -> int:
        """``torch.cuda._get_device_index``: the CUDA ordinal of ``spec`` (-1 for None if optional)."""
        if spec is None or (isinstance(spec, int) and spec == -1):
            if optional:
                return -1 if spec == -1 else self.current
            return self.current
        device = self.resolve(spec)
        if device.type != "cuda":
            msg = f"Expected a cuda device, but got: {device}"
            raise ValueError(msg)
        return device.index

    # -- host syncs ---------------------------------------------------------------
    def host_sync(self, operation: str, error: type[HiddenHostSync] = HiddenHostSync) -> None:
        """Record a permitted sync, or raise ``error`` naming the operation and its caller."""
        site = _calling_site()
        if error is HiddenHostSync:
            if self._allow_depth:
                self.syncs.append((operation, "allow_sync()"))
                return
            if site in self.allowed_sync_sites:
                self.syncs.append((operation, site))
                return
        if error is HostConversionError:
            advice = (
                "Real torch refuses this for a CUDA tensor (TypeError), even where syncs are allowed: "
                "copy to the host with .cpu() first, at the very end."
            )
        else:
            advice = (
                "On a GPU this copies device data to the host and waits for the device. Keep the "
                "computation on the device (xp.where instead of a boolean mask, no bool()/int()/"
                "float()/.item()), or fetch final results inside fake_cuda.allow_sync()."
            )
        where = _innermost_location()
        raise error(f"hidden host sync: {operation}, at {where}, called from {site}. {advice}")

    # -- the checks and the marking, for every torch call -----------------------------
    def _dispatch(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        self.torch_calls += 1
        with torch._C.DisableTorchFunctionSubclass():
            if func in _UNCHECKED:
                return func(*args, **kwargs)
            leaves = tree_flatten((args, kwargs))[0]
            tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
            target = self._target_device(func, args, kwargs)
            if any(isinstance(tensor, FakeCudaTensor) for tensor in tensors):
                self._check_syncs(func, args, kwargs, target)
            if target is None and func not in _NO_DEVICE_CHECK:
                _check_one_device(func, tensors)
            if func is torch.Tensor.cuda:
                out = args[0]
            else:
                out = func(
                    *_host_arguments(func, args, target, self.storage), **_host_kwargs(kwargs, target, self.storage)
                )
            return self._place(func, out, args, target, tensors)

    def _target_device(self, func: Callable, args: tuple, kwargs: dict) -> torch.device | None:
        """The device a call explicitly asks for, or None."""
        if func is torch.Tensor.cpu:
            return torch.device("cpu")
        if func is torch.Tensor.cuda:
            spec = args[1] if len(args) > 1 else kwargs.get("device")
            return self.resolve("cuda" if spec is None else spec)
        spec = kwargs.get("device")
        if func is torch.Tensor.to and len(args) > 1 and _is_device_like(args[1]):
            spec = args[1]
        return None if spec is None else self.resolve(spec)

    def _check_syncs(self, func: Callable, args: tuple, kwargs: dict, target: torch.device | None) -> None:
        name = _op_name(func)
        if func in _HOST_CONVERSIONS:
            self.host_sync(f"{_HOST_CONVERSIONS[func]} on a tensor on {_fake_devices(args)}", HostConversionError)
        if func in _SYNC_OPS:
            self.host_sync(f"{_SYNC_OPS[func]} on a tensor on {_fake_devices(args)}")
        if func in _CONVERSIONS and target is not None and target.type == "cpu":
            source = args[0]
            if isinstance(source, FakeCudaTensor):
                self.host_sync(f"{name} from {source.device} to {target}")
        if func in _MASK_INDEXING and len(args) > 1 and _has_bool_index(args[1]):
            self.host_sync(
                f"boolean-mask indexing ({name}) on {_fake_devices(args)}: the output shape depends on the data"
            )
        if func is torch.where and len(args) + len(kwargs) == 1:
            self.host_sync("torch.where(condition) with one argument (nonzero): the output shape depends on the data")
        if func in _REPEAT_INTERLEAVE and "output_size" not in kwargs and len(args) > 1:
            if isinstance(args[1], torch.Tensor):
                self.host_sync("repeat_interleave with tensor repeats and no output_size")
        if func is torch.Tensor.copy_ and isinstance(args[1], FakeCudaTensor):
            if not isinstance(args[0], FakeCudaTensor):
                self.host_sync(f"copy_ from {args[1].device} into a host tensor")

    def _place(
        self, func: Callable, out: Any, args: tuple, target: torch.device | None, tensors: list[torch.Tensor]
    ) -> Any:
        """Mark the results of a call with the device they belong to."""
        if func is torch.broadcast_tensors:
            return type(out)(self._mark(result, _logical_device(source)) for result, source in zip(out, tensors))
        if func in _CONVERSIONS and target is not None:
            source = args[0]
            same_place = isinstance(source, torch.Tensor) and _logical_device(source) == target
            if target.type == "cuda":
                # A copy to another device never aliases its source (torch.asarray of host data may;
                # with meta storage, a conversion of host data is already a new meta tensor).
                fresh = same_place or (self.storage == "meta" and not isinstance(source, FakeCudaTensor))
                return self._mark(out if fresh else out.clone(), target)
            if isinstance(source, FakeCudaTensor):
                return _host_copy(out)  # a sync that was allowed: a host copy, not a view of device data
            return out
        if any(out is tensor for tensor in tensors):
            return out  # in-place ops and no-op conversions return their input, wherever it lives
        if target is not None:
            device = target
        elif func in _DEVICE_OF_SELF:
            device = _logical_device(args[0])
        else:
            device = next((t._fake_device for t in tensors if isinstance(t, FakeCudaTensor)), None)
        if device is None or device.type != "cuda":
            return out
        if func is torch.Tensor.__iter__:
            return iter([self._mark(row, device) for row in out])
        leaves, spec = tree_flatten(out)
        if not any(isinstance(leaf, torch.Tensor) for leaf in leaves):
            return out
        return tree_unflatten(
            [self._mark(leaf, device) if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves], spec
        )

    @staticmethod
    def _mark(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        if device.type != "cuda":
            return tensor
        if isinstance(tensor, FakeCudaTensor) and tensor._fake_device == device:
            return tensor
        marked = tensor.as_subclass(FakeCudaTensor)
        marked._fake_device = device
        return marked


class _FakeCudaMode(TorchFunctionMode):
    """Sends every torch call made in the context through :meth:`FakeGpu._dispatch`."""

    def __init__(self, gpu: FakeGpu) -> None:
        super().__init__()
        self.gpu = gpu

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.gpu._dispatch(func, args, kwargs or {})


_ACTIVE: FakeGpu | None = None


def _active() -> FakeGpu:
    if _ACTIVE is None:
        msg = "no fake_cuda context is active"
        raise RuntimeError(msg)
    return _ACTIVE


@contextlib.contextmanager
def allow_sync() -> Iterator[None]:
    """Permit host syncs on fake CUDA tensors in this block (to fetch results at the end)."""
    with _active().allow_sync():
        yield


@contextlib.contextmanager
def fake_cuda(
    num_devices: int = 2,
    *,
    free_bytes: int | Sequence[int] = 12 * 2**30,
    total_bytes: int | Sequence[int] = 16 * 2**30,
    allowed_sync_sites: Sequence[str] = (),
    storage: str = "cpu",
) -> Iterator[FakeGpu]:
    """Make torch behave as if ``num_devices`` CUDA devices existed (see the module notes).

    Parameters
    ----------
    num_devices : int
        Devices ``cuda:0`` ... ``cuda:{num_devices - 1}``.
    free_bytes, total_bytes : int or sequence of int
        What ``torch.cuda.mem_get_info`` reports, for every device or per device.
    allowed_sync_sites : sequence of str
        Qualified names (``"package.module.function"`` or
        ``"package.module.Class.method"``) of functions that may sync on
        purpose: a sync made *directly* by one of them (through torch,
        array_api_compat or array_api_extra) is recorded in ``gpu.syncs``
        instead of raising. A sync in anything they call still raises.
    storage : {"cpu", "meta"}
        Where the data of fake CUDA tensors lives. ``"meta"`` keeps shapes
        and dtypes only (no data, no memory, no arithmetic): a search of any
        size can then be *traced* (``benchmarks/gpu_cost_model.py`` prices
        each ATen op). Meta kernels written in Python read ``.device``, so a
        ``TorchDispatchMode`` running under the context must call each op on
        plain tensors (``as_subclass(torch.Tensor)``), and must answer the
        host reads (``aten._local_scalar_dense``) itself: meta tensors have
        no values.

    Yields
    ------
    FakeGpu
    """
    global _ACTIVE
    if _ACTIVE is not None:
        msg = "fake_cuda contexts do not nest"
        raise RuntimeError(msg)
    if storage not in ("cpu", "meta"):
        msg = f"storage must be 'cpu' or 'meta', got {storage!r}"
        raise ValueError(msg)
    gpu = FakeGpu(
        num_devices=num_devices,
        free_bytes=_per_device(free_bytes, num_devices, "free_bytes"),
        total_bytes=_per_device(total_bytes, num_devices, "total_bytes"),
        allowed_sync_sites=tuple(allowed_sync_sites),
        storage=storage,
    )
    patches = _cuda_patches(gpu)
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    _ACTIVE = gpu
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        with _FakeCudaMode(gpu):
            yield gpu
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        _ACTIVE = None


# -- torch.cuda -------------------------------------------------------------------------
def _cuda_patches(gpu: FakeGpu) -> list[tuple[Any, str, Any]]:
    """(module, name, replacement) for ``torch.cuda`` and the device-generic ``torch.accelerator``."""

    def recorded(name: str, function: Callable) -> Callable:
        def patched(*args: Any, **kwargs: Any) -> Any:
            gpu.calls.append(CudaCall(name, args + tuple(kwargs.values()), gpu.current))
            return function(*args, **kwargs)

        patched.__name__ = patched.__qualname__ = name
        return patched

    def set_device(device: Any) -> None:
        index = gpu.cuda_index(device, optional=True)
        if index >= 0:
            gpu.current = index

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        index = gpu.cuda_index(device, optional=False)
        gpu.calls.append(CudaCall("mem_get_info", (MemoryQuery(device, gpu.current, index),), gpu.current))
        return gpu.free_bytes[index], gpu.total_bytes[index]

    def get_device_properties(device: Any = None) -> SimpleNamespace:
        index = gpu.cuda_index(device)
        return SimpleNamespace(
            name=f"Fake CUDA device {index} (host memory)",
            total_memory=gpu.total_bytes[index],
            major=9,
            minor=0,
            multi_processor_count=132,
            is_integrated=False,
        )

    class device:  # noqa: N801 - the name torch.cuda.device
        """``torch.cuda.device``: makes a device current for the block."""

        def __init__(self, device: Any) -> None:
            gpu.calls.append(CudaCall("device", (device,), gpu.current))
            self.index = gpu.cuda_index(device, optional=True)
            self.previous = -1

        def __enter__(self) -> device:
            self.previous = gpu.current
            if self.index >= 0:
                gpu.current = self.index
            return self

        def __exit__(self, *exc_info: Any) -> bool:
            gpu.current = self.previous
            return False

    class device_of(device):  # noqa: N801 - the name torch.cuda.device_of
        """``torch.cuda.device_of``: makes the device of a tensor current (CPU tensors: no change)."""

        def __init__(self, obj: torch.Tensor) -> None:
            super().__init__(obj.get_device() if obj.is_cuda else -1)

    cuda = {
        "is_available": recorded("is_available", lambda: True),
        "device_count": recorded("device_count", lambda: gpu.num_devices),
        "current_device": recorded("current_device", lambda: gpu.current),
        "set_device": recorded("set_device", set_device),
        "device": device,
        "device_of": device_of,
        "mem_get_info": mem_get_info,
        "synchronize": recorded("synchronize", lambda device=None: None),
        "get_device_name": recorded("get_device_name", lambda device=None: get_device_properties(device).name),
        "get_device_properties": recorded("get_device_properties", get_device_properties),
        "get_device_capability": recorded("get_device_capability", lambda device=None: (9, 0)),
        "is_bf16_supported": recorded("is_bf16_supported", lambda including_emulation=True: True),
        "empty_cache": recorded("empty_cache", lambda: None),
        "memory_allocated": recorded("memory_allocated", lambda device=None: 0),
        "memory_reserved": recorded("memory_reserved", lambda device=None: 0),
        "max_memory_allocated": recorded("max_memory_allocated", lambda device=None: 0),
        "max_memory_reserved": recorded("max_memory_reserved", lambda device=None: 0),
        "memory_stats": recorded("memory_stats", lambda device=None: {}),
    }
    accelerator = {
        "is_available": recorded("accelerator.is_available", lambda check_available=False: True),
        "current_accelerator": recorded(
            "accelerator.current_accelerator", lambda check_available=False: torch.device("cuda")
        ),
        "device_count": recorded("accelerator.device_count", lambda: gpu.num_devices),
        "current_device_index": recorded("accelerator.current_device_index", lambda: gpu.current),
        "set_device_index": recorded("accelerator.set_device_index", set_device),
        "device_index": device,
        "synchronize": recorded("accelerator.synchronize", lambda device=None: None),
        "get_memory_info": lambda device_index=None: mem_get_info(device_index),
        "memory_allocated": recorded("accelerator.memory_allocated", lambda device_index=None: 0),
        "memory_reserved": recorded("accelerator.memory_reserved", lambda device_index=None: 0),
        "empty_cache": recorded("accelerator.empty_cache", lambda: None),
    }
    patches = [(torch.cuda, name, value) for name, value in cuda.items()]
    if hasattr(torch, "accelerator"):
        patches += [
            (torch.accelerator, name, value) for name, value in accelerator.items() if hasattr(torch.accelerator, name)
        ]
    return patches


# -- what each torch function means for devices and syncs ------------------------------------
_T = torch.Tensor

#: Printing is for people reading a failure; it is not checked (on a real GPU it syncs).
_UNCHECKED = frozenset({_T.__repr__, _T.__str__})

#: Conversions to a host library: refused for CUDA tensors by real torch, even with syncs allowed.
_HOST_CONVERSIONS = {
    _T.numpy: ".numpy()",
    _T.__array__: "numpy.asarray / __array__",
    _T.__dlpack__: "__dlpack__ (export to another library)",
}

#: Operations that read device data on the host (each one a CUDA synchronisation).
_SYNC_OPS = {
    _T.__bool__: "bool()",
    _T.__float__: "float()",
    _T.__int__: "int()",
    _T.__index__: "__index__ (a tensor used as a Python int)",
    _T.__complex__: "complex()",
    _T.__format__: "format() / an f-string",
    _T.__contains__: "`in`",
    _T.item: ".item()",
    _T.tolist: ".tolist()",
    _T.nonzero: "nonzero (output shape depends on the data)",
    torch.nonzero: "torch.nonzero (output shape depends on the data)",
    _T.argwhere: "argwhere (output shape depends on the data)",
    torch.argwhere: "torch.argwhere (output shape depends on the data)",
    _T.masked_select: "masked_select (output shape depends on the data)",
    torch.masked_select: "torch.masked_select (output shape depends on the data)",
    _T.unique: "unique (output shape depends on the data)",
    torch.unique: "torch.unique (output shape depends on the data)",
    _T.unique_consecutive: "unique_consecutive (output shape depends on the data)",
    torch.unique_consecutive: "torch.unique_consecutive (output shape depends on the data)",
    _T.bincount: "bincount (output shape depends on the data)",
    torch.bincount: "torch.bincount (output shape depends on the data)",
    _T.equal: "equal (returns a Python bool)",
    torch.equal: "torch.equal (returns a Python bool)",
    _T.allclose: "allclose (returns a Python bool)",
    torch.allclose: "torch.allclose (returns a Python bool)",
    _T.is_nonzero: "is_nonzero (returns a Python bool)",
    torch.is_nonzero: "torch.is_nonzero (returns a Python bool)",
}

#: Calls whose device may be given explicitly and that copy data when it differs from the source's.
_CONVERSIONS = frozenset({_T.to, _T.cuda, _T.cpu, torch.asarray, torch.as_tensor, torch.tensor})

#: Indexing that takes a boolean mask (a nonzero, so a sync, on CUDA).
_MASK_INDEXING = frozenset({_T.__getitem__, _T.__setitem__, _T.index_put_, _T.index_put, torch.index_put})

_REPEAT_INTERLEAVE = frozenset({_T.repeat_interleave, torch.repeat_interleave})

#: Calls whose other tensor arguments give only a shape or a value to copy: no same-device rule.
_DEVICE_OF_SELF = frozenset({_T.expand_as, _T.view_as, _T.reshape_as, _T.new_tensor})
_NO_DEVICE_CHECK = _DEVICE_OF_SELF | {torch.broadcast_tensors, _T.copy_}


# -- helpers ------------------------------------------------------------------------------
def _logical_device(tensor: torch.Tensor) -> torch.device:
    return tensor._fake_device if isinstance(tensor, FakeCudaTensor) else tensor.device


def _is_device_like(value: Any) -> bool:
    return isinstance(value, (str, torch.device, torch.Tensor)) or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def _check_one_device(func: Callable, tensors: list[torch.Tensor]) -> None:
    """Raise as CUDA does when tensors (other than 0-d CPU ones) live on different devices."""
    devices: list[torch.device] = []
    for tensor in tensors:
        device = _logical_device(tensor)
        if device.type == "cpu" and tensor.ndim == 0:
            continue  # CPU scalars mix with device tensors
        if device not in devices:
            devices.append(device)
    if len(devices) > 1:
        devices.sort(key=lambda device: device.type == "cpu")
        hint = " (a tensor created without device= lives on the CPU)" if devices[-1].type == "cpu" else ""
        msg = (
            f"Expected all tensors to be on the same device, but found at least two devices, "
            f"{devices[0]} and {devices[1]}! (fake_cuda: in {_op_name(func)}){hint}"
        )
        raise RuntimeError(msg)


def _has_bool_index(index: Any) -> bool:
    """Whether an index (a tensor, or a tuple or list of them) holds a boolean mask."""
    leaves = tree_flatten(index)[0]
    return any(isinstance(leaf, torch.Tensor) and leaf.dtype in (torch.bool, torch.uint8) for leaf in leaves)


def _host_arguments(func: Callable, args: tuple, target: torch.device | None, storage: str = "cpu") -> tuple:
    if target is None or target.type != "cuda" or func is not torch.Tensor.to:
        return args
    if isinstance(args[1], torch.Tensor):  # to(other): other's device and dtype
        return (args[0], args[1].dtype, *args[2:])
    return (args[0], storage, *args[2:])


def _host_kwargs(kwargs: dict, target: torch.device | None, storage: str = "cpu") -> dict:
    if target is None or target.type != "cuda" or "device" not in kwargs:
        return kwargs
    return {**kwargs, "device": storage}


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A host copy of device data: on a real GPU the D2H copy itself, so made out of sight of dispatch modes."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        copy = tensor.clone()
    return copy if type(copy) is torch.Tensor else copy.as_subclass(torch.Tensor)


def _fake_devices(args: tuple) -> str:
    devices = {str(leaf.device) for leaf in tree_flatten(args)[0] if isinstance(leaf, FakeCudaTensor)}
    return " and ".join(sorted(devices)) or "a fake CUDA device"


def _op_name(func: Callable) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    for prefix, public in (("TensorBase.", "Tensor."), ("_VariableFunctionsClass.", "torch.")):
        if name.startswith(prefix):
            return public + name[len(prefix) :]
    module = getattr(func, "__module__", None) or ""
    return f"torch.{name}" if module.startswith("torch") and "." not in name else name


#: Frames of these modules are library plumbing, not the code that asked for a sync.
_PLUMBING = ("torch", "array_api_compat", "array_api_extra", "contextlib", "functools", __name__)


def _calling_site() -> str:
    """``module.qualname`` of the innermost caller outside torch, the compat layers and this module."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in _PLUMBING):
            code = frame.f_code
            return f"{module}.{getattr(code, 'co_qualname', code.co_name)}"
        frame = frame.f_back
    return "<unknown>"


def _innermost_location() -> str:
    """``file:line`` of the innermost frame outside torch and this module (the line that synced)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in ("torch", __name__)):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _per_device(value: int | Sequence[int], num_devices: int, name: str) -> list[int]:
    values = [int(value)] * num_devices if isinstance(value, int) else [int(v) for v in value]
    if len(values) != num_devices:
        msg = f"{name} must be an int or one value per device ({num_devices}), got {value!r}"
        raise ValueError(msg)
    return values
