"""Top-k selection per row, with ties going to the lower column.

The standard has no top-k, so the k-th smallest *value* of each row (well
defined whatever the ties) comes from each library's own selection, chosen by
namespace as array-api-extra does: NumPy and CuPy ``partition`` (a sort-free
bisection for large k on CuPy), torch ``topk`` on the tensor's own device,
and ``array_api_extra.partition`` for every other namespace. Which of several equal values to keep is then
decided here, by position, with standard functions only: that is what makes
the result identical on every backend.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import array_api_extra as xpx

from .._lib.devices import is_gpu

__all__ = [
    "smallest_k_columns",
    "smallest_k_columns_by_sort",
    "columns_of_true",
    "positions_of_true",
    "kth_smallest",
    "kth_smallest_by_bisection",
]


def columns_of_true(mask: Any, k: int, *, xp: ModuleType) -> Any:
    """Column indices of the ``k`` true entries of each row, in ascending order.

    Parameters
    ----------
    mask : array of bool, shape (rows, width)
        Exactly ``k`` entries of each row must be true.
    k : int
    xp : namespace

    Returns
    -------
    array of int64, shape (rows, k)

    Notes
    -----
    A row-wise "nonzero" without data-dependent shapes: the running count of
    true entries, offset by ``row * (k + 1)``, is non-decreasing over the
    flattened array, so one ``searchsorted`` finds where each row's s-th true
    entry sits.
    """
    rows, width = mask.shape
    device = array_api_compat.device(mask)
    # int32 counts halve the memory traffic; the flattened offsets must fit too.
    count_dtype = xp.int32 if rows * (k + 1) < 2**31 else xp.int64
    running = xp.cumulative_sum(xp.astype(mask, count_dtype), axis=1)
    row_start = xp.arange(rows, dtype=count_dtype, device=device)[:, None] * (k + 1)
    flat_running = xp.reshape(running + row_start, (-1,))
    wanted = row_start + xp.arange(1, k + 1, dtype=count_dtype, device=device)[None, :]
    flat_positions = xp.searchsorted(flat_running, xp.reshape(wanted, (-1,)), side="left")
    flat_positions = xp.astype(flat_positions, xp.int64)
    row_offsets = xp.arange(rows, dtype=xp.int64, device=device)[:, None] * width
    return xp.reshape(flat_positions, (rows, k)) - row_offsets


def positions_of_true(mask: Any, count: int, *, xp: ModuleType) -> Any:
    """Flat positions of the ``count`` true entries of ``mask``, ascending: a nonzero of known size.

    Parameters
    ----------
    mask : array of bool, any shape
        Holds exactly ``count`` true entries.
    count : int
        Their number, read beforehand by the caller (a Python int).
    xp : namespace

    Returns
    -------
    array of int64, shape (count,)
        Positions in the row-major flattening of ``mask``.

    Notes
    -----
    With the size given, no step has a data-dependent shape: the running
    count of true entries is non-decreasing, so one ``searchsorted`` finds
    where the s-th true entry sits (as :func:`columns_of_true` does per row).
    NumPy takes ``flatnonzero`` (one pass, no running count).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> positions_of_true(xp.asarray([[False, True], [True, True]]), 3, xp=xp)
    array([1, 2, 3])
    """
    flat = xp.reshape(mask, (-1,))
    if array_api_compat.is_numpy_namespace(xp):
        import numpy as np

        return np.flatnonzero(flat)
    device = array_api_compat.device(mask)
    count_dtype = xp.int32 if flat.shape[0] < 2**31 else xp.int64
    running = xp.cumulative_sum(xp.astype(flat, count_dtype))
    wanted = xp.arange(1, count + 1, dtype=count_dtype, device=device)
    return xp.astype(xp.searchsorted(running, wanted, side="left"), xp.int64)


def smallest_k_columns(values: Any, k: int, *, xp: ModuleType) -> Any:
    """Columns of the ``k`` smallest values of each row, ties to the lower column.

    Exactly the first ``k`` entries of each row under the order
    (value, column), returned in ascending *column* order (not value order).
    The k-th smallest value comes from the library's own selection, chosen by
    namespace (NumPy ``partition``, torch ``topk``, CuPy ``partition`` or a
    sort-free bisection for large k); which of several equal values to keep is
    then decided by position with standard functions only, so the result is
    identical on every backend. torch on a GPU sorts instead
    (:func:`smallest_k_columns_by_sort`: the same columns, fewer kernels).

    Parameters
    ----------
    values : array, shape (rows, width)
        Real values without NaN (infinity is allowed).
    k : int
        ``1 <= k <= width``.
    xp : namespace

    Returns
    -------
    array of int64, shape (rows, k)

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> values = xp.asarray([[3.0, 1.0, 2.0, 1.0, 1.0]])
    >>> smallest_k_columns(values, 2, xp=xp)
    array([[1, 3]])
    """
    rows, width = values.shape
    device = array_api_compat.device(values)
    if k >= width:
        return xp.broadcast_to(xp.arange(width, dtype=xp.int64, device=device), (rows, width))
    if array_api_compat.is_numpy_namespace(xp):
        return _smallest_k_columns_numpy(values, k, xp=xp)
    if array_api_compat.is_torch_namespace(xp) and is_gpu(xp, device):
        return smallest_k_columns_by_sort(values, k)
    return _columns_up_to(values, kth_smallest(values, k, xp=xp), k, xp=xp)


def smallest_k_columns_by_sort(values: Any, k: int) -> Any:
    """torch on a GPU: :func:`smallest_k_columns` by two stable sorts, a fixed handful of kernels.

    A stable sort orders each row by (value, column), exactly the rule; its
    first ``k`` columns are sorted back to ascending column order. The
    standard path's selection, tie ranks and row-wise nonzero launch about
    25 kernels, each a pass over the row; on a GPU, where a kernel costs
    ~5 us whatever its size, the sorts are cheaper for every width the
    search meets (``benchmarks/gpu_cost_model.py``). Adding ``0.0`` turns
    ``-0.0`` into ``+0.0``, which a radix sort would otherwise order first
    (the comparisons of the standard path find them equal).

    Examples
    --------
    >>> import torch
    >>> smallest_k_columns_by_sort(torch.tensor([[3.0, 1.0, 2.0, 1.0, 1.0]]), 2)
    tensor([[1, 3]])
    """
    import torch

    order = torch.sort(values + 0.0, dim=1, stable=True).indices[:, :k]
    return torch.sort(order, dim=1).values


def kth_smallest(values: Any, k: int, *, xp: ModuleType) -> Any:
    """The k-th smallest value of each row, shape (rows, 1), on the values' device.

    torch: ``topk`` (radix selection on CUDA, any k); CuPy: ``partition`` while
    its selection kernel applies (kth < :data:`CUPY_PARTITION_MAX_KTH`; beyond
    it CuPy sorts), else :func:`kth_smallest_by_bisection`; NumPy
    ``partition``; other namespaces ``array_api_extra.partition`` (which sorts
    where the library has no selection). None of these reads data back to the
    host.
    """
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.topk(values, k, dim=1, largest=False, sorted=False).values.amax(dim=1, keepdim=True)
    if array_api_compat.is_cupy_namespace(xp):
        if k - 1 < CUPY_PARTITION_MAX_KTH:
            import cupy

            return cupy.partition(values, k - 1, axis=1)[:, k - 1 : k]
        return kth_smallest_by_bisection(values, k, xp=xp)
    if array_api_compat.is_numpy_namespace(xp):
        import numpy as np

        return np.partition(values, k - 1, axis=1)[:, k - 1 : k]
    return xpx.partition(values, k - 1, axis=-1, xp=xp)[:, k - 1 : k]


#: CuPy's ``partition`` selects in one kernel below this kth and sorts the
#: whole row from it on (CuPy 13-14), an order of magnitude slower than the
#: distance product.
CUPY_PARTITION_MAX_KTH = 512


def kth_smallest_by_bisection(values: Any, k: int, *, xp: ModuleType) -> Any:
    """k-th smallest value of each row by bisection on its bit pattern: no sort, no sync.

    Floats map to integers of the same width in an order-preserving way
    (negative values get their magnitude bits flipped; ``-0.0`` is first made
    ``+0.0``), and a per-row binary search over that integer range finds the
    smallest key with at least ``k`` keys at or below it: 32 (float32) or 64
    (float64) passes of one comparison and one row sum each, a fixed count, so
    the loop never asks the device anything.

    Needs ``view`` (bit reinterpretation), which NumPy, CuPy and torch have.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> values = xp.asarray([[3.0, -1.0, 2.0, -1.0, 0.5]], dtype=xp.float32)
    >>> kth_smallest_by_bisection(values, 3, xp=xp)
    array([[0.5]], dtype=float32)
    """
    bits = 32 if values.dtype == xp.float32 else 64
    int_type = xp.int32 if bits == 32 else xp.int64
    device = array_api_compat.device(values)
    raw = _view(values + 0.0, int_type)  # + 0.0 turns -0.0 into +0.0
    magnitude = xp.asarray(2 ** (bits - 1) - 1, dtype=int_type, device=device)
    keys = xp.astype(xp.where(raw < 0, raw ^ magnitude, raw), xp.int64)
    # Invariant: count(keys <= low) < k <= count(keys <= high). Only a NaN maps to
    # the smallest integer, so the row minimum minus one never overflows.
    low = xp.min(keys, axis=1, keepdims=True) - 1
    high = xp.max(keys, axis=1, keepdims=True)
    for _ in range(bits + 1):
        # floor((low + high) / 2) without overflowing int64
        middle = low // 2 + high // 2 + (low % 2 + high % 2) // 2
        enough = xp.sum(xp.astype(keys <= middle, xp.int32), axis=1, keepdims=True) >= k
        high = xp.where(enough, middle, high)
        low = xp.where(enough, low, middle)
    kth_key = xp.astype(high, int_type)
    return _view(xp.where(kth_key < 0, kth_key ^ magnitude, kth_key), values.dtype)


def _view(array: Any, dtype: Any) -> Any:
    """Reinterpret the bits of ``array`` as ``dtype`` (same width): NumPy, CuPy, torch."""
    return array.view(dtype)


def _columns_up_to(values: Any, kth_value: Any, k: int, *, xp: ModuleType) -> Any:
    """The k columns of each row under (value, column) order, given the k-th value.

    Standard functions only and no data-dependent branch, so no device sync.
    """
    below = values < kth_value
    num_below = xp.sum(xp.astype(below, xp.int32), axis=1, keepdims=True)
    tied = values == kth_value
    tie_rank = xp.cumulative_sum(xp.astype(tied, xp.int32), axis=1)
    keep = below | (tied & (tie_rank <= k - num_below))
    return columns_of_true(keep, k, xp=xp)


def _smallest_k_columns_numpy(values: Any, k: int, *, xp: ModuleType) -> Any:
    """NumPy fast path: ``partition`` for the k-th value, the exact rule only for rows that need it.

    Where exactly k values are <= the k-th smallest (no tie straddles it),
    those are the answer, and ``nonzero`` lists them in column order.
    Checking that per row costs one comparison; on the host, branching on it
    costs no sync. ``partition`` moves values only: 3x faster than
    ``argpartition`` on rows of ~1000.
    """
    import numpy as np

    rows = values.shape[0]
    kth_value = np.partition(values, k - 1, axis=1)[:, k - 1 : k]
    at_most_kth = values <= kth_value
    ambiguous = np.count_nonzero(at_most_kth, axis=1) != k
    if not ambiguous.any():
        return np.nonzero(at_most_kth)[1].astype(np.int64, copy=False).reshape(rows, k)
    columns = np.empty((rows, k), dtype=np.int64)
    columns[~ambiguous] = np.nonzero(at_most_kth[~ambiguous])[1].reshape(-1, k)
    columns[ambiguous] = _columns_up_to(values[ambiguous], kth_value[ambiguous], k, xp=xp)
    return columns
