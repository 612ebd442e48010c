"""Copies of out-of-core chunks that overlap the search: pinned host buffers and a second stream.

An out-of-core search (:mod:`knn_gpu._engine.streaming`) loads chunk ``i + 1`` before
it searches chunk ``i`` (:func:`knn_gpu._engine.batches.halving_batches` with
``load=``). An *uploader* makes that load a copy that runs beside the search:

* ``start(host_rows)`` begins the copy of a chunk of host rows to the device
  and returns a handle, without waiting for it;
* ``finish(handle)`` returns the chunk as a device array, in the working
  dtype, ordered after its copy on the stream that searches (the search
  stream waits on an event: the host never does).

:class:`CupyPrefetch` and :class:`TorchPrefetch` stage each chunk in one of
two pinned (page-locked) host buffers, converted to the working dtype there
(NumPy's and torch's casts on the host: correctly rounded, as the device's),
and copy it on their own stream; the buffer is reused two chunks later,
after its copy's event has completed. The device array of a chunk is made
in the search stream's memory (CuPy; the copy stream first waits for the
work queued there, which may still read the memory the pool hands out) or
marked as used by the search stream (torch, ``record_stream``), so that
neither allocator reuses it while a queued kernel reads it. Everywhere else
:class:`knn_gpu._engine.streaming.DirectUpload` copies each chunk when it is loaded.

Device memory: two chunks (the one searched and the one being copied).
"""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import array_api_compat
import numpy as np

from .._lib.backends import to_host

__all__ = ["CupyPrefetch", "TorchPrefetch", "cupy_api"]


def cupy_api() -> SimpleNamespace:
    """What :class:`CupyPrefetch` uses of CuPy (a test may pass a stand-in with the same members)."""
    cupy = sys.modules["cupy"]  # a CuPy array exists, so CuPy is imported
    import cupyx

    return SimpleNamespace(
        Stream=cupy.cuda.Stream,
        current_stream=cupy.cuda.get_current_stream,
        empty=cupy.empty,
        empty_pinned=cupyx.empty_pinned,
    )


class CupyPrefetch:
    """Chunks of host rows copied to the current CuPy device on a second stream, through two pinned buffers.

    Parameters
    ----------
    xp : namespace
        The compute namespace (array-api-compat's CuPy).
    dtype : dtype
        Working dtype of the chunks on the device (a NumPy dtype, as CuPy's are).
    max_rows, num_features : int
        Largest chunk: the pinned buffers' shape.
    api : namespace, optional
        CuPy's members used (:func:`cupy_api`); for tests.
    """

    def __init__(self, xp: ModuleType, dtype: Any, max_rows: int, num_features: int, api: Any = None) -> None:
        self._xp = xp
        self._api = cupy_api() if api is None else api
        self._dtype = np.dtype(dtype)
        self._stream = self._api.Stream(non_blocking=True)
        self._buffers = [self._api.empty_pinned((max_rows, num_features), dtype=self._dtype) for _ in range(2)]
        self._copied: list[Any] = [None, None]  # event of the last copy out of each buffer
        self._turn = 0

    def start(self, host_rows: Any) -> tuple[Any, Any]:
        """Begin the copy of ``host_rows``; returns ``(device array, copy's event)``."""
        host = to_host(host_rows)
        slot, self._turn = self._turn, 1 - self._turn
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # the copy two chunks back still reads this buffer
        staged = self._buffers[slot][: host.shape[0], ...]
        np.copyto(staged, host, casting="same_kind")
        search_stream = self._api.current_stream()
        rows = self._api.empty(host.shape, dtype=self._dtype)  # from the search stream's memory
        self._stream.wait_event(search_stream.record())
        rows.set(staged, stream=self._stream)
        copied = self._stream.record()
        self._copied[slot] = copied
        return rows, copied

    def finish(self, pending: tuple[Any, Any]) -> Any:
        """The chunk, the search stream ordered after its copy."""
        rows, copied = pending
        self._api.current_stream().wait_event(copied)
        return rows


class TorchPrefetch:
    """Chunks of host rows copied to a CUDA ``device`` on a second torch stream, through two pinned buffers.

    Constructing it raises ``RuntimeError`` where torch has no CUDA (a fake
    device in tests): the caller then copies chunks directly.
    """

    def __init__(self, device: Any, dtype: Any, max_rows: int, num_features: int) -> None:
        torch = sys.modules["torch"]
        self._torch = torch
        self._device = device
        self._stream = torch.cuda.Stream(device=device)
        self._buffers = [torch.empty((max_rows, num_features), dtype=dtype, pin_memory=True) for _ in range(2)]
        self._copied: list[Any] = [None, None]
        self._turn = 0

    def start(self, host_rows: Any) -> tuple[Any, Any]:
        torch = self._torch
        host = host_rows if array_api_compat.is_torch_array(host_rows) else torch.as_tensor(to_host(host_rows))
        slot, self._turn = self._turn, 1 - self._turn
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()
        staged = self._buffers[slot][: host.shape[0], ...]
        staged.copy_(host)
        # The copy stream's memory is its own: the search stream marks its use of it in finish().
        with torch.cuda.stream(self._stream):
            rows = staged.to(self._device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self._stream)
        self._copied[slot] = copied
        return rows, copied

    def finish(self, pending: tuple[Any, Any]) -> Any:
        rows, copied = pending
        search_stream = self._torch.cuda.current_stream(self._device)
        search_stream.wait_event(copied)
        rows.record_stream(search_stream)
        return rows
