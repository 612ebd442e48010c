"""Exact k-nearest-neighbour search in batches of queries.

Data flows one way: the training set is prepared once (:func:`build_index`),
then each batch of queries goes ranking product -> block prefilter -> top-k
candidates -> exact distances -> final order (:func:`search_index`), and
optionally straight on to a per-batch reduction (a vote, a mean), so that no
temporary of a prediction outgrows the batch.

The prefilter makes selection cheap. The training rows are split into blocks
of consecutive rows; the k nearest neighbours lie in the k blocks whose
smallest key is smallest (ties to the lower block), so only those blocks'
keys are searched. The best block size depends on k (about
``sqrt(n / candidates)`` rows balances the block minima against the
candidates' keys), so it is chosen *per search*: the index stores *fine*
blocks of ``fine_block_size`` rows, and a search merges ``group`` consecutive
fine blocks (a power of two up to ``max_group``) into one block.

Layout: fine block ``b`` (training rows ``b * S0 .. b * S0 + S0 - 1``) keeps
row ``i`` at stored row ``i * B0 + position[b]``, where the fine blocks'
positions are *bit-reversed* within each run of ``max_group`` blocks. With
that order, for every power-of-two group the members of each merged block sit
``B0 / group`` columns apart in the (rows, S0 * B0) key matrix, so the merged
blocks' minima are one reduction over the middle axis of a
``(rows, S0 * group, B0 / group)`` view: vectorised, and as cheap for every k
as a layout tuned for one k.

Ordering contract: ascending distance, equal distances -> lower training
index. Every step breaks ties by index, so integer data gives identical
indices on every backend.

Certificate: the keys are rounded (float32 products, and the shift rounds
rows near the origin), so the candidates hold the true neighbours only when
the keys separate them. Each batch checks it per query, without a host read:
every row left out has a key at least the candidates' largest, and where that
key exceeds the largest key a row within the k-th exact distance can have
(:mod:`knn_gpu._engine.key_bounds`, the radius search's bound), no row left
out can be as near. After the last batch the search reads one count, the
queries left uncertified, and answers those again (:func:`answer_uncertified`):
with eight times the candidates (the bound is a worst case growing with the
dimension, so at d = 768 about 0.4 % of random queries need this), and what
that still leaves by exact distances to every training row
(:func:`exact_neighbors`). The candidates are re-scored from the training
rows as given (``exact_rows``), not from the shifted ones. So the indices are the
float64 oracle's (ties to the lower index), rows beyond float32's range
included (they are ranked scaled by a power of two:
:func:`knn_gpu._engine.distances.rank_scale`): data the keys cannot
separate (a tight cluster far from the training mean, rows of large norm with
nearly equal inner products, float64 data tied below float32's precision)
costs a brute-force search of the queries concerned
(tests/test_certified_ranking.py).

Half precision: float16 and bfloat16 rows are stored as given (no float32
copy) and ranked in float32 chunk by chunk, the augmented column kept apart
in float32 (:func:`knn_gpu._engine.distances.half_ranking_keys`); the candidates
are re-scored in float64 from the half-precision rows, and the distances
returned are float32.

Memory: every temporary of a batch is counted (:func:`batch_bytes_per_query`):
the keys, the prefilter's index arrays, the candidates' rows and the exact
re-scoring's float64 chunks, plus what a reduction declares; the batch size
is the budget, less the few fixed-size temporaries of a batch
(:func:`batch_fixed_bytes`), divided by that. On a GPU the budget is half the device's free
memory, read under the data's device before the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .._lib.devices import device_scope, is_gpu, read_counts
from .._lib.validation import exact_dtype, is_half_precision
from .batches import halving_batches
from .budget import DEFAULT_MEMORY_BUDGET, available_cores, default_memory_budget, dtype_itemsize, run_in_shares
from .direct import DirectIndex, StoredRows, build_direct_index, is_direct, search_direct
from .distances import (
    DEVICE_EXACT_CHUNK_FEATURES,
    HALF_PADDING_KEY,
    augment_queries,
    augment_train,
    exact_distances,
    gathered_distances,
    half_ranking_keys,
    half_ranking_terms,
    query_factor,
    rank_chunk_rows,
    ranking_keys,
)
from .gathers import take, take_along_axis, take_from_rows
from .key_bounds import key_thresholds, max_row_sq_norm, padding_key
from .metrics import prepare_state, resolve
from .split_ranking import SPLIT_PADDING_KEY, query_pieces, split_product, stored_pieces
from .topk import positions_of_true, smallest_k_columns

__all__ = [
    "TrainIndex",
    "BlockPlan",
    "build_index",
    "search_index",
    "plan_blocks",
    "default_batch_rows",
    "batch_bytes_per_query",
    "batch_fixed_bytes",
    "batch_keys",
    "keys_bytes_per_query",
    "search_workers",
    "search_batches",
    "settle_uncertified",
    "exact_neighbors",
    "answer_uncertified",
    "DEFAULT_MEMORY_BUDGET",
]

#: A worker thread is worth starting for at least this many ranking keys and
#: queries. Smaller shares gain less than they lose: right after a multi-threaded
#: BLAS call, OpenBLAS's idle threads spin for a while and compete with the
#: workers (2,000 queries x 25,000 rows: 90 ms after a pause, 136 ms after a
#: product, against 114 ms on one thread); thin batches also slow the product.
MIN_KEYS_PER_WORKER = 2**26
MIN_QUERIES_PER_WORKER = 512

#: Most queries per batch on NumPy: larger batches' keys spill out of the CPU
#: caches between the product and the selection (4,000 queries x 10,000-25,000
#: rows ran 15-40 % slower in batches of 1,000-2,000 than of 512).
HOST_MAX_BATCH_ROWS = 512

#: Candidates recomputed exactly beyond k: at least this many, ``k`` itself up
#: to :data:`FULL_MARGIN_UP_TO`, and the rows of the key bound's shell above
#: (:data:`SHELL_FACTOR`, :func:`candidate_count`).
EXTRA_CANDIDATES = 8
FULL_MARGIN_UP_TO = 32

#: The shell's rows: ``SHELL_FACTOR * k * d * (d + 4) * u`` (u of float32), fitted so that random
#: data falls back for under 1 % of its queries at 50,000 x 768, k = 100 (32 rows beyond k there
#: left 8 of 2,000 uncertified, 16 rows 1,522; the formula gives 36).
SHELL_FACTOR = 10

#: Most fine blocks merged into one block; the fine block count is a multiple of it.
MAX_GROUP = 64

#: Fine blocks hold about ``sqrt(n / FINE_BLOCK_DIVISOR)`` rows: small enough
#: that k in the thousands still prunes most blocks at 10^5 rows, while
#: ``MAX_GROUP`` merged fine blocks still reach the best size for k = 10 up to
#: ~10^7 rows.
FINE_BLOCK_DIVISOR = 4096


@dataclass(frozen=True)
class TrainIndex(StoredRows):
    """A training set prepared for searching, on its own namespace and device.

    ``rows`` are in the ranking dtype (float32 for float64 data),
    shifted and augmented. ``exact_rows`` is the training set as given (no
    copy: unshifted, in training order, the data's dtype), which the exact
    re-scoring reads, so that distances are those of the rows as given (the
    shift rounds rows near the origin when the mean is far from it, and
    cosine's stored rows are rounded unit rows). None for half precision,
    whose stored rows are the rows as given.

    Half-precision data (float16, bfloat16) is stored as given: ``rows`` are
    the training rows themselves, unshifted and without the augmented column
    (``offset`` is zeros), and ``key_column``, ``row_scale`` and
    ``rank_offset`` hold in float32 what ranks them in float32.

    On a GPU, where every kernel costs ~5 us whatever its size, the index
    keeps what spares a batch a dozen small kernels: ``train_of_stored``
    (8 bytes a row), and for torch ``rank_bias``, the augmented column as the
    bias of one ``addmm`` (the query rows are then neither scaled nor
    augmented per batch).
    """

    device: Any
    metric: str
    num_samples: int
    num_features: int
    fine_block_size: int
    num_fine_blocks: int
    max_group: int
    rows: Any  # (num_fine_blocks * fine_block_size, num_features + 1), see the module notes
    block_position: Any  # (num_fine_blocks,) int64: column of fine block b in the (S0, B0) view
    offset: Any  # (num_features,)
    exact: Any  # dtype of the exact recomputation
    data_dtype: Any  # dtype of the data (and of returned distances)
    exact_rows: Any = None  # (num_samples, num_features): the rows as given, or None (half precision)
    key_column: Any = None  # half precision: (num_stored,) float32 augmented column, else None
    row_scale: Any = None  # half precision and cosine: (num_stored,) float32 1 / ||t||, else None
    rank_offset: Any = None  # half precision: (num_features,) float32 shift of the ranking, else None
    # torch on a GPU (full precision): the augmented column, contiguous, the bias of the ranking GEMM.
    rank_bias: Any = None
    # On a GPU: (num_stored,) int64 training row of each stored row (padding: num_samples and on), else None.
    train_of_stored: Any = None
    # inner_product: 0-d largest squared norm of a training row (its keys' error bound), else None.
    sq_norm_bound: Any = None
    # The power of two the shifted rows are ranked scaled by (distances.rank_scale): 1.0 but for
    # rows whose squared norms would overflow or underflow the rank dtype.
    rank_scale: float = 1.0
    # Split ranking (split_ranking.py): the stored rows' pieces (hi, [lo, hi]) (bfloat16 on torch-CUDA), else None.
    split_rows: Any = None

    @property
    def rank_dtype(self) -> Any:
        """Floating dtype of the ranking product (float32 for half-precision rows)."""
        return self.rows.dtype if self.key_column is None else self.key_column.dtype

    @property
    def num_stored(self) -> int:
        return self.num_fine_blocks * self.fine_block_size


def choose_fine_blocks(num_samples: int) -> tuple[int, int, int]:
    """``(fine_block_size, num_fine_blocks, max_group)`` for ``num_samples`` rows."""
    fine_block_size = max(1, math.isqrt(num_samples // FINE_BLOCK_DIVISOR))
    needed = -(-num_samples // fine_block_size)
    max_group = 1
    while max_group * 2 <= min(MAX_GROUP, needed):
        max_group *= 2
    num_fine_blocks = -(-needed // max_group) * max_group
    return fine_block_size, num_fine_blocks, max_group


def _bit_reversed(values: np.ndarray, bits: int) -> np.ndarray:
    reversed_values = np.zeros_like(values)
    for bit in range(bits):
        reversed_values |= ((values >> bit) & 1) << (bits - 1 - bit)
    return reversed_values


def fine_block_positions(num_fine_blocks: int, max_group: int) -> np.ndarray:
    """Column of each fine block: bit-reversed within runs of ``max_group`` (host int64)."""
    blocks = np.arange(num_fine_blocks, dtype=np.int64)
    runs = num_fine_blocks // max_group
    return _bit_reversed(blocks % max_group, max_group.bit_length() - 1) * runs + blocks // max_group


def ranking_dtype(xp: ModuleType, device: Any, dtype: Any) -> Any:
    """The dtype of the ranking product for data of ``dtype``.

    float64 data is ranked in float32 and re-scored in float64, on every
    device: consumer GPUs run FP64 at 1/32-1/64 of the FP32 rate, a CPU at
    half of it, and the float32 rows take half the memory. The certificate
    (the module notes) keeps the neighbours exact: data tied below float32's
    precision costs a brute-force search of the queries concerned, and the
    distances are float64 differences of the rows as given.
    """
    if dtype == xp.float64:
        return xp.float32
    return dtype


def build_index(
    train: Any,
    metric: Any,
    *,
    xp: ModuleType,
    rank_dtype: Any = None,
    p: float | None = None,
    metric_params: dict | None = None,
    rank_split: bool = False,
) -> TrainIndex | DirectIndex:
    """Prepare validated floating training rows for :func:`search_index`.

    ``metric`` is any metric of the registry (:func:`knn_gpu._engine.metrics.lookup`),
    ``p`` the Minkowski power (``"minkowski"`` only) and ``metric_params``
    the metric's parameters (``V``, ``VI``, ...), checked and prepared here,
    before any search. Metrics without a matrix-product form get a
    :class:`~knn_gpu._engine.direct.DirectIndex`, searched block by block.

    ``rank_dtype`` overrides :func:`ranking_dtype` (tests use it to prove the
    GPU's float32 ranking of float64 data exact on the CPU).

    ``rank_split`` ranks by two GEMMs of bfloat16 pieces of the float32
    rows (:mod:`knn_gpu._engine.split_ranking`: tensor cores on torch-CUDA,
    float32 products of the same pieces elsewhere), certified like the
    float32 keys; float32 and float64 data of the four product metrics. The
    front door asks for it under ``config_context(ranking="bf16x3")`` on torch
    CUDA tensors.
    """
    resolved = resolve(metric, p, metric_params)
    metric, p = resolved.name, resolved.p
    if is_direct(metric):
        device = array_api_compat.device(train)
        with device_scope(xp, device):
            state = prepare_state(resolved, train, xp=xp, exact=exact_dtype(xp, device))
        return build_direct_index(train, metric, p, xp=xp, state=state)
    if rank_split and is_half_precision(train.dtype, xp):
        msg = "rank_split ranks float32 and float64 rows; half-precision rows are ranked in float32 already"
        raise ValueError(msg)
    device = array_api_compat.device(train)
    with device_scope(xp, device):
        return _build_index(train, metric, xp=xp, device=device, rank_dtype=rank_dtype, rank_split=rank_split)


def _stored_order(num_samples: int, *, xp: ModuleType, device: Any) -> tuple[int, int, int, Any, Any]:
    """The block layout: fine block size and count, ``max_group``, positions, and each stored row's training row.

    Stored row ``i * B0 + position[b]`` holds training row ``b * S0 + i``;
    training rows from ``num_samples`` on are padding. The per-block
    positions are made on the host (one entry per fine block); the order of
    every stored row on the data's device, by arithmetic: stored row ``s``
    holds row ``s // B0`` of the fine block at position ``s % B0``. (On a GPU,
    the host-built order of 1M rows took ~10 ms of NumPy and an 8 MB copy
    from pageable memory per build.)
    """
    fine_block_size, num_fine_blocks, max_group = choose_fine_blocks(num_samples)
    positions = fine_block_positions(num_fine_blocks, max_group)
    block_at = np.empty_like(positions)
    block_at[positions] = np.arange(num_fine_blocks, dtype=np.int64)
    stored = xp.arange(num_fine_blocks * fine_block_size, dtype=xp.int64, device=device)
    block = take(xp.asarray(block_at, device=device), stored % num_fine_blocks, axis=0, xp=xp)
    train_of_stored = block * fine_block_size + stored // num_fine_blocks
    return fine_block_size, num_fine_blocks, max_group, xp.asarray(positions, device=device), train_of_stored


def _build_index(
    train: Any, metric: str, *, xp: ModuleType, device: Any, rank_dtype: Any, rank_split: bool = False
) -> TrainIndex:
    exact = exact_dtype(xp, device)
    data_dtype = train.dtype
    if is_half_precision(data_dtype, xp):
        return _build_half_index(train, metric, xp=xp, device=device, exact=exact)
    if rank_dtype is None:
        rank_dtype = ranking_dtype(xp, device, data_dtype)
    num_samples, num_features = train.shape
    sq_norm_bound = _sq_norm_bound(train, metric, xp=xp, exact=exact)
    rows, offset, scale = augment_train(train, metric, xp=xp, exact=exact, sq_norm_bound=sq_norm_bound)
    if rank_dtype != data_dtype:
        rows = xp.astype(rows, rank_dtype)
    fine_block_size, num_fine_blocks, max_group, positions, train_of_stored = _stored_order(
        num_samples, xp=xp, device=device
    )
    padding = num_fine_blocks * fine_block_size - num_samples
    if padding:
        # Padding rows rank last: the largest finite key (an infinity would make
        # BLAS raise floating-point flags on its own zero padding); split ranking: a key its splitter keeps finite.
        pad_key = SPLIT_PADDING_KEY if rank_split else xp.finfo(rows.dtype).max
        pad_rows = xp.concat(
            [
                xp.zeros((padding, num_features), dtype=rows.dtype, device=device),
                xp.full((padding, 1), pad_key, dtype=rows.dtype, device=device),
            ],
            axis=1,
        )
        rows = xp.concat([rows, pad_rows], axis=0)
    rows = take(rows, train_of_stored, axis=0, xp=xp)
    on_gpu = is_gpu(xp, device)
    rank_bias = split_rows = None
    if rank_split:
        split_rows = stored_pieces(rows, xp=xp)
    elif on_gpu and array_api_compat.is_torch_namespace(xp):
        rank_bias = xp.asarray(rows[:, num_features], copy=True)  # contiguous, as cuBLASLt's bias epilogue needs
    return TrainIndex(
        device=device,
        metric=metric,
        num_samples=num_samples,
        num_features=num_features,
        fine_block_size=fine_block_size,
        num_fine_blocks=num_fine_blocks,
        max_group=max_group,
        rows=rows,
        block_position=positions,
        offset=offset,
        exact=exact,
        data_dtype=data_dtype,
        exact_rows=train,
        rank_bias=rank_bias,
        train_of_stored=train_of_stored if on_gpu else None,
        sq_norm_bound=sq_norm_bound,
        rank_scale=scale,
        split_rows=split_rows,
    )


def _sq_norm_bound(train: Any, metric: str, *, xp: ModuleType, exact: Any) -> Any:
    """inner_product: the largest squared norm of a training row (0-d, ``exact``), else None.

    What bounds the inner_product keys' rounding (:mod:`knn_gpu._engine.key_bounds`),
    read once at build; the other metrics' bounds need no training norm.
    """
    return max_row_sq_norm(train, xp=xp, exact=exact) if metric == "inner_product" else None


def _build_half_index(train: Any, metric: str, *, xp: ModuleType, device: Any, exact: Any) -> TrainIndex:
    """Half-precision rows stored as given (one copy, in the block layout), ranked in float32."""
    num_samples, num_features = train.shape
    sq_norm_bound = _sq_norm_bound(train, metric, xp=xp, exact=exact)
    rank_offset, column, scale, rank_scale = half_ranking_terms(
        train, metric, xp=xp, exact=exact, sq_norm_bound=sq_norm_bound
    )
    fine_block_size, num_fine_blocks, max_group, positions, order = _stored_order(num_samples, xp=xp, device=device)
    padding = num_fine_blocks * fine_block_size - num_samples
    # Padding rows are copies of the last row (no padded copy of the training set), ranked
    # last by their key column.
    source = xp.minimum(order, xp.asarray(num_samples - 1, dtype=xp.int64, device=device))
    if padding:
        column = xp.concat([column, xp.full(padding, HALF_PADDING_KEY, dtype=column.dtype, device=device)])
        if scale is not None:
            scale = xp.concat([scale, xp.ones(padding, dtype=scale.dtype, device=device)])
    return TrainIndex(
        device=device,
        metric=metric,
        num_samples=num_samples,
        num_features=num_features,
        fine_block_size=fine_block_size,
        num_fine_blocks=num_fine_blocks,
        max_group=max_group,
        rows=take(train, source, axis=0, xp=xp),
        block_position=positions,
        offset=xp.zeros(num_features, dtype=train.dtype, device=device),
        exact=exact,
        data_dtype=train.dtype,
        key_column=take(column, order, axis=0, xp=xp),
        row_scale=None if scale is None else take(scale, order, axis=0, xp=xp),
        rank_offset=rank_offset,
        train_of_stored=order if is_gpu(xp, device) else None,
        sq_norm_bound=sq_norm_bound,
        rank_scale=rank_scale,
    )


@dataclass(frozen=True)
class BlockPlan:
    """How one search prunes: ``group`` fine blocks per block, ``kept`` blocks searched per query."""

    group: int
    num_groups: int
    kept: int
    num_candidates: int
    block_size: int

    @property
    def prunes(self) -> bool:
        return self.kept < self.num_groups

    @property
    def width(self) -> int:
        """Keys searched per query after the prefilter."""
        return self.kept * self.block_size


def candidate_count(k: int, num_samples: int, num_features: int = 0) -> int:
    """How many candidates by ranking key get their distances recomputed exactly.

    The margin beyond k is for speed only: correctness comes from the
    certificate (the module notes), and a margin too small costs fallbacks
    (a widened search of the queries concerned), never a wrong answer; a
    margin too large costs gathers and re-scoring for every query. A query
    is certified when the rows between its k-th neighbour and the last
    candidate are more than the key bound's shell, whose relative width
    grows like ``d * (d + 4) * u`` (the bound's ``gamma_{d+4}`` times the
    norms, which grow like d), and whose rows grow like k: so the margin is
    ``SHELL_FACTOR * k * d * (d + 4) * u`` rows (:data:`SHELL_FACTOR`), all
    of k up to :data:`FULL_MARGIN_UP_TO` (where it is cheap), and never
    fewer than :data:`EXTRA_CANDIDATES`. At k = 1000, d = 64 that is 32 rows
    (a quarter of k before: 250, and 22 % more time on the gathers and
    re-scoring, with the same answers); at k = 100, d = 768, 36.
    """
    shell = math.ceil(SHELL_FACTOR * k * num_features * (num_features + 4) * 2.0**-24)
    margin = max(min(k, FULL_MARGIN_UP_TO), shell, EXTRA_CANDIDATES)
    return min(num_samples, k + margin)


#: Rows of up to this many values sort in one pass in shared memory on CUDA (torch's bitonic/warp sort).
ONE_PASS_SORT_WIDTH = 4096


def _sort_passes(width: int) -> int:
    return 1 if width <= ONE_PASS_SORT_WIDTH else 4


def plan_blocks(index: TrainIndex, k: int) -> BlockPlan:
    """The block size (a power-of-two group of fine blocks) that makes selection cheapest for ``k``.

    Per query the selection reads ``num_groups`` block minima and gathers and
    selects ``candidates * block_size`` keys; the group minimising their sum
    is taken. Where no group prunes (k close to n), every block is kept.

    A kept key costs twice a block minimum (gathered, then selected) where
    the selection is a partition or a top-k. torch on a GPU selects both by
    sorting (:func:`knn_gpu._engine.topk.smallest_k_columns_by_sort`): a row
    of up to :data:`ONE_PASS_SORT_WIDTH` values sorts in one pass, a longer
    one in four (radix digits of float32), so each element costs its sort's
    passes, and a kept key one more for its gather.
    """
    num_candidates = candidate_count(k, index.num_samples, index.num_features)
    sorts = array_api_compat.is_torch_namespace(index.xp) and is_gpu(index.xp, index.device)
    best = None
    group = 1
    while group <= index.max_group:
        num_groups = index.num_fine_blocks // group
        block_size = group * index.fine_block_size
        if num_candidates < num_groups:
            keys = num_candidates * block_size
            if sorts:
                cost = num_groups * _sort_passes(num_groups) + keys * (_sort_passes(keys) + 1)
            else:
                cost = num_groups + 2 * keys
            if best is None or cost < best[0]:
                best = (cost, BlockPlan(group, num_groups, num_candidates, num_candidates, block_size))
        group *= 2
    if best is None:
        group = index.max_group
        num_groups = index.num_fine_blocks // group
        return BlockPlan(group, num_groups, num_groups, num_candidates, group * index.fine_block_size)
    return best[1]


def batch_bytes_per_query(index: TrainIndex, plan: BlockPlan, reduce_bytes_per_query: int = 0) -> int:
    """Bytes of every temporary one query of a batch needs (an upper estimate).

    The ranking keys (one per stored row); the block minima and their
    selection; per kept key its stored position, training index and flat
    index (int64), its key, the selection's copy, masks and running counts;
    the candidates' gathered rows; the exact re-scoring's chunks in float64;
    the candidates' distances and orders; and what the reduction declares.
    """
    rank_size = dtype_itemsize(index.xp, index.rank_dtype)
    exact_size = dtype_itemsize(index.xp, index.exact)
    num_candidates = plan.num_candidates
    features = index.num_features
    keys = keys_bytes_per_query(index)
    minima = 3 * plan.num_groups * (rank_size + 8) if plan.prunes else 0
    selection = plan.width * (3 * 8 + 2 * rank_size + 16) + plan.kept * 8 * (plan.group + 2)
    if index.exact_rows is not None:
        gathered = num_candidates * features * dtype_itemsize(index.xp, index.exact_rows.dtype)
    else:
        gathered = num_candidates * index.rows.shape[1] * dtype_itemsize(index.xp, index.rows.dtype)
    rescoring = 6 * num_candidates * 8
    if is_gpu(index.xp, index.device):
        # One re-scoring step per batch on a device; on the host steps of HOST_STEP_BYTES (a fixed few MiB).
        rescoring += 3 * num_candidates * min(features, DEVICE_EXACT_CHUNK_FEATURES) * exact_size
    return keys + minima + selection + gathered + rescoring + int(reduce_bytes_per_query)


def keys_bytes_per_query(index: TrainIndex) -> int:
    """Bytes of one query's ranking keys and augmented row (:func:`batch_keys`)."""
    rank_size = dtype_itemsize(index.xp, index.rank_dtype)
    features = index.num_features
    keys = index.num_stored * rank_size + (features + 1) * rank_size
    if index.key_column is not None:
        # Half precision: the queries in float32 too, and each chunk's product before it is
        # written into the keys (NumPy and CuPy write it in place; counted for every library).
        keys += features * rank_size + rank_chunk_rows(features, is_gpu(index.xp, index.device)) * rank_size
    return keys


def batch_fixed_bytes(index: TrainIndex) -> int:
    """Bytes a batch needs whatever its number of queries (an upper estimate).

    Half-precision rows: the chunk of training rows being ranked, converted
    to float32, shifted or scaled and augmented (three chunk-sized arrays at
    most). Nothing for float32 and float64 data.
    """
    if index.key_column is None:
        return 0
    chunk_rows = rank_chunk_rows(index.num_features, is_gpu(index.xp, index.device))
    return 3 * min(chunk_rows, index.num_stored) * (index.num_features + 1) * dtype_itemsize(index.xp, index.rank_dtype)


def default_batch_rows(
    index: TrainIndex,
    num_queries: int,
    memory_budget: int | None = None,
    *,
    num_workers: int = 1,
    plan: BlockPlan | None = None,
    k: int = 10,
    reduce_bytes_per_query: int = 0,
) -> int:
    """Queries per batch so that the batches in flight fit ``memory_budget`` bytes.

    Each of ``num_workers`` threads holds one batch, so each gets its share of
    the budget, less the batch's fixed temporaries (:func:`batch_fixed_bytes`);
    the batches are of equal size and come in rounds of one per worker, so
    that every worker has the same work. NumPy batches hold at
    most :data:`HOST_MAX_BATCH_ROWS` queries. The default budget is
    :data:`GPU_MEMORY_SHARE` of the free memory of the data's GPU (read
    under that device, once per search, before the loop) and
    :data:`DEFAULT_MEMORY_BUDGET` elsewhere.
    """
    if plan is None:
        plan = plan_blocks(index, k)
    if memory_budget is None:
        memory_budget = default_memory_budget(index.xp, index.device)
    bytes_per_query = batch_bytes_per_query(index, plan, reduce_bytes_per_query)
    share = memory_budget // num_workers - batch_fixed_bytes(index)
    rows_in_budget = max(1, share // bytes_per_query)
    if array_api_compat.is_numpy_namespace(index.xp):
        rows_in_budget = min(rows_in_budget, HOST_MAX_BATCH_ROWS)
    # Equal batches, as many per worker: a worker left with an extra batch would idle the others.
    rounds = -(-num_queries // (num_workers * rows_in_budget))
    return max(1, -(-num_queries // (num_workers * max(rounds, 1))))


def search_workers(index: TrainIndex, num_queries: int, n_jobs: int | None) -> int:
    """Threads that search batches side by side (NumPy only).

    NumPy runs the selection on one core, so on the host each thread takes
    whole batches (product and selection) with a single-threaded BLAS.
    Device libraries (CuPy) and libraries with their own thread pools (torch)
    get one thread. ``n_jobs=None`` uses every available core for searches
    large enough to gain (:data:`MIN_KEYS_PER_WORKER`,
    :data:`MIN_QUERIES_PER_WORKER`) and one thread below that; ``-1`` always
    uses every available core, and a positive ``n_jobs`` that many threads.
    """
    if not array_api_compat.is_numpy_namespace(index.xp):
        return 1
    if n_jobs is None:
        worth_it = min(num_queries // MIN_QUERIES_PER_WORKER, num_queries * index.num_stored // MIN_KEYS_PER_WORKER)
        return max(1, min(available_cores(), worth_it))
    wanted = available_cores() if n_jobs == -1 else n_jobs
    return max(1, min(wanted, num_queries))


def search_index(
    index: TrainIndex | DirectIndex,
    queries: Any,
    k: int,
    *,
    batch_rows: int | None = None,
    n_jobs: int | None = None,
    memory_budget: int | None = None,
    reduce: Callable[[Any, Any], tuple] | None = None,
    reduce_bytes_per_query: int = 0,
    distance_dtype: Any = None,
) -> tuple:
    """The ``k`` nearest stored rows of each query, optionally reduced batch by batch.

    Parameters
    ----------
    index : TrainIndex or DirectIndex
        A :class:`~knn_gpu._engine.direct.DirectIndex` is searched block by block
        (:func:`knn_gpu._engine.direct.search_direct`).
    queries : array, shape (n_queries, num_features)
        Validated, in the index's namespace, device and (data) dtype.
    k : int
        ``1 <= k <= index.num_samples``.
    batch_rows : int, optional
        Queries per batch; by default from the memory budget.
    n_jobs : int, optional
        Threads for the NumPy backend (see :func:`search_workers`).
    memory_budget : int, optional
        Bytes the temporaries of the batches in flight may take; by default
        :data:`DEFAULT_MEMORY_BUDGET` on the host and
        :data:`GPU_MEMORY_SHARE` of the free memory on a GPU.
    reduce : callable, optional
        ``reduce(distances, indices) -> tuple of arrays`` applied to each
        batch's neighbours (a vote, a mean); its results are concatenated.
        Its temporaries per query, ``reduce_bytes_per_query``, count in the
        budget.
    distance_dtype : dtype, optional
        dtype of the returned distances (default: ``index.distance_dtype``,
        the data's, float32 for half precision). Merges of
        partial searches ask for the exact re-scoring's own precision.

    Returns
    -------
    tuple
        ``(distances, indices)`` — shape (n_queries, k), the data's dtype
        (float32 for half-precision data) and int64 — or what ``reduce``
        returns, batch results concatenated.
    """
    if isinstance(index, DirectIndex):
        return search_direct(
            index,
            queries,
            k,
            batch_rows=batch_rows,
            n_jobs=n_jobs,
            memory_budget=memory_budget,
            reduce=reduce,
            reduce_bytes_per_query=reduce_bytes_per_query,
            distance_dtype=distance_dtype,
        )
    xp = index.xp
    if reduce is None:
        reduce = _neighbors_themselves
    with device_scope(xp, index.device):
        if distance_dtype is None:
            distance_dtype = index.distance_dtype
        if queries.shape[0] == 0:
            return reduce(
                xp.zeros((0, k), dtype=distance_dtype, device=index.device),
                xp.zeros((0, k), dtype=xp.int64, device=index.device),
            )
        if batch_rows is None and memory_budget is None:
            # Read once, here: the batches' size, the fallback's chunks and an out-of-memory error name it.
            memory_budget = default_memory_budget(xp, index.device)
        options = {"reduce": reduce, "distance_dtype": distance_dtype, "memory_budget": memory_budget}
        reduced, uncertified = search_batches(
            index,
            queries,
            k,
            batch_rows=batch_rows,
            n_jobs=n_jobs,
            reduce_bytes_per_query=reduce_bytes_per_query,
            **options,
        )
        return settle_uncertified(index, queries, k, reduced, uncertified, **options)


def search_batches(
    index: TrainIndex,
    queries: Any,
    k: int,
    *,
    batch_rows: int | None,
    n_jobs: int | None,
    memory_budget: int | None,
    reduce: Callable[[Any, Any], tuple],
    reduce_bytes_per_query: int,
    distance_dtype: Any,
    plan: BlockPlan | None = None,
) -> tuple[tuple, Any]:
    """Every batch of :func:`search_index`, without a host read: ``(reduced results, uncertified)``.

    ``uncertified`` (bool, one per query) is False where no training row
    left out of a query's candidates can be as near as its k-th neighbour
    (the key bound of :mod:`knn_gpu._engine.key_bounds`): the query's answer
    is then the float64 oracle's. :func:`settle_uncertified` answers the
    others exactly.
    ``plan`` (default: :func:`plan_blocks` for ``k``) may take more
    candidates than ``k`` asks (:func:`answer_uncertified`).
    """
    xp = index.xp
    num_queries = queries.shape[0]
    if plan is None:
        plan = plan_blocks(index, k)
    num_workers = search_workers(index, num_queries, n_jobs)
    if batch_rows is None:
        batch_rows = default_batch_rows(
            index,
            num_queries,
            memory_budget,
            num_workers=num_workers,
            plan=plan,
            reduce_bytes_per_query=reduce_bytes_per_query,
        )

    def search_share(share: list[int]) -> list[tuple]:
        return _search_batches(index, plan, queries, k, share, batch_rows, reduce, distance_dtype, memory_budget)

    # One BLAS thread per worker so that the cores are not oversubscribed.
    results = run_in_shares(list(range(0, num_queries, batch_rows)), search_share, num_workers, one_blas_thread=True)
    if len(results) == 1:
        parts = results[0][1]
    else:
        parts = tuple(xp.concat(parts, axis=0) for parts in zip(*(batch for _, batch in results)))
    return parts[:-1], parts[-1]


def settle_uncertified(
    index: TrainIndex,
    queries: Any,
    k: int,
    reduced: tuple,
    uncertified: Any,
    *,
    reduce: Callable[[Any, Any], tuple],
    distance_dtype: Any,
    memory_budget: int | None,
) -> tuple:
    """``reduced``, with the rows of the ``uncertified`` queries answered exactly.

    The search's one host read: the number of uncertified queries (no
    batch loop waits for it). Where it is not zero (data whose keys cannot
    separate the neighbours: far from the training mean, nearly tied at the
    rank dtype's precision, or a bound too wide for the dimension), those
    queries are answered by :func:`answer_uncertified`, reduced, and put in
    their places.
    """

    def answered(failed: Any) -> tuple:
        distances, indices = answer_uncertified(index, failed, k, memory_budget)
        return reduce(index.xp.astype(distances, distance_dtype, copy=False), indices)

    return _answer_again(reduced, uncertified, queries, answered, xp=index.xp)


#: The widened search of :func:`answer_uncertified` takes this many times the candidates.
WIDENING = 8


def answer_uncertified(index: TrainIndex, queries: Any, k: int, memory_budget: int | None) -> tuple[Any, Any]:
    """The exact ``k`` nearest neighbours of queries the first search could not certify (the exact dtype).

    First the same search with :data:`WIDENING` times the candidates (one
    product per batch again: a few milliseconds, where the rows a bound too
    wide for the dimension left uncertain are usually settled); then, for
    what is still uncertified, exact distances to every training row
    (:func:`exact_neighbors`, about 100x a certified query's time at 50,000 x
    768). Each step reads its count once.
    """
    xp = index.xp
    num_candidates = candidate_count(k, index.num_samples, index.num_features)
    wide = min(index.num_samples, WIDENING * num_candidates)
    if wide <= num_candidates:
        return exact_neighbors(index, queries, k, memory_budget)
    (distances, indices), still = search_batches(
        index,
        queries,
        k,
        batch_rows=None,
        n_jobs=None,
        memory_budget=memory_budget,
        reduce=_neighbors_themselves,
        reduce_bytes_per_query=0,
        distance_dtype=index.exact,
        plan=plan_blocks(index, wide),
    )
    return _answer_again(
        (distances, indices), still, queries, lambda failed: exact_neighbors(index, failed, k, memory_budget), xp=xp
    )


def _answer_again(parts: tuple, flags: Any, queries: Any, answer: Callable[[Any], tuple], *, xp: ModuleType) -> tuple:
    """``parts`` with the rows of the queries ``flags`` marks replaced by ``answer(those queries)``.

    One host read, the count of marked queries (:func:`read_counts`); nothing
    more where it is zero.
    """
    (count,) = read_counts(xp.count_nonzero(flags), xp=xp)
    if count == 0:
        return parts
    failed = positions_of_true(flags, count, xp=xp)
    return _in_place(parts, answer(take(queries, failed, axis=0, xp=xp)), failed, queries.shape[0], xp=xp)


def _in_place(parts: tuple, fixes: tuple, positions: Any, num_rows: int, *, xp: ModuleType) -> tuple:
    """``parts`` (first axis: ``num_rows``) with row ``positions[j]`` replaced by row ``j`` of ``fixes``.

    ``positions`` ascending; by one gather per part from the parts and the
    fixes concatenated (no scatter, which the standard lacks).
    """
    device = array_api_compat.device(positions)
    numbers = xp.arange(num_rows, dtype=xp.int64, device=device)
    slot = xp.astype(xp.searchsorted(positions, numbers), xp.int64)
    slot = xp.minimum(slot, xp.full_like(slot, positions.shape[0] - 1))
    rows = xp.where(take(positions, slot, axis=0, xp=xp) == numbers, num_rows + slot, numbers)
    return tuple(take(xp.concat([part, fix], axis=0), rows, axis=0, xp=xp) for part, fix in zip(parts, fixes))


#: Training rows per chunk of :func:`exact_neighbors` on the host (its float64
#: temporaries are stepped by the re-scoring; this bounds the distances kept).
HOST_EXACT_CHUNK_ROWS = 8192


def exact_neighbors(index: TrainIndex, queries: Any, k: int, memory_budget: int | None = None) -> tuple[Any, Any]:
    """The ``k`` nearest training rows of each query by exact distances to every row (the exact dtype).

    What answers a query whose candidates the key bound cannot certify:
    the re-scoring of :func:`knn_gpu._engine.distances.exact_distances`
    over chunks of training rows, in training order, each chunk's distances
    merged with the best so far by one stable sort (ties to the lower
    index). O(queries x n_samples x n_features) in the exact dtype: slow, but
    only for the few queries that need it.
    """
    xp = index.xp
    device = index.device
    num_samples, num_features = index.num_samples, index.num_features
    num_queries = queries.shape[0]
    if memory_budget is None:
        memory_budget = default_memory_budget(xp, device)
    exact_size = dtype_itemsize(xp, index.exact)
    per_row = num_queries * (3 * min(num_features, DEVICE_EXACT_CHUNK_FEATURES) * exact_size + 4 * 8)
    chunk = max(1, min(num_samples, memory_budget // max(1, per_row)))
    if not is_gpu(xp, device):
        chunk = min(chunk, HOST_EXACT_CHUNK_ROWS)
    offset = index.offset if index.exact_rows is None else None
    best = None
    for start in range(0, num_samples, chunk):
        stop = min(start + chunk, num_samples)
        train = xp.arange(start, stop, dtype=xp.int64, device=device)
        if index.exact_rows is not None:
            rows = index.exact_rows[start:stop, ...]
        else:
            # Stored row i * B0 + position[b] holds training row b * S0 + i (the module notes).
            fine = take(index.block_position, train // index.fine_block_size, axis=0, xp=xp)
            stored = (train % index.fine_block_size) * index.num_fine_blocks + fine
            rows = take(index.rows, stored, axis=0, xp=xp)[:, :num_features]
        candidates = xp.broadcast_to(rows[None, ...], (num_queries, stop - start, num_features))
        distances = exact_distances(queries, candidates, index.metric, offset, xp=xp, exact=index.exact)
        indices = xp.broadcast_to(train[None, :], distances.shape)
        if best is not None:
            distances = xp.concat([best[0], distances], axis=1)
            indices = xp.concat([best[1], indices], axis=1)
        order = xp.argsort(distances, axis=1, stable=True)[:, : min(k, distances.shape[1])]
        best = (take_along_axis(distances, order, axis=1, xp=xp), take_along_axis(indices, order, axis=1, xp=xp))
    return best


def _neighbors_themselves(distances: Any, indices: Any) -> tuple[Any, Any]:
    return distances, indices


def _search_batches(
    index: TrainIndex,
    plan: BlockPlan,
    queries: Any,
    k: int,
    starts: list[int],
    batch_rows: int,
    reduce: Callable,
    distance_dtype: Any,
    memory_budget: int | None,
) -> list[tuple]:
    """``(start, reduce(distances, indices) + (uncertified,))`` for the batches of ``batch_rows`` queries at ``starts``.

    In order. A batch that runs out of device memory is searched in halves
    (:func:`knn_gpu._engine.batches.halving_batches`): more, smaller pairs.
    """
    xp = index.xp
    num_queries = queries.shape[0]
    # One keys block reused by every batch (matmul(out=) is native, not standard); made at the first
    # batch's size, and again at the halved size after a batch ran out of memory.
    reuse_keys = array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)
    keys_buffer = None

    def search_rows(start: int, stop: int) -> tuple:
        nonlocal keys_buffer
        out = None
        if reuse_keys:
            if keys_buffer is None or keys_buffer.shape[0] < stop - start:
                keys_buffer = None
                keys_buffer = xp.empty((stop - start, index.num_stored), dtype=index.rank_dtype, device=index.device)
            out = keys_buffer[: stop - start, ...]
        distances, indices, uncertified = _search_batch(index, plan, queries[start:stop, ...], k, keys_out=out)
        return (*reduce(xp.astype(distances, distance_dtype, copy=False), indices), uncertified)

    def drop_keys() -> None:
        nonlocal keys_buffer
        keys_buffer = None

    return list(
        halving_batches(
            search_rows,
            starts,
            batch_rows,
            num_queries,
            xp=xp,
            device=index.device,
            memory_budget=memory_budget,
            on_failure=drop_keys,
        )
    )


def batch_keys(index: TrainIndex, queries: Any, keys_out: Any = None) -> Any:
    """Ranking keys of a batch of queries against every stored row: shape (rows, num_stored), ``index.rank_dtype``.

    ``keys_out`` (NumPy and CuPy) is a buffer to fill, reused across batches.
    """
    xp = index.xp
    if index.rank_bias is not None:
        return _torch_ranking_keys(index, queries)
    if index.split_rows is not None:
        return split_product(query_pieces(_query_rows(index, queries), xp=xp), index.split_rows, xp=xp)
    if index.key_column is None:
        return ranking_keys(_query_rows(index, queries), index.rows, xp=xp, out=keys_out)
    return half_ranking_keys(
        queries,
        index.rows,
        index.key_column,
        index.row_scale,
        index.rank_offset,
        index.metric,
        xp=xp,
        out=keys_out,
        rank_scale=index.rank_scale,
    )


def _query_rows(index: TrainIndex, queries: Any) -> Any:
    """The augmented query rows of the ranking product, in the rank dtype (full-precision rows)."""
    xp = index.xp
    if index.rank_scale != 1.0 and index.rank_dtype != index.data_dtype:
        # Scaled in the data's dtype first: float64 queries may lie beyond float32's range.
        factor = query_factor(queries, index.metric, index.offset, xp=xp, scale=index.rank_scale)
        ones = xp.ones((queries.shape[0], 1), dtype=index.rank_dtype, device=index.device)
        return xp.concat([xp.astype(factor, index.rank_dtype), ones], axis=1)
    ranked_queries = xp.astype(queries, index.rank_dtype, copy=False)
    offset = xp.astype(index.offset, index.rank_dtype, copy=False)
    return augment_queries(ranked_queries, index.metric, offset, xp=xp, scale=index.rank_scale)


def _torch_ranking_keys(index: TrainIndex, queries: Any) -> Any:
    """torch on a GPU: the keys of :func:`batch_keys` in one ``addmm``, the augmented column its bias.

    ``[q', 1] . [t, c] = q'.t + c``: the product over the features only (the
    stored rows without their last column: a strided view, no copy), the
    column added by the GEMM's epilogue, the query factor's constant (-2 for
    the Euclidean metrics, -1 for cosine and inner_product) as its ``alpha``,
    exact as a power of two. One or two kernels where the augmented query
    rows took five.
    """
    import torch

    xp = index.xp
    ranked_queries = xp.astype(queries, index.rank_dtype, copy=False)
    if index.metric in ("cosine", "inner_product"):
        factor, alpha = ranked_queries, -1.0
    elif index.rank_scale != 1.0:
        # Scaled rows (distances.rank_scale): shifted and scaled in the data's dtype (float64 queries may
        # lie beyond float32's range), the power of two kept out of alpha (a float32 scalar in cuBLAS).
        factor = xp.astype((queries - index.offset) * index.rank_scale, index.rank_dtype)
        alpha = -2.0
    else:
        factor, alpha = ranked_queries - xp.astype(index.offset, index.rank_dtype, copy=False), -2.0
    features = index.rows[:, : index.num_features]
    return torch.addmm(index.rank_bias, factor, features.T, alpha=alpha)


def _search_batch(
    index: TrainIndex,
    plan: BlockPlan,
    queries: Any,
    k: int,
    keys_out: Any = None,
) -> tuple[Any, Any, Any]:
    xp = index.xp
    device = index.device
    rows = queries.shape[0]
    fine_size, num_fine, group = index.fine_block_size, index.num_fine_blocks, plan.group
    keys = batch_keys(index, queries, keys_out=keys_out)
    if plan.prunes:
        # Members of each merged block lie num_fine // group columns apart (see the module notes).
        minima = xp.min(xp.reshape(keys, (rows, fine_size * group, num_fine // group)), axis=1)
        if group < index.max_group:  # to the blocks' natural order, so that ties go to the lower block
            minima = take(minima, index.block_position[::group] % (num_fine // group), axis=1, xp=xp)
        blocks = smallest_k_columns(minima, plan.kept, xp=xp)
    else:
        blocks = xp.broadcast_to(xp.arange(plan.num_groups, dtype=xp.int64, device=device), (rows, plan.num_groups))
    # Candidate keys of the kept blocks, in ascending training index: (rows, kept, group, fine_size).
    # Fine block b * group + j of merged block b is row b, column j of the positions seen as (groups, group).
    members = xp.reshape(index.block_position, (plan.num_groups, group))
    positions = xp.reshape(take(members, xp.reshape(blocks, (-1,)), axis=0, xp=xp), (rows, plan.kept, group))
    within = xp.arange(0, fine_size * num_fine, num_fine, dtype=xp.int64, device=device)
    stored = xp.reshape(positions[..., None] + within, (rows, plan.width))
    candidate_keys = take_from_rows(keys, stored, xp=xp)
    columns = smallest_k_columns(candidate_keys, plan.num_candidates, xp=xp)
    stored_at = take_along_axis(stored, columns, axis=1, xp=xp)
    if index.train_of_stored is not None:
        # On a GPU one gather, where the arithmetic below is nine small kernels.
        train_indices = xp.reshape(
            take(index.train_of_stored, xp.reshape(stored_at, (-1,)), axis=0, xp=xp), stored_at.shape
        )
    else:
        # Column -> (kept block, fine block within it, row within that): training index b * S0 + i.
        member = columns % plan.block_size
        chosen_fine = take_along_axis(blocks, columns // plan.block_size, axis=1, xp=xp) * group + member // fine_size
        train_indices = chosen_fine * fine_size + member % fine_size

    if index.exact_rows is not None:
        # The rows as given; a padding row (a candidate only where every row is) reads a real one.
        within = xp.minimum(train_indices, xp.full_like(train_indices, index.num_samples - 1))
        source, positions, offset = index.exact_rows, within, None
    else:  # half precision: the stored rows are the rows as given
        source, positions, offset = index.rows, stored_at, index.offset
    distances = gathered_distances(queries, source, positions, index.metric, offset, xp=xp, exact=index.exact)
    # Candidates are in ascending training index, so a stable sort keeps ties in index order.
    order = xp.argsort(distances, axis=1, stable=True)[:, :k]
    distances = take_along_axis(distances, order, axis=1, xp=xp)
    indices = take_along_axis(train_indices, order, axis=1, xp=xp)
    selected_keys = take_along_axis(candidate_keys, columns, axis=1, xp=xp)
    return distances, indices, _uncertified(index, plan, queries, selected_keys, distances[:, k - 1])


def _uncertified(index: TrainIndex, plan: BlockPlan, queries: Any, selected_keys: Any, kth: Any) -> Any:
    """Per query: True where a stored row outside the candidates might be as near as the k-th neighbour found.

    Every row left out has a key at least the candidates' largest (the
    block prefilter keeps ``num_candidates`` blocks, each with a key at most
    that of any block dropped). Where that key exceeds the largest key a row
    within the k-th exact distance can have
    (:func:`knn_gpu._engine.key_bounds.key_thresholds`), the answer is the
    oracle's (certified: False here). A candidate key at or above the
    padding rows' (an overflowed key) certifies nothing.
    """
    xp = index.xp
    if plan.num_candidates >= index.num_samples:
        return xp.zeros(queries.shape[0], dtype=xp.bool, device=index.device)
    cutoff = xp.max(selected_keys, axis=1)
    limit = key_thresholds(index, queries, kth, in_rank=False)[:, 0]
    return xp.logical_or(cutoff <= limit, cutoff >= padding_key(index))
