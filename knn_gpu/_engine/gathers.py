"""Gathers by non-negative indices: the standard's ``take`` and ``take_along_axis``, torch's natives first.

array-api-compat's torch ``take`` and ``take_along_axis`` accept negative
indices, which torch does not, by wrapping them first (``where(i < 0, i + n,
i)``: three kernels on a GPU, and ``take_along_dim`` adds a ``remainder``).
The engine's indices are never negative, so on torch these call
``index_select`` and ``gather`` directly: one kernel each, where a batch of
the search used to launch four or five. Every other namespace gets the
standard functions.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

__all__ = ["take", "take_along_axis", "take_from_rows"]


def take(x: Any, indices: Any, *, axis: int, xp: ModuleType) -> Any:
    """``xp.take(x, indices, axis=axis)`` for 1-D ``indices`` in ``[0, x.shape[axis])``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> take(xp.asarray([[1, 2], [3, 4]]), xp.asarray([1, 1]), axis=0, xp=xp)
    array([[3, 4],
           [3, 4]])
    """
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.index_select(x, axis, indices)
    return xp.take(x, indices, axis=axis)


def take_along_axis(x: Any, indices: Any, *, axis: int, xp: ModuleType) -> Any:
    """``xp.take_along_axis(x, indices, axis=axis)`` for ``indices`` in ``[0, x.shape[axis])``.

    ``indices`` has the dimensions of ``x``, none longer than ``x``'s but on ``axis``.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> take_along_axis(xp.asarray([[5, 6, 7]]), xp.asarray([[2, 0]]), axis=1, xp=xp)
    array([[7, 5]])
    """
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.gather(x, axis, indices)
    return xp.take_along_axis(x, indices, axis=axis)


def take_from_rows(x: Any, indices: Any, *, xp: ModuleType) -> Any:
    """``x[r, indices[r, j]]`` for a 2-D ``x`` and 2-D ``indices`` with as many rows: shape of ``indices``.

    torch gathers in one kernel; elsewhere one ``take`` from the flattened
    ``x`` (on NumPy faster than ``take_along_axis``).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> take_from_rows(xp.asarray([[5, 6, 7], [8, 9, 10]]), xp.asarray([[2, 0], [1, 1]]), xp=xp)
    array([[7, 5],
           [9, 9]])
    """
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.gather(x, 1, indices)
    rows, width = x.shape
    row_start = xp.arange(rows, dtype=indices.dtype, device=array_api_compat.device(x))[:, None] * width
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), xp.reshape(indices + row_start, (-1,))), indices.shape)
