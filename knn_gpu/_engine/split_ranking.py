"""Ranking keys from bfloat16 pieces: float32 accuracy at tensor-core rates (issue 17, item 5).

A float32 value ``x`` splits into two values of 8 significant bits,
``x = hi + lo + r`` with ``|r| <= 2**-16 |x|`` (two Veltkamp splits: standard
arithmetic, exact, on every namespace). Each piece is a bfloat16 value, so
a product of two pieces is exact in float32, and the ranking product

    a . b  ~  hi_a . hi_b + [hi_a, lo_a] . [lo_b, hi_b]

is two matrix products of bfloat16 pieces accumulated in float32 (three
times the float32 product's FLOPs): what a GPU's tensor cores do at 8-16
times their float32 rate (an H100/H200: ~990 TFLOP/s dense bfloat16 against
~67 float32). On torch-CUDA the pieces are cast to bfloat16 (exact) and
multiplied by ``torch.mm`` and ``torch.addmm`` with ``out_dtype=float32``;
everywhere else (the CPU proofs) by float32 products of the same pieces,
which are the same exact products. The stored pieces ``[lo, hi]`` take as
many bytes as the float32 rows.

What the split drops, ``lo_a . lo_b + hi_a . r_b + r_a . hi_b + ...``, is at
most :data:`DROPPED` ``* sum |a_j| |b_j|``; tensor cores may accumulate by
truncation, so the products' float32 sums are bounded with twice float32's
unit roundoff (:data:`ACCUMULATION_UNIT`). The key bound of
:mod:`knn_gpu._engine.key_bounds` carries both, so the certificate (and the
exact re-scoring) keeps the neighbours the float64 oracle's: this changes
speed only. The keys are coarser than float32 products in practice (each
term loses up to 2**-16 where float32 rounds by 2**-24), but the worst-case
bound the certificate uses grows less: at d = 768 the split's term is ~6 %
of the float32 bound (18 gamma_{d+4} = 8.3e-4 against 3 x 4.7e-5, before
doubling gamma for truncation); at d = 64, ~50 %.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.devices import is_gpu

__all__ = [
    "split_pieces",
    "query_pieces",
    "stored_pieces",
    "split_product",
    "DROPPED",
    "ACCUMULATION_UNIT",
    "SPLIT_PADDING_KEY",
]

#: Bound on what the split drops, relative to ``sum |a_j| |b_j|``:
#: ``lo.lo`` (2**-16 (1 + 2**-8)**2), ``hi.r`` and ``r.hi`` (2**-16 (1 + 2**-8) each),
#: and the products of two remainders or a remainder and a ``lo`` (below 2**-23).
DROPPED = 3.1 * 2.0**-16

#: Unit roundoff of the pieces' float32 accumulation: twice float32's, since
#: tensor cores may truncate rather than round (Fasi et al., 2021).
ACCUMULATION_UNIT = 2.0**-23

#: Key column of padding rows under split ranking: far above any real key of the scaled rows, and
#: far enough below float32's largest value that the splitter (x (2**16 + 1)) stays finite.
SPLIT_PADDING_KEY = 2.0**100

#: Veltkamp's constant for float32: ``2**16 + 1`` leaves 24 - 16 = 8 significant bits in ``hi``.
_SPLITTER = 2.0**16 + 1


def _high_part(x: Any) -> Any:
    """``x`` rounded to 8 significant bits (Veltkamp), exactly, in ``x``'s float32."""
    scaled = x * _SPLITTER
    return scaled - (scaled - x)


def split_pieces(x: Any, *, xp: ModuleType) -> tuple[Any, Any]:
    """``(hi, lo)``: float32 values of 8 significant bits each, ``|x - hi - lo| <= 2**-16 |x|``.

    ``x`` is float32; values beyond ~5e33 overflow the splitter (their keys
    come out infinite, which the certificate never trusts).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> hi, lo = split_pieces(xp.asarray([1.0 + 2.0**-10 + 2.0**-20], dtype=xp.float32), xp=xp)
    >>> float(hi[0]) == 1.0, float(lo[0]) == 2.0**-10
    (True, True)
    """
    hi = _high_part(x)
    return hi, _high_part(x - hi)  # x - hi is exact (Sterbenz / the split's property)


def split_product(a: tuple[Any, Any], b: tuple[Any, Any], *, xp: ModuleType) -> Any:
    """``hi_a . hi_b^T + [hi_a, lo_a] . [lo_b, hi_b]^T`` in float32: shape (rows of a, rows of b).

    ``a`` is :func:`query_pieces`, ``b`` :func:`stored_pieces` of float32
    matrices (rows, features). Two GEMMs: the large terms, then the two
    small ones in one product of twice the features, added to the first
    (cuBLAS's ``beta = 1``). The first sum is bounded as a float32 product,
    the second's terms are ~2**-8 of it, and the addition rounds once. On
    torch-CUDA the pieces are bfloat16 and the GEMMs run on tensor cores with
    a float32 output; elsewhere float32 products of the same pieces.
    """
    (a_hi, a_pair), (b_hi, b_pair) = a, b
    if _bfloat16_gemm(xp, a_hi):
        import torch

        large = _tensor_core_mm(a_hi, b_hi.T, out_dtype=torch.float32)
        return _tensor_core_addmm(large, a_pair, b_pair.T, out_dtype=torch.float32)
    large = xp.matmul(a_hi, xp.matrix_transpose(b_hi))
    return large + xp.matmul(a_pair, xp.matrix_transpose(b_pair))


def query_pieces(x: Any, *, xp: ModuleType) -> tuple[Any, Any]:
    """``(hi, [hi, lo])`` of float32 rows ``x``: bfloat16 on torch-CUDA (exact casts), else float32."""
    hi, lo = _in_gemm_dtype(split_pieces(x, xp=xp), x, xp=xp)
    return hi, xp.concat([hi, lo], axis=1)


def stored_pieces(x: Any, *, xp: ModuleType) -> tuple[Any, Any]:
    """``(hi, [lo, hi])`` of the stored float32 rows ``x``; ``hi`` a view into the pair (no second copy)."""
    hi, lo = _in_gemm_dtype(split_pieces(x, xp=xp), x, xp=xp)
    lo_hi = xp.concat([lo, hi], axis=1)
    return lo_hi[:, x.shape[1] :], lo_hi


def _in_gemm_dtype(pieces: tuple[Any, Any], x: Any, *, xp: ModuleType) -> tuple[Any, Any]:
    """The pieces as bfloat16 on torch-CUDA (exact: 8 significant bits, float32's exponents), else as they are."""
    if _bfloat16_gemm(xp, x):
        return xp.astype(pieces[0], xp.bfloat16), xp.astype(pieces[1], xp.bfloat16)
    return pieces


def _tensor_core_mm(left: Any, right: Any, *, out_dtype: Any) -> Any:
    """``torch.mm`` of bfloat16 matrices with a float32 result (cuBLAS; torch has no CPU kernel for it)."""
    import torch

    return torch.mm(left, right, out_dtype=out_dtype)


def _tensor_core_addmm(bias: Any, left: Any, right: Any, *, out_dtype: Any) -> Any:
    """``bias + left @ right`` for bfloat16 ``left``, ``right`` and a float32 ``bias`` and result."""
    import torch

    return torch.addmm(bias, left, right, out_dtype=out_dtype)


def _bfloat16_gemm(xp: ModuleType, x: Any) -> bool:
    """torch on a GPU: bfloat16 GEMMs with float32 output (``torch.mm(out_dtype=)``)."""
    return array_api_compat.is_torch_namespace(xp) and is_gpu(xp, array_api_compat.device(x))
