"""Distances: the matrix-product form for ranking, direct differences for values.

Ranking uses one matrix product per batch of queries. Each training row is
stored *augmented* with one extra column, and each query row likewise, so
that the product alone yields the ranking key:

* euclidean and sqeuclidean: ``[t, ||t||^2] . [-2 q, 1] = ||t||^2 - 2 q.t``,
  which is ``||q - t||^2`` less ``||q||^2`` (the same for every training row,
  so it does not change the order and is never computed);
* cosine: ``[t / ||t||, 0] . [-q, 1] = -q.t / ||t||``, which orders rows as
  ``1 - cos(q, t)`` does (zero vectors get similarity 0, as in scikit-learn);
* inner_product (maximum inner product search): ``[t, 0] . [-q, 1] = -q.t``.
  The search ranks, re-scores and orders by this *negated* inner product,
  ascending like a distance, so that ties, merges and the Dask path need no
  special case; only the public functions flip the sign back
  (:func:`public_distances`), which lists the largest inner product first.

Padding rows carry the largest finite value in the extra column, so they rank
last (an infinity would make BLAS raise floating-point flags on its own
zero padding).

Half-precision rows (float16, torch's bfloat16) are stored as given: their
keys would carry ~1e-3 relative error, far too coarse for the re-scoring's
candidates to contain the true neighbours. So they are ranked in float32:
the augmented column (and cosine's inverse norms) is kept apart in float32
(:func:`half_ranking_terms`), and each batch's keys are the same product
over chunks of training rows converted to float32 and augmented on the fly
(:func:`half_ranking_keys`): temporaries of a fixed size, never a float32
copy of the training set.

Range: the keys are squared norms, so float32 rows of norm above ~1e19
overflow them, and rows of norm below ~1e-19 underflow them (float64 data
ranked in float32 on a GPU, and bfloat16 rows, alike). Where the training
rows' largest squared norm (after the shift) lies outside
:data:`SAFE_SQ_NORM_RANGE`, the stored rows are scaled by a power of two
(:func:`rank_scale`, exact: the keys are the unscaled ones times ``s**2``,
``s`` for inner_product) and the queries' factor by the same power; the key
bound works in the scaled units (:mod:`knn_gpu._engine.key_bounds`). Data in
the range, nearly all of it, is ranked unscaled, bit for bit as before.

The expansion loses precision in float32 far from the origin, so the training
data is first shifted by its mean rounded to whole numbers (exact for integer
data, and exact by Sterbenz's lemma for points clustered far from the
origin; rows near the origin are rounded by it when the mean is far). The few
selected candidates then get their distances recomputed by direct differences
in float64 (where the device has it), from the training rows as given, which
is what the search returns and orders by; the search certifies that the
candidates held the neighbours (:mod:`knn_gpu._engine.search`).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .._lib.devices import is_gpu, read_number
from .budget import dtype_itemsize
from .gathers import take
from .metrics import REGISTRY

__all__ = [
    "augment_train",
    "augment_queries",
    "rank_scale",
    "query_factor",
    "ranking_keys",
    "half_ranking_terms",
    "half_ranking_keys",
    "rank_chunk_rows",
    "exact_distances",
    "gathered_distances",
    "public_distances",
]


#: Rows per chunk when the float64 column mean is summed at fit, so that the
#: training set is never copied whole in float64 (on the host: cache-sized).
MEAN_CHUNK_ROWS = 8192

#: On a GPU, chunks of that float64 copy take up to this many bytes: each
#: chunk is three kernels of ~5 us, so 8,192-row chunks of 1M rows would
#: launch 369 of them where 8 suffice.
DEVICE_MEAN_CHUNK_BYTES = 2**27


def mean_chunk_rows(num_features: int, on_gpu: bool) -> int:
    """Rows per chunk of :func:`column_mean` and :func:`half_ranking_terms`."""
    if not on_gpu:
        return MEAN_CHUNK_ROWS
    return max(MEAN_CHUNK_ROWS, DEVICE_MEAN_CHUNK_BYTES // (8 * max(1, num_features)))


#: float32 bytes of one chunk of half-precision training rows converted and
#: augmented for the ranking product: on the host small enough to stay in
#: the caches, on a GPU large enough to keep the kernels busy.
HOST_RANK_CHUNK_BYTES = 2**21
DEVICE_RANK_CHUNK_BYTES = 2**26

#: Key column of half-precision padding rows (copies of a real row): far above
#: any real key of half-precision data, and far enough below the largest
#: float32 that adding the row's own product cannot overflow.
HALF_PADDING_KEY = 2.0**120

#: Features per step of the exact re-scoring: its float64 temporaries are
#: (rows, candidates, at most this many features).
EXACT_CHUNK_FEATURES = 64

#: On a GPU (where the whole batch is one step, its size from the memory
#: budget), chunks of up to this many features: a chunk is two or three
#: kernels of ~5 us however small, so d = 128 is one chunk, not two.
DEVICE_EXACT_CHUNK_FEATURES = 256


#: The training rows' largest squared norm (after the shift) within which
#: they are ranked unscaled: far inside float32's range both ways, so that
#: no key, squared norm or product overflows or underflows.
SAFE_SQ_NORM_RANGE = (2.0**-64, 2.0**64)


def rank_scale(largest: float, largest_finite: float = 2.0**128) -> float:
    """A power of two ``s`` with ``s * largest`` in [0.5, 1), or 1.0 for 0.

    ``largest_finite`` is the largest value of the dtype the rows are scaled
    in: ``s`` (and ``2 s``, the queries' factor) stays a factor of 2**28 inside
    its range, so that subnormal rows come out with normal squares.

    Examples
    --------
    >>> rank_scale(3.0e20), rank_scale(3.0e20) * 3.0e20
    (1.6940658945086007e-21, 0.5082197683525802)
    """
    if largest == 0 or not math.isfinite(largest):
        return 1.0
    limit = math.frexp(largest_finite)[1] - 28
    exponent = max(-limit, min(limit, -math.frexp(largest)[1]))
    return math.ldexp(1.0, exponent)


def _needs_scale(largest_sq_norm: Any, *, xp: ModuleType) -> bool:
    """Whether rows whose largest squared norm is the 0-d ``largest_sq_norm`` may need scaling (one host read).

    Zero too: every square may have underflowed (only rows all at the shift
    really are zero; their scale comes out 1.0).
    """
    low, high = SAFE_SQ_NORM_RANGE
    return not low <= read_number(largest_sq_norm, xp=xp) <= high  # inf: overflowed; never NaN (checked finite)


def augment_train(
    train: Any, metric: str, *, xp: ModuleType, exact: Any, sq_norm_bound: Any = None
) -> tuple[Any, Any, float]:
    """Training rows prepared for the ranking product.

    Parameters
    ----------
    train : array, shape (n_samples, n_features), floating
    metric : {"euclidean", "sqeuclidean", "cosine", "inner_product"}
    xp : namespace
    exact : dtype
        The dtype used for the shift (float64 where available).
    sq_norm_bound : 0-d array, optional
        inner_product: the largest squared norm of a training row (what
        decides its scale).

    Returns
    -------
    rows : array, shape (n_samples, n_features + 1), dtype of ``train``
    offset : array, shape (n_features,)
        The shift subtracted from every row (zeros for cosine and inner_product).
    scale : float
        The power of two the shifted rows were multiplied by (1.0 but out
        of :data:`SAFE_SQ_NORM_RANGE`; always 1.0 for cosine's unit rows).
    """
    dtype = train.dtype
    device = array_api_compat.device(train)
    if metric in ("cosine", "inner_product"):
        offset = xp.zeros(train.shape[1], dtype=dtype, device=device)
        factor = unit_rows(train, xp=xp) if metric == "cosine" else train
        scale = 1.0
        if metric == "inner_product" and _needs_scale(sq_norm_bound, xp=xp):
            scale = rank_scale(read_number(xp.max(xp.abs(train)), xp=xp), float(xp.finfo(dtype).max))
            factor = train * scale
        return xp.concat([factor, xp.zeros((train.shape[0], 1), dtype=dtype, device=device)], axis=1), offset, scale
    offset = xp.astype(xp.round(column_mean(train, xp=xp, exact=exact)), dtype)
    centred = train - offset
    with np.errstate(over="ignore"):  # an overflow is the signal to scale (NumPy, array_api_strict would warn)
        sq_norms = xp.vecdot(centred, centred, axis=-1)[:, None]
    scale = 1.0
    if _needs_scale(xp.max(sq_norms), xp=xp):
        scale = rank_scale(read_number(xp.max(xp.abs(centred)), xp=xp), float(xp.finfo(dtype).max))
        centred = centred * scale
        sq_norms = xp.vecdot(centred, centred, axis=-1)[:, None]
    return xp.concat([centred, sq_norms], axis=1), offset, scale


def column_mean(train: Any, *, xp: ModuleType, exact: Any) -> Any:
    """Mean of each column, for the shift of the Euclidean metrics (rounded to whole numbers by the caller).

    On the host: in ``exact`` precision, summed in chunks of
    :func:`mean_chunk_rows` rows (NumPy sums along axis 0 row after row, so a
    float32 sum of many rows would drift). On a GPU, float32 and float64 data
    are summed in their own dtype in one reduction: a GPU's reduction is a
    tree (relative error ~1e-7 x log2(n) in float32), and the shift needs
    only be a whole number near the data (exact for integer data, and by
    Sterbenz's lemma for points clustered far from the origin); a float64
    copy of float32 data costs five passes over it (0.8 ms at 1M x 128).
    Half-precision data is summed in ``exact`` chunks everywhere.
    """
    device = array_api_compat.device(train)
    if is_gpu(xp, device) and train.dtype in (xp.float32, xp.float64):
        return xp.astype(xp.sum(train, axis=0), exact) / train.shape[0]
    total = xp.zeros(train.shape[1], dtype=exact, device=device)
    num_samples = train.shape[0]
    chunk_rows = mean_chunk_rows(train.shape[1], is_gpu(xp, device))
    for start in range(0, num_samples, chunk_rows):
        stop = min(start + chunk_rows, num_samples)  # the standard leaves out-of-range stops undefined
        total = total + xp.sum(xp.astype(train[start:stop, ...], exact), axis=0)
    return total / train.shape[0]


def unit_rows(rows: Any, *, xp: ModuleType) -> Any:
    """Rows scaled to unit length; zero rows stay zero (cosine similarity 0, as in scikit-learn).

    Each row is divided by its largest magnitude first, so that no square
    overflows or underflows (float32 rows of norm ~1e20 or ~1e-30 would get
    an infinite or zero norm): one rounding more per value, well inside the
    key bound's room for the unit rows (:mod:`knn_gpu._engine.key_bounds`).
    """
    scaled, _ = _by_largest(rows, xp=xp)
    norms = xp.linalg.vector_norm(scaled, axis=-1, keepdims=True)
    return scaled / xp.where(norms == 0, xp.ones_like(norms), norms)


def row_norms(rows: Any, *, xp: ModuleType) -> Any:
    """Euclidean norm of each row, without overflow or underflow of the squares (shape (rows,))."""
    scaled, largest = _by_largest(rows, xp=xp)
    return xp.linalg.vector_norm(scaled, axis=-1) * largest[:, 0]


def _by_largest(rows: Any, *, xp: ModuleType) -> tuple[Any, Any]:
    """``(rows / largest, largest)``: each row over its largest magnitude (zero rows over 1)."""
    largest = xp.max(xp.abs(rows), axis=-1, keepdims=True)
    largest = xp.where(largest == 0, xp.ones_like(largest), largest)
    return rows / largest, largest


def augment_queries(queries: Any, metric: str, offset: Any, *, xp: ModuleType, scale: float = 1.0) -> Any:
    """Query rows prepared for the ranking product (see the module notes)."""
    ones = xp.ones((queries.shape[0], 1), dtype=queries.dtype, device=array_api_compat.device(queries))
    return xp.concat([query_factor(queries, metric, offset, xp=xp, scale=scale), ones], axis=1)


def query_factor(queries: Any, metric: str, offset: Any, *, xp: ModuleType, scale: float = 1.0) -> Any:
    """The query side of the ranking product, less its augmented column of ones.

    ``scale`` is the stored rows' (:func:`rank_scale`): the Euclidean factor
    carries it too, so that the keys are the unscaled ones times ``scale**2``.
    """
    if metric in ("cosine", "inner_product"):
        return -queries
    if scale != 1.0:
        return (queries - offset) * (-2.0 * scale)
    return -2 * (queries - offset)


def rank_chunk_rows(num_features: int, on_gpu: bool) -> int:
    """Training rows per chunk of :func:`half_ranking_keys`."""
    chunk_bytes = DEVICE_RANK_CHUNK_BYTES if on_gpu else HOST_RANK_CHUNK_BYTES
    return max(1, chunk_bytes // (4 * (num_features + 1)))


def half_ranking_terms(
    train: Any, metric: str, *, xp: ModuleType, exact: Any, sq_norm_bound: Any = None
) -> tuple[Any, Any, Any, float]:
    """What ranks half-precision training rows in float32, in training order.

    Computed :func:`mean_chunk_rows` rows at a time, so that no float32 copy
    of the training set ever exists.

    Returns
    -------
    offset : array, shape (n_features,), float32
        The shift of the Euclidean metrics (the mean rounded to whole
        numbers); zeros for cosine and inner_product.
    column : array, shape (n_samples,), float32
        The augmented column: ``||s (t - offset)||^2`` (zeros for cosine and
        inner_product).
    scale : array, shape (n_samples,), float32, or None
        Cosine: ``1 / ||t||`` (1 for zero rows); None for the other metrics.
    rank_scale : float
        ``s``, the power of two the shifted rows are ranked scaled by
        (:func:`rank_scale`; bfloat16 has float32's range): 1.0 in
        :data:`SAFE_SQ_NORM_RANGE`.
    """
    device = array_api_compat.device(train)
    num_samples, num_features = train.shape
    float32 = xp.float32
    if metric in ("cosine", "inner_product"):
        offset = xp.zeros(num_features, dtype=float32, device=device)
    else:
        offset = xp.astype(xp.round(column_mean(train, xp=xp, exact=exact)), float32)
    if metric == "inner_product":
        scale = 1.0
        if _needs_scale(sq_norm_bound, xp=xp):
            scale = rank_scale(read_number(xp.astype(xp.max(xp.abs(train)), float32), xp=xp))
        return offset, xp.zeros(num_samples, dtype=float32, device=device), None, scale
    chunk_rows = mean_chunk_rows(num_features, is_gpu(xp, device))

    def chunks(step: Any) -> Any:
        pieces = []
        for start in range(0, num_samples, chunk_rows):
            pieces.append(step(xp.astype(train[start : min(start + chunk_rows, num_samples), ...], float32)))
        return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)

    if metric == "cosine":
        norms = chunks(lambda chunk: row_norms(chunk, xp=xp))
        return (
            offset,
            xp.zeros(num_samples, dtype=float32, device=device),
            1 / xp.where(norms == 0, xp.ones_like(norms), norms),
            1.0,
        )

    def sq_norms(chunk: Any, scale: float = 1.0) -> Any:
        centred = chunk - offset if scale == 1.0 else (chunk - offset) * scale
        return xp.vecdot(centred, centred, axis=-1)

    with np.errstate(over="ignore"):  # an overflow (bfloat16 rows) is the signal to scale
        column = chunks(sq_norms)
    scale = 1.0
    if _needs_scale(xp.max(column), xp=xp):
        scale = rank_scale(read_number(xp.max(chunks(lambda chunk: xp.max(xp.abs(chunk - offset), axis=-1))), xp=xp))
        column = chunks(lambda chunk: sq_norms(chunk, scale))
    return offset, column, None, scale


def half_ranking_keys(
    queries: Any,
    rows: Any,
    column: Any,
    scale: Any,
    offset: Any,
    metric: str,
    *,
    xp: ModuleType,
    out: Any = None,
    rank_scale: float = 1.0,
) -> Any:
    """Float32 ranking keys of half-precision stored rows, chunk by chunk.

    Each chunk of :func:`rank_chunk_rows` stored rows is converted to
    float32, shifted (Euclidean) or scaled to unit length (cosine), given
    its float32 augmented column, and multiplied with the augmented float32
    queries: the keys of the float32 path, without a float32 copy of
    ``rows``.

    Parameters
    ----------
    queries : array, shape (n_queries, n_features)
    rows : array, shape (num_stored, n_features), half precision
    column, scale : arrays, shape (num_stored,), float32 (``scale`` None but for cosine)
    offset : array, shape (n_features,), float32
    metric : str
    xp : namespace
    out : array, shape (n_queries, num_stored), float32, optional
        A buffer to fill (NumPy and CuPy, as for :func:`ranking_keys`).
    rank_scale : float
        The power of two of :func:`half_ranking_terms` (the shifted rows'
        scale).

    Returns
    -------
    array, shape (n_queries, num_stored), float32
    """
    device = array_api_compat.device(rows)
    float32 = xp.float32
    query_rows = augment_queries(xp.astype(queries, float32), metric, offset, xp=xp, scale=rank_scale)
    num_stored, num_features = rows.shape
    keys = out
    if keys is None:
        keys = xp.empty((queries.shape[0], num_stored), dtype=float32, device=device)
    chunk_rows = rank_chunk_rows(num_features, is_gpu(xp, device))
    for start in range(0, num_stored, chunk_rows):
        stop = min(start + chunk_rows, num_stored)
        chunk = xp.astype(rows[start:stop, ...], float32)
        if metric == "cosine":
            chunk = chunk * scale[start:stop, None]
        elif metric != "inner_product":
            chunk = chunk - offset
        if rank_scale != 1.0:
            chunk = chunk * rank_scale
        chunk = xp.concat([chunk, column[start:stop, None]], axis=1)
        if out is not None:
            ranking_keys(query_rows, chunk, xp=xp, out=keys[:, start:stop])
        else:  # a slice of an array made here: the one in-place write the standard has
            keys[:, start:stop] = ranking_keys(query_rows, chunk, xp=xp)
    return keys


def ranking_keys(query_rows: Any, train_rows: Any, *, xp: ModuleType, out: Any = None) -> Any:
    """Keys whose order per row is the order of distances: one matrix product.

    ``out`` (NumPy and CuPy only) reuses one buffer across batches, which
    spares the allocator and the page faults of a fresh block per batch.
    """
    if out is not None:
        if array_api_compat.is_cupy_namespace(xp):
            import cupy as native
        else:
            import numpy as native
        return native.matmul(query_rows, train_rows.T, out=out)
    return xp.matmul(query_rows, xp.matrix_transpose(train_rows))


#: On the host, :func:`gathered_distances` gathers the candidate rows of this
#: many bytes at a time (cache-resident between the gather and the
#: re-scoring): 2,000 queries x 136 candidates x 768 features took 0.74 s
#: gathered whole, 0.42 s gathered in such steps.
HOST_GATHER_BYTES = 2**20


def gathered_distances(
    queries: Any,
    rows: Any,
    positions: Any,
    metric: str,
    offset: Any,
    *,
    xp: ModuleType,
    exact: Any,
) -> Any:
    """:func:`exact_distances` of each query to ``rows[positions[i]]``: shape of ``positions``, ``exact``.

    ``positions`` is (n_queries, num_candidates) int64 rows of ``rows``
    (n_rows, n_features). On a device the candidates are gathered in one
    ``take``; on the host in steps of about :data:`HOST_GATHER_BYTES`, each
    re-scored while it is still in the caches (the whole gather is as large
    as queries x candidates x features: 0.8 GB at 2,000 x 136 x 768).
    """
    num_queries, num_candidates = positions.shape
    num_features = rows.shape[1]
    step = num_queries
    if not is_gpu(xp, array_api_compat.device(rows)):
        row_bytes = num_candidates * num_features * dtype_itemsize(xp, rows.dtype)
        step = max(1, min(num_queries, HOST_GATHER_BYTES // max(1, row_bytes)))
    pieces = []
    for start in range(0, num_queries, step):
        stop = min(start + step, num_queries)
        candidates = take(rows, xp.reshape(positions[start:stop, ...], (-1,)), axis=0, xp=xp)
        candidates = xp.reshape(candidates, (stop - start, num_candidates, num_features))
        pieces.append(exact_distances(queries[start:stop, ...], candidates, metric, offset, xp=xp, exact=exact))
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)


def exact_distances(
    queries: Any,
    candidates: Any,
    metric: str,
    offset: Any,
    *,
    xp: ModuleType,
    exact: Any,
) -> Any:
    """Distances from each query to its candidate rows, by direct differences.

    Parameters
    ----------
    queries : array, shape (rows, n_features)
        Raw (unshifted) queries.
    candidates : array, shape (rows, num_candidates, n_features)
        Stored training rows (shifted for the Euclidean metrics, unit length
        or as given for cosine, as given for inner_product), without the
        augmented column.
    metric : str
    offset : array, shape (n_features,), or None
        The shift of the candidates (None: the rows as given, unshifted).
    xp : namespace
    exact : dtype
        Precision of the computation.

    Returns
    -------
    array, shape (rows, num_candidates), dtype ``exact``
        In the metric's own units, never NaN: never negative, except for
        inner_product, whose value is the *negated* inner product ``-q.c``
        (see :func:`public_distances`).

    Notes
    -----
    The arithmetic is O(rows x num_candidates x n_features), done
    :data:`EXACT_CHUNK_FEATURES` features at a time, so that the temporaries in
    ``exact`` precision stay (rows, num_candidates, 64)-sized whatever the
    dimension.
    """
    if metric == "inner_product":
        return -_rescore_in_steps(xp.astype(queries, exact), candidates, _dot, xp=xp, exact=exact)
    if metric == "cosine":
        # q.t / (||q|| ||t||), one division, as scipy and the oracle: exact ties stay ties on integer data.
        queries = xp.astype(queries, exact)
        parts = _rescore_in_steps(queries, candidates, _dot_and_square_norm, xp=xp, exact=exact)
        dots, candidate_sq_norms = parts[..., 0], parts[..., 1]
        norms = xp.linalg.vector_norm(queries, axis=-1, keepdims=True) * xp.sqrt(candidate_sq_norms)
        similarity = dots / xp.where(norms == 0, xp.ones_like(norms), norms)  # a zero vector: similarity 0
        # A clamp by maximum/minimum: the generic clip of array-api-compat assigns through boolean masks (host syncs).
        zero = xp.zeros((), dtype=exact, device=array_api_compat.device(queries))
        return xp.minimum(xp.maximum(1 - similarity, zero), zero + 2)
    # The stored rows were shifted in the data's own dtype: shift the queries the same way, so that a
    # query equal to a training row has the same bits, and distance exactly 0 (float32 data too).
    if offset is None:
        shifted = xp.astype(queries, exact)
    else:
        shifted = xp.astype(queries - xp.astype(offset, queries.dtype, copy=False), exact)
    squared = _rescore_in_steps(shifted, candidates, _squared_distance, xp=xp, exact=exact)
    if metric == "euclidean":
        return xp.sqrt(squared)
    return squared


#: On the host, the exact re-scoring steps through a batch's rows so that each
#: step's float64 temporary stays about this size (cache-resident: 3.6x faster
#: than one pass over the batch at 64 queries x 2,000 candidates x 64).
HOST_STEP_BYTES = 2**20


def _squared_distance(queries: Any, candidates: Any, *, xp: ModuleType, exact: Any) -> Any:
    """``||q - c||^2`` per candidate; the subtraction promotes float32 rows to ``exact``."""
    difference = queries[:, None, :] - candidates
    if difference.dtype != exact:
        difference = xp.astype(difference, exact)
    return xp.vecdot(difference, difference, axis=-1)


def _dot(queries: Any, candidates: Any, *, xp: ModuleType, exact: Any) -> Any:
    """``q . c`` per candidate, in ``exact``."""
    return xp.vecdot(queries[:, None, :], xp.astype(candidates, exact), axis=-1)


def _dot_and_square_norm(queries: Any, candidates: Any, *, xp: ModuleType, exact: Any) -> Any:
    """``(q . c, ||c||^2)`` per candidate, stacked on a last axis of 2."""
    candidates = xp.astype(candidates, exact)
    return xp.stack(
        [xp.vecdot(queries[:, None, :], candidates, axis=-1), xp.vecdot(candidates, candidates, axis=-1)], axis=-1
    )


def _rescore_in_steps(queries: Any, candidates: Any, term: Any, *, xp: ModuleType, exact: Any) -> Any:
    """``term`` summed over features, :data:`EXACT_CHUNK_FEATURES` at a time, for row steps of the batch.

    Each step's temporaries are (step rows, candidates, at most 64 features;
    :data:`DEVICE_EXACT_CHUNK_FEATURES` on a GPU) in ``exact``: a fixed bound
    whatever the dimension. On the host a step
    holds about :data:`HOST_STEP_BYTES`; on a device the whole batch is one
    step (its size already comes from the memory budget).
    """
    rows, num_candidates, num_features = candidates.shape
    on_gpu = is_gpu(xp, array_api_compat.device(candidates))
    chunk = min(num_features, DEVICE_EXACT_CHUNK_FEATURES if on_gpu else EXACT_CHUNK_FEATURES)
    step = rows
    if not on_gpu:
        step = max(1, min(rows, HOST_STEP_BYTES // (num_candidates * chunk * 8)))
    pieces = []
    for row in range(0, rows, step):
        row_stop = min(row + step, rows)
        total = None
        for start in range(0, num_features, chunk):
            stop = min(start + chunk, num_features)
            part = term(queries[row:row_stop, start:stop], candidates[row:row_stop, :, start:stop], xp=xp, exact=exact)
            total = part if total is None else total + part
        pieces.append(total)
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0)


def public_distances(distances: Any, metric: str) -> Any:
    """What the public functions return for the search's internal distances.

    The search orders by ascending distance; for ``"inner_product"`` that is
    the negated inner product, so the inner products themselves, largest
    first (as FAISS's ``IndexFlatIP`` returns them), are its negation in the
    same order. Other metrics are returned as they are. Works on any array
    type, Dask's lazy arrays included.

    Examples
    --------
    >>> import numpy as np
    >>> public_distances(np.array([[-3.0, -1.0]]), "inner_product")
    array([[3., 1.]])
    """
    entry = REGISTRY.get(metric) if isinstance(metric, str) else None
    return -distances if entry is not None and entry.similarity else distances
