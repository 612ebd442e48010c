"""Measuring and refusing, for tests: a call's traced memory peak, and host conversions on a strict device.

Nothing here calls knn_gpu; the test modules share these instead of each
writing its own copy.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

HOST_CONVERSIONS = ("__bool__", "__int__", "__float__", "__index__", "__array__")


def traced_peak(call: Callable[[], Any]) -> tuple[Any, int]:
    """``(call(), bytes)``: the result and the peak memory traced during the call beyond what was held before it.

    tracemalloc sees NumPy's buffers, so this measures what a NumPy search allocates.
    """
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


@contextlib.contextmanager
def refusing_host_conversions(monkeypatch: Any, xp: Any, *, only_device: Any = None) -> Iterator[None]:
    """Inside: array_api_strict's bool/int/float/index/array conversions raise, and data-dependent shapes are off.

    With ``only_device`` (e.g. device1, which stands for a GPU), only arrays on
    that device are refused: an explicit copy to the host may then be read.
    """
    array_type = type(xp.asarray(0))

    def refusing(method: str) -> Callable:
        original = getattr(array_type, method, None)

        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            if only_device is None or self.device == only_device:
                where = "" if only_device is None else f" of {only_device} data"
                raise AssertionError(f"implicit host conversion ({method}){where} inside the search")
            return original(self, *args, **kwargs)

        return guarded

    with monkeypatch.context() as patch:
        for method in HOST_CONVERSIONS:
            patch.setattr(array_type, method, refusing(method), raising=False)
        xp.set_array_api_strict_flags(data_dependent_shapes=False)
        try:
            yield
        finally:
            xp.reset_array_api_strict_flags()
