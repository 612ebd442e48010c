"""How far a ranking key can be from the distance it ranks by: one bound for both searches.

The radius search keeps every row whose key is at most the radius in key
units plus this margin; the k-search *certifies* its candidates with it
(a query's k-th exact distance turned into key units: every row left out
has a larger key, so where that key exceeds the bound no row left out can
be nearer, and the answer equals the float64 oracle's).

Safety margin. A key is the float32 (float16/bfloat16 data: float32; float64
data: float32) product of an augmented query row ``a`` and an
augmented stored row ``b``. Any summation order of ``d + 1`` products errs by
at most ``gamma_{d+1} * sum |a_j| |b_j|`` (Higham, *Accuracy and Stability of
Numerical Algorithms*, 3.1), ``gamma_n = n u / (1 - n u)``, ``u`` half the
rank dtype's epsilon; the rounding of the query's shift, of a float64 query
to float32, of the stored rows and of their squared norms adds a few ``u``
per term. With ``q'`` the shifted query, ``M`` a bound on the norm of the
shifted training rows that matter and Cauchy-Schwarz for the sums, the
Euclidean key errs by less than::

    2 gamma_{d+4} (3 M^2 + (6 ||q'|| + 2 c ||q||) M) + 2 gamma'_{d+4} (||q'||^2 + r^2)

``c`` = 1 when float64 queries are ranked in float32 (else 0), ``r`` the
radius in distance units, and the last term (``gamma'`` of the exact dtype)
the rounding of ``r^2 - ||q'||^2`` itself, which matters only on devices
without float64. Only rows within ``r`` matter, and by the triangle
inequality their shifted norms are at most ``B = ||q'|| + r``: so ``M = B``,
not the largest norm of the training set (one far outlier would otherwise
widen every query's margin). With ``||q'|| <= B`` and
``||q'||^2 + r^2 <= B^2`` the margin, and the room for rounding
``r^2 - ||q'||^2`` to the rank dtype, fold into::

    margin = (18 gamma + 2 gamma' + 2 u) B^2 + 4 c gamma ||q|| B

(times ``1 + 2^-10`` for the rounding of ``B`` itself): a dozen small
operations per batch, which on a GPU are a dozen kernel launches. For ``cosine`` the
key is ``-q . t_hat``, ``t_hat`` the stored unit row, and the margin is
``6 gamma_{d+4} ||q||`` (the product's rounding and ``||t_hat||`` being one
within a few ``u``). The factor 2 and the extra terms leave room above the
bound; a margin too large costs only extra candidates, re-scored and dropped.
The bound assumes float32 products are rounded as float32 (no TF32, which
torch and CuPy leave off for matrix products by default).

Split ranking (:mod:`knn_gpu._engine.split_ranking`): the products are
sums of bfloat16 pieces that may be accumulated by truncation, so ``gamma``
is taken with twice float32's unit roundoff, and what the split drops
(``DROPPED * sum |a_j| |b_j|``, with ``sum |a_j| |b_j| <= 3 B^2`` for the
Euclidean keys, ``||q||`` for cosine, ``||q|| M`` for inner_product) is
added.

Units: where the index ranks rows scaled by a power of two ``s``
(:func:`knn_gpu._engine.distances.rank_scale`: rows whose squared norms
would overflow or underflow the rank dtype), the keys are the unscaled ones
times ``s**2`` (``s`` for inner_product). The thresholds are computed in the
same units: the shifted query and the radius times ``s`` (exact, a power of
two) before the bound, which is homogeneous. Underflow is outside Higham's
relative bound, so every threshold carries :func:`underflow_room` too.

For ``inner_product`` the key is ``-q . t`` itself (the stored rows as
given), and the margin is ``6 gamma_{d+4} ||q|| M + 2 gamma' ||q|| M`` with
``M`` the largest norm of a training row, kept by the index at build time
(the stored column is zeros there).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.devices import is_gpu
from .distances import HALF_PADDING_KEY, mean_chunk_rows
from .split_ranking import ACCUMULATION_UNIT, DROPPED, SPLIT_PADDING_KEY

#: Training rows per chunk of :func:`max_row_sq_norm` on the host.
HOST_NORM_CHUNK_ROWS = 1024

__all__ = ["unit_roundoff", "gamma", "max_row_sq_norm", "key_thresholds", "padding_key", "underflow_room"]


def unit_roundoff(dtype: Any, xp: ModuleType) -> float:
    """``u``: half the machine epsilon of floating ``dtype``."""
    return float(xp.finfo(dtype).eps) / 2


def gamma(terms: int, dtype: Any, xp: ModuleType) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` for ``dtype``'s unit roundoff ``u``."""
    return gamma_of_unit(terms, unit_roundoff(dtype, xp))


def gamma_of_unit(terms: int, unit: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` for a unit roundoff ``u`` given as a number."""
    return terms * unit / (1 - terms * unit)


def padding_key(index: Any) -> float:
    """The key column of the index's padding rows: every real key is below it."""
    if index.key_column is not None:
        return HALF_PADDING_KEY
    if index.split_rows is not None:
        return SPLIT_PADDING_KEY
    return float(index.xp.finfo(index.rows.dtype).max)


def max_row_sq_norm(train: Any, *, xp: ModuleType, exact: Any) -> Any:
    """Largest squared norm of a training row, in ``exact`` (0-d), summed in chunks of rows.

    The chunks (:data:`HOST_NORM_CHUNK_ROWS` rows on the host,
    :func:`knn_gpu._engine.distances.mean_chunk_rows` on a GPU) keep the
    exact-dtype temporaries small whatever the training set's size.
    """
    device = array_api_compat.device(train)
    num_samples = train.shape[0]
    # On the host a small chunk: its exact copy stays in the caches and adds little to a build's peak.
    chunk_rows = mean_chunk_rows(train.shape[1], True) if is_gpu(xp, device) else HOST_NORM_CHUNK_ROWS
    largest = xp.zeros((), dtype=exact, device=device)
    for start in range(0, num_samples, chunk_rows):
        chunk = xp.astype(train[start : min(start + chunk_rows, num_samples), ...], exact)
        largest = xp.maximum(largest, xp.max(xp.vecdot(chunk, chunk, axis=-1)))
    return largest


def key_thresholds(index: Any, queries: Any, radius: Any, *, in_rank: bool = True) -> Any:
    """Per query, the largest key a training row within ``radius`` can have (the module notes).

    Parameters
    ----------
    index : TrainIndex
    queries : array, shape (rows, n_features)
    radius : float or array, shape (rows,)
        In the metric's units, ``>= 0`` (infinity allowed; for
        ``inner_product`` the negated inner product, of any sign): one for
        every query, or one per query (the exact dtype, on the index's
        device).
    in_rank : bool
        Answer in the rank dtype (for a mask over the keys), else in the
        exact dtype (for a few comparisons: three kernels fewer on a GPU).

    Returns
    -------
    array, shape (rows, 1), the rank dtype (or the exact dtype)
        Rounded up from the exact dtype, at most the rank dtype's largest
        finite value (so that padding rows may pass, to be dropped later).
    """
    xp = index.xp
    exact = index.exact
    rank = index.rank_dtype
    num_features = index.num_features
    rank_gamma = gamma(num_features + 4, rank, xp)
    exact_gamma = gamma(num_features + 4, exact, xp)
    # Split ranking (split_ranking.py): sums that may truncate, and what the split drops, relative to
    # sum |a_j| |b_j| (plus room for two float32 additions; the two GEMMs' results are added once).
    split = 0.0
    if index.split_rows is not None:
        rank_gamma = gamma_of_unit(num_features + 4, ACCUMULATION_UNIT)
        split = (DROPPED + 2 * ACCUMULATION_UNIT) * (1 + 2.0**-10)
    scale = index.rank_scale  # keys are in scaled units (distances.rank_scale): scale**2, inner_product scale
    queries = xp.astype(queries, exact)
    radius = radius if isinstance(radius, float) else radius[:, None]
    if index.metric == "cosine":
        norms = xp.linalg.vector_norm(queries, axis=-1, keepdims=True)
        # Distances never exceed 2: a larger radius is 2 (and (r - 1) * 0 stays finite).
        capped = min(radius, 2.0) if isinstance(radius, float) else xp.clip(radius, max=2.0)
        threshold = (capped - 1.0) * norms
        margin = (6 * rank_gamma + 2 * exact_gamma + 2 * split) * norms  # sum |q_j| |t_j| <= ||q|| (1 + few u)
    elif index.metric == "inner_product":
        # The largest squared norm of a training row, read by the index at build (max_row_sq_norm).
        products = xp.linalg.vector_norm(queries, axis=-1, keepdims=True) * (xp.sqrt(index.sq_norm_bound) * scale)
        threshold = radius * scale
        margin = (6 * rank_gamma + 2 * exact_gamma + split) * products
    else:
        offset = index.offset if index.key_column is None else index.rank_offset
        shifted = queries - xp.astype(offset, exact)
        if scale != 1.0:
            shifted = shifted * scale
        sq_norms = xp.vecdot(shifted, shifted, axis=-1)[:, None]
        reach = radius * scale if index.metric == "euclidean" else radius**0.5 * scale
        in_key_units = reach * reach if index.metric == "euclidean" else radius * (scale * scale)
        bound = xp.sqrt(sq_norms) + reach  # the norm of a shifted row within reach (the module notes)
        # sum |a_j| |b_j| = 2 |q'|.|t'| + ||t'||^2 <= 3 B^2: the split's share is 3 split B^2.
        factor = (18 * rank_gamma + 2 * exact_gamma + 2 * unit_roundoff(rank, xp) + 3 * split) * (1 + 2.0**-10)
        upper = (in_key_units - sq_norms) + (factor * (bound * bound) + underflow_room(num_features, rank, xp))
        if index.key_column is None and rank != index.data_dtype:
            query_norms = xp.linalg.vector_norm(queries, axis=-1, keepdims=True) * scale
            upper = upper + (4 * rank_gamma) * query_norms * bound
        return _clamped(upper, rank, xp) if in_rank else upper
    # The cast to the rank dtype rounds to nearest: room for it, then a clamp to its range.
    upper = (
        threshold + (margin + underflow_room(num_features, rank, xp)) + 2 * unit_roundoff(rank, xp) * xp.abs(threshold)
    )
    return _clamped(upper, rank, xp) if in_rank else upper


def underflow_room(num_features: int, rank: Any, xp: ModuleType) -> float:
    """What underflow can add to a key's error: ``8 (d + 4)`` times the rank dtype's smallest subnormal.

    Each product and each term of a query's factor that underflows errs by
    at most half the smallest subnormal ``eta`` (sums of subnormals are
    exact), on top of the relative bound: for ``d + 4`` terms, far less than
    this. It matters only for keys near zero (rows of tiny norm the scale
    could not lift), where it makes the certificate fall back rather than
    trust keys that underflowed.
    """
    info = xp.finfo(rank)
    return 8.0 * (num_features + 4) * float(info.smallest_normal) * float(info.eps)


def _clamped(upper: Any, rank: Any, xp: ModuleType) -> Any:
    """``upper`` in the rank dtype, at most its largest finite value (so that padding rows may pass)."""
    largest = xp.full_like(upper, float(xp.finfo(rank).max))  # not asarray: no host-data copy to the device
    return xp.astype(xp.minimum(upper, largest), rank)
