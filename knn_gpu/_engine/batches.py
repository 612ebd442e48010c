"""Searching row ranges one after another, with the range halved when the device runs out of memory.

Every batch loop of the engines (the product and direct k-searches, both
radius searches, the out-of-core chunks) runs its ranges through
:func:`halving_batches`. The memory budget that sized a batch was read before
the loop; another process may take device memory after that, and a batch
then fails with CuPy's ``cupy.cuda.memory.OutOfMemoryError`` or torch's
``torch.OutOfMemoryError``. Instead of losing the whole search, the failed
range is searched again in halves (and every range after it at that size), at
most :data:`MAX_HALVINGS` times per loop; after that a
:class:`DeviceMemoryError` names ``memory_budget`` and what to do.

A range's result does not depend on the ranges around it (each query's
neighbours are its own; each chunk's lists are merged by one exact rule), so
a search that recovered returns what the undisturbed search returns.

The error classes are recognised by their module and name, as
array-api-compat recognises arrays: nothing here imports CuPy or torch to ask.

Out-of-core chunks are *loaded* (copied to the device) one range ahead: the
copy of range ``i + 1`` is issued before range ``i`` is searched, so a copy
that runs on its own stream (:mod:`knn_gpu._engine.prefetch`) overlaps the search.
At most two loaded ranges are held at any time.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import array_api_compat

__all__ = ["MAX_HALVINGS", "DeviceMemoryError", "is_out_of_memory", "release_device_memory", "halving_batches"]

#: Times a loop may halve its ranges before it gives up (1/32 of the first size).
MAX_HALVINGS = 5

#: ``(module, qualified name)`` of the out-of-memory exceptions, looked up along the exception's MRO.
OUT_OF_MEMORY_CLASSES = frozenset(
    {
        ("cupy.cuda.memory", "OutOfMemoryError"),
        ("torch", "OutOfMemoryError"),  # torch.cuda.OutOfMemoryError is this class since torch 2.5
        ("torch.cuda", "OutOfMemoryError"),  # its name before torch 2.5
    }
)

#: Messages of out-of-memory errors raised as a library's general error class:
#: torch's RuntimeError before ``torch.cuda.OutOfMemoryError`` existed, torch's
#: ``AcceleratorError`` (a kernel's own allocation), cuBLAS's workspace
#: (torch and CuPy), CUDA runtime errors (CuPy's ``CUDARuntimeError``).
OUT_OF_MEMORY_MESSAGES = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "cudaErrorMemoryAllocation",
)

#: Modules whose exceptions' messages are read for :data:`OUT_OF_MEMORY_MESSAGES`.
MESSAGE_MODULES = ("torch", "cupy", "cupy_backends", "cupyx", "builtins")


class DeviceMemoryError(MemoryError):
    """A search ran out of device memory even after halving its batches :data:`MAX_HALVINGS` times.

    A :class:`MemoryError`; its ``__cause__`` is the last out-of-memory error
    of the device library.
    """


def is_out_of_memory(error: BaseException) -> bool:
    """True if ``error`` is a device library's out-of-memory error (or a :class:`DeviceMemoryError`).

    Recognised by class (module and name along the MRO) or, for general
    error classes of torch, CuPy and Python's ``RuntimeError``, by message
    (:data:`OUT_OF_MEMORY_MESSAGES`). Neither CuPy nor torch is imported.
    """
    if isinstance(error, DeviceMemoryError):
        return True
    for cls in type(error).__mro__:
        if (cls.__module__, cls.__qualname__) in OUT_OF_MEMORY_CLASSES:
            return True
    if type(error).__module__.split(".")[0] in MESSAGE_MODULES and isinstance(error, RuntimeError | MemoryError):
        message = str(error)
        return any(marker in message for marker in OUT_OF_MEMORY_MESSAGES)
    return False


def release_device_memory(xp: ModuleType, device: Any) -> None:
    """Give the memory that a failed batch held back to the device.

    The failed batch's arrays are unreachable once its exception is dropped;
    a collection frees any held in reference cycles. CuPy's default pool then
    returns its unused blocks to the device (``free_all_blocks``), and torch's
    caching allocator its unused cached blocks (``torch.cuda.empty_cache``,
    for CUDA tensors only): both allocators keep freed blocks for reuse, in
    pieces that a smaller batch may not fit. Modules are taken from
    ``sys.modules``: an array of the library exists, so it is imported.
    """
    gc.collect()
    if array_api_compat.is_cupy_namespace(xp):
        cupy = sys.modules.get("cupy")
        if cupy is not None:
            cupy.get_default_memory_pool().free_all_blocks()
    elif array_api_compat.is_torch_namespace(xp) and getattr(device, "type", "cpu") == "cuda":
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def halving_batches(
    search: Callable[..., Any],
    starts: Sequence[int],
    batch_rows: int,
    num_rows: int,
    *,
    xp: ModuleType,
    device: Any,
    memory_budget: int | None,
    what: str = "queries",
    load: Callable[[int, int], Any] | None = None,
    on_failure: Callable[[], None] | None = None,
    max_halvings: int = MAX_HALVINGS,
) -> Iterator[tuple[int, Any]]:
    """``(start, search(start, stop))`` for the batches ``[start, start + batch_rows)`` at ``starts``, in order.

    A range whose search raises an out-of-memory error (:func:`is_out_of_memory`)
    is searched again in halves, and the ranges after it at the halved size;
    the size is halved at most ``max_halvings`` times in all (a range of one
    row is not halved), then a :class:`DeviceMemoryError` is raised. Before a
    retry, the failed range's memory is released: its exception (whose
    traceback holds the range's arrays) is dropped, ``on_failure()`` lets the
    caller drop buffers sized for the old ranges, and
    :func:`release_device_memory` returns unused pooled memory. Any other
    exception propagates unchanged.

    Parameters
    ----------
    search : callable
        ``search(start, stop)``, or with ``load``, ``search(start, stop, loaded)``.
    starts : sequence of int
        Starts of the batches, ascending; a batch ends at ``start + batch_rows``
        or ``num_rows``.
    batch_rows, num_rows : int
        Rows per batch (before any halving) and rows in all.
    xp, device
        The namespace and device searched (to release memory and to name the device).
    memory_budget : int or None
        The budget the batches were sized from, named in the error.
    what : str
        What a row is ("queries", "training rows"), for the error.
    load : callable, optional
        ``load(start, stop)``: data for the range, passed to ``search``. The
        next range's data is loaded before the current range is searched;
        at most two loaded ranges are held.
    on_failure : callable, optional
        Called after a failed range, before the retry.
    max_halvings : int
        Bound on the halvings of the loop.

    Yields
    ------
    start : int
        First row of a searched range (ranges are consecutive within a batch).
    result
        What ``search`` returned for it.
    """
    bounds = [(start, min(start + batch_rows, num_rows)) for start in starts]
    rows = batch_rows
    halvings = 0

    def span_at(position: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """The range at ``position`` (batch number, row) and the position after it."""
        batch, start = position
        stop = min(start + rows, bounds[batch][1])
        if stop < bounds[batch][1]:
            return (start, stop), (batch, stop)
        return (start, stop), ((batch + 1, bounds[batch + 1][0]) if batch + 1 < len(bounds) else None)

    position = (0, bounds[0][0]) if bounds else None
    loaded = upcoming = None
    while position is not None:
        (start, stop), after = span_at(position)
        try:
            if load is None:
                result = search(start, stop)
            else:
                if loaded is None:
                    loaded = load(start, stop)
                if after is not None and upcoming is None:
                    upcoming = load(*span_at(after)[0])  # issued before this range's search
                result = search(start, stop, loaded)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if halvings >= max_halvings or stop - start == 1:
                raise DeviceMemoryError(
                    _give_up_message(what, stop - start, batch_rows, halvings, memory_budget, device)
                ) from error
        else:
            loaded, upcoming = upcoming, None
            position = after
            yield start, result
            del result
            continue
        # Outside the except clause: the exception and its traceback (the range's arrays) are gone.
        loaded = upcoming = None
        if on_failure is not None:
            on_failure()
        release_device_memory(xp, device)
        rows = -(-(stop - start) // 2)
        halvings += 1


def _give_up_message(
    what: str, rows: int, batch_rows: int, halvings: int, memory_budget: int | None, device: Any
) -> str:
    tried = (
        f"{rows} {what} at once"
        if halvings == 0
        else f"{rows} {what} at once (batches of {batch_rows} halved {halvings} times)"
    )
    if memory_budget is None:
        budget = "the default memory_budget"
        advice = "pass memory_budget= (bytes) below what the device has free"
    else:
        budget = f"memory_budget={memory_budget} bytes"
        advice = f"pass a smaller memory_budget= (e.g. {max(1, memory_budget // 4)})"
    return (
        f"out of device memory on {device} searching {tried}, with {budget}: another process may hold "
        f"memory on the device; {advice}, or free memory on the device"
    )
