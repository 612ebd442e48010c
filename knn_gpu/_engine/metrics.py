"""One metric registry: every metric the searches take, defined once.

Each metric is one :class:`Metric` entry: its names (canonical name and
aliases), how it is ranked (``"product"``: one matrix product, then exact
re-scoring of the candidates, :mod:`knn_gpu._engine.search`; ``"direct"``:
exact keys block by block, :mod:`knn_gpu._engine.direct`; ``"precomputed"``:
nothing computed; ``"host"``: a Python function on the host, slow), its
parameters (``metric_params`` keys) and their checks, whether
``weights="distance"`` applies, whether it is a similarity (ranked by its
negation, returned as is, largest first, with no radius search), and its scikit-learn name, with what
scikit-learn's estimators accept it (``trees``: the tree algorithms that
take it, ``sparse_input``: whether sparse input is refused for it), which the
drop-in estimators follow to answer as scikit-learn does. ``scipy_name``
names the same metric in SciPy's ``cdist``: NumPy's fast path (compiled, no
``(rows, block, features)`` temporaries), chosen by a namespace check as
Minkowski's is, the block function being the fallback everywhere else. The validation of
the public functions and of the estimators, the engine's choice of index and
the block arithmetic all look metrics up here, so adding a metric is one
entry (plus its tests).

Direct metrics give a ``block`` function ``(queries, train_block, state, *,
xp) -> keys``: the ``(rows, block)`` keys of ``queries`` against a block of
training rows, both already in the exact dtype (float64 where the device has
it), written with the standard's functions only so that it runs on the
data's device (GPU included) and reads nothing back to the host. The keys
rank like the distances; where ``root`` is set the distances are
``keys ** (1 / root)``, taken on the winners only (as Minkowski's p-th root):
a root taken before ranking could round equal distances apart. ``prepare``
checks the parameters against the training rows and computes what the
blocks need (``V``, ``VI``, ...) once, before any search, raising
``ValueError`` for a bad one. ``temporaries`` counts the ``(rows, block,
features)`` arrays a block allocates in the exact dtype, for the memory
budget.

Undefined cases (a 0/0 of two all-zero rows for ``dice``, ``sokalsneath``,
``braycurtis``; a constant row for ``correlation``; ``nan_euclidean`` rows
with no feature present in both) are NaN in SciPy and ranked last by
scikit-learn; here their keys are +infinity: ranked last too, and reported
as ``inf``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import array_api_compat

from .._lib.validation import SEMI_METRIC_WARNING, data_conversion_warning
from .._lib.validation import check_p as check_p_rule

__all__ = [
    "Metric",
    "BlockMetric",
    "REGISTRY",
    "lookup",
    "metric_names",
    "check_p",
    "check_metric_params",
    "resolve",
    "Resolved",
    "PRODUCT_METRICS",
    "MINKOWSKI_METRICS",
]


@dataclass(frozen=True)
class Metric:
    """One metric: see the module notes for what each field means."""

    name: str
    ranking: str  # "product", "direct", "precomputed" or "host"
    sklearn_name: str | None
    aliases: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    distance_weights: bool = True
    similarity: bool = False
    boolean: bool = False
    allows_nan: bool = False
    root: float | None = None
    temporaries: int = 0
    num_features: int | None = None
    trees: tuple[str, ...] = ("ball_tree",)
    sparse_input: bool = False
    scipy_name: str | None = None
    block: Callable | None = field(default=None, repr=False)
    prepare: Callable | None = field(default=None, repr=False)
    description: str = ""


class BlockMetric:
    """A vectorised metric: ``function(queries_block, train_block) -> distances_block``, run on the data's device.

    ``function`` receives a ``(rows, features)`` block of queries and a
    ``(block, features)`` block of training rows, in the exact dtype
    (float64 where the device has it) and in the data's namespace and on its
    device, and returns their ``(rows, block)`` distances, written with that
    namespace's functions (``array_api_compat.array_namespace(queries_block)``).
    It runs in the engine's batch loop, on the GPU for GPU data, with no
    copy to the host. Its output is checked once per call (shape, floating
    dtype) before the search: a wrong one is a ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> import knn_gpu
    >>> def l1(q, t):
    ...     return abs(q[:, None, :] - t[None, :, :]).sum(axis=2)
    >>> train = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> knn_gpu.kneighbors(np.array([[0.9, 0.1]]), train, 2, metric=knn_gpu.BlockMetric(l1))
    (array([[0.2, 1. ]]), array([[1, 0]]))
    """

    def __init__(self, function: Callable, name: str | None = None) -> None:
        if not callable(function):
            msg = f"BlockMetric needs a callable f(queries_block, train_block) -> distances_block, got {function!r}"
            raise TypeError(msg)
        self.function = function
        self.name = name or getattr(function, "__name__", "block metric")

    def __repr__(self) -> str:
        return f"BlockMetric({self.name})"


# -- block arithmetic (standard functions only) ----------------------------------------------------


def _safe_ratio(numerator: Any, denominator: Any, *, xp: ModuleType, undefined: float) -> Any:
    """``numerator / denominator``, ``undefined`` where the denominator is 0 (no division by zero)."""
    nonzero = denominator != 0
    ones = xp.ones_like(denominator)
    ratio = numerator / xp.where(nonzero, denominator, ones)
    return xp.where(nonzero, ratio, xp.full_like(ratio, undefined))


def _differences(queries: Any, block: Any) -> Any:
    return queries[:, None, :] - block[None, :, :]


def _braycurtis(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    numerator = xp.sum(xp.abs(_differences(queries, block)), axis=2)
    denominator = xp.sum(xp.abs(queries[:, None, :] + block[None, :, :]), axis=2)
    return _safe_ratio(numerator, denominator, xp=xp, undefined=math.inf)


def _canberra(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    # SciPy's convention: a 0/0 term (both coordinates 0) adds nothing. There |q - t| = 0 too, so adding 1 to
    # the zero denominators gives it, with fewer (rows, block, features) temporaries than a where().
    denominator = xp.abs(queries)[:, None, :] + xp.abs(block)[None, :, :]
    denominator = denominator + xp.astype(denominator == 0, denominator.dtype)
    return xp.sum(xp.abs(_differences(queries, block)) / denominator, axis=2)


def _correlation(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    centred_queries = queries - xp.mean(queries, axis=1, keepdims=True)
    centred_block = block - xp.mean(block, axis=1, keepdims=True)
    products = xp.matmul(centred_queries, xp.matrix_transpose(centred_block))
    norms = xp.sum(centred_queries * centred_queries, axis=1)[:, None] * xp.sum(centred_block * centred_block, axis=1)
    similarity = _safe_ratio(products, xp.sqrt(norms), xp=xp, undefined=math.nan)
    distances = 1.0 - similarity
    # Rounding may leave -1e-16 for a row against itself; a constant row (NaN) ranks last.
    distances = xp.where(distances > 0, distances, xp.zeros_like(distances))
    return xp.where(xp.isnan(similarity), xp.full_like(distances, math.inf), distances)


def _hamming(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    unequal = xp.astype(queries[:, None, :] != block[None, :, :], queries.dtype)
    return xp.sum(unequal, axis=2) / queries.shape[1]


def _nan_euclidean(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    """scikit-learn's ``nan_euclidean_distances`` squared: present coordinates only, scaled by features / present."""
    present = xp.astype(~xp.isnan(queries)[:, None, :] & ~xp.isnan(block)[None, :, :], queries.dtype)
    differences = _differences(xp.where(xp.isnan(queries), 0.0, queries), xp.where(xp.isnan(block), 0.0, block))
    squares = xp.sum(differences * differences * present, axis=2)
    count = xp.sum(present, axis=2)
    return _safe_ratio(squares * queries.shape[1], count, xp=xp, undefined=math.inf)


def _seuclidean(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    differences = _differences(queries, block)
    return xp.sum(differences * differences / state["V"], axis=2)


def _mahalanobis(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    differences = _differences(queries, block)
    keys = xp.sum(xp.matmul(differences, state["VI"]) * differences, axis=2)
    return xp.where(keys > 0, keys, xp.zeros_like(keys))


def _haversine(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    """Great-circle distance on the unit sphere of (latitude, longitude) in radians, as scikit-learn's."""
    half_lat = xp.sin(0.5 * (queries[:, None, 0] - block[None, :, 0]))
    half_lon = xp.sin(0.5 * (queries[:, None, 1] - block[None, :, 1]))
    inner = half_lat * half_lat + xp.cos(queries[:, None, 0]) * xp.cos(block[None, :, 0]) * half_lon * half_lon
    return 2.0 * xp.asin(xp.sqrt(xp.clip(inner, min=0.0, max=1.0)))


def _boolean_counts(queries: Any, block: Any, *, xp: ModuleType) -> tuple[Any, Any, Any, Any]:
    """``(ntt, ntf, nft, nff)`` of the rows as booleans (``x != 0``), by one matrix product (exact integers)."""
    query_bits = xp.astype(queries != 0, queries.dtype)
    block_bits = xp.astype(block != 0, block.dtype)
    ntt = xp.matmul(query_bits, xp.matrix_transpose(block_bits))
    ntf = xp.sum(query_bits, axis=1)[:, None] - ntt
    nft = xp.sum(block_bits, axis=1)[None, :] - ntt
    nff = queries.shape[1] - ntt - ntf - nft
    return ntt, ntf, nft, nff


def _boolean(formula: Callable) -> Callable:
    def block_function(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
        return formula(*_boolean_counts(queries, block, xp=xp), queries.shape[1], xp)

    block_function.__name__ = formula.__name__
    return block_function


def _jaccard(ntt, ntf, nft, nff, n, xp):  # noqa: ANN001, ANN202
    return _safe_ratio(ntf + nft, ntt + ntf + nft, xp=xp, undefined=0.0)  # SciPy: two empty sets are at 0


def _dice(ntt, ntf, nft, nff, n, xp):  # noqa: ANN001, ANN202
    return _safe_ratio(ntf + nft, 2.0 * ntt + ntf + nft, xp=xp, undefined=math.inf)


def _rogerstanimoto(ntt, ntf, nft, nff, n, xp):  # noqa: ANN001, ANN202
    unequal = 2.0 * (ntf + nft)
    return unequal / (ntt + nff + unequal)


def _russellrao(ntt, ntf, nft, nff, n, xp):  # noqa: ANN001, ANN202
    return (n - ntt) / n


def _sokalsneath(ntt, ntf, nft, nff, n, xp):  # noqa: ANN001, ANN202
    unequal = 2.0 * (ntf + nft)
    return _safe_ratio(unequal, ntt + unequal, xp=xp, undefined=math.inf)


def _yule(ntt, ntf, nft, nff, n, xp):  # noqa: ANN001, ANN202
    discordant = ntf * nft
    return _safe_ratio(2.0 * discordant, ntt * nff + discordant, xp=xp, undefined=0.0)  # SciPy: 0 when ntf*nft = 0


def _block_callable(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    keys = state["function"](queries, block)
    _check_block_output(keys, queries.shape[0], block.shape[0], state["name"], xp=xp)
    return xp.astype(keys, queries.dtype, copy=False)


def _host_pairs(queries: Any, block: Any, state: dict, *, xp: ModuleType) -> Any:
    """A Python function of two rows, pair by pair on the host (slow: one Python call per pair)."""
    import numpy as np

    from .._lib.backends import to_host

    host_queries, host_block = to_host(queries), to_host(block)
    if state["pairwise"] is not None:
        keys = np.asarray(state["pairwise"](host_queries, host_block), dtype=np.float64)
    else:
        function, kwargs = state["function"], state["kwargs"]
        keys = np.empty((host_queries.shape[0], host_block.shape[0]), dtype=np.float64)
        for row, query in enumerate(host_queries):
            for column, train_row in enumerate(host_block):
                keys[row, column] = function(query, train_row, **kwargs)
    return xp.asarray(keys, dtype=queries.dtype, device=array_api_compat.device(queries))


def _check_block_output(keys: Any, rows: int, columns: int, name: str, *, xp: ModuleType) -> None:
    """A vectorised metric's result must be a (rows, columns) floating array of the data's namespace."""
    if not array_api_compat.is_array_api_obj(keys) or array_api_compat.array_namespace(keys) is not xp:
        msg = (
            f"the metric {name} must return an array of the data's namespace ({xp.__name__}), got {type(keys).__name__}"
        )
        raise ValueError(msg)
    if tuple(keys.shape) != (rows, columns) or not xp.isdtype(keys.dtype, "real floating"):
        msg = (
            f"the metric {name} must return (queries_block.shape[0], train_block.shape[0]) = ({rows}, {columns}) "
            f"real floating distances, got shape {tuple(keys.shape)} of dtype {keys.dtype}"
        )
        raise ValueError(msg)


# -- parameters: checked against the training rows, before any search ----------------------------


def _host_float64(value: Any) -> Any:
    """A parameter (any array library, a list) as a float64 NumPy copy: parameters are small, read once."""
    import numpy as np

    from .._lib.backends import to_host

    return np.array(to_host(value) if array_api_compat.is_array_api_obj(value) else value, dtype=np.float64)


def _prepare_seuclidean(train: Any, params: Mapping, *, xp: ModuleType, exact: Any) -> dict:
    import numpy as np

    from .._lib.backends import to_host

    device = array_api_compat.device(train)
    num_samples, num_features = train.shape
    if params.get("V") is None:
        if num_samples < 2:
            msg = "metric='seuclidean' without metric_params['V'] needs at least 2 training rows (V = their variance)"
            raise ValueError(msg)
        variance = xp.var(xp.astype(train, exact), axis=0, correction=1)
        host = to_host(variance)  # one small read (n_features values), before any search
        source = "the variance of the training rows (ddof=1)"
    else:
        host = _host_float64(params["V"])
        variance = xp.asarray(host, dtype=exact, device=device)
        source = "metric_params['V']"
    if host.shape != (num_features,):
        msg = f"metric='seuclidean': V must have one value per feature, shape ({num_features},), got shape {host.shape}"
        raise ValueError(msg)
    if not np.all(np.isfinite(host)) or not np.all(host > 0):
        msg = (
            f"metric='seuclidean': V ({source}) must hold finite values > 0 (a variance of 0 divides by zero); "
            f"got min {np.min(host)!r}"
        )
        raise ValueError(msg)
    return {"V": variance}


def _prepare_mahalanobis(train: Any, params: Mapping, *, xp: ModuleType, exact: Any) -> dict:
    import numpy as np

    from .._lib.backends import to_host

    device = array_api_compat.device(train)
    num_samples, num_features = train.shape
    if params.get("VI") is None:
        if num_samples < 2:
            msg = "metric='mahalanobis' without metric_params['VI'] needs at least 2 training rows"
            raise ValueError(msg)
        rows = xp.astype(train, exact)
        centred = rows - xp.mean(rows, axis=0, keepdims=True)
        covariance = to_host(xp.matmul(xp.matrix_transpose(centred), centred)) / (num_samples - 1)
        if np.linalg.matrix_rank(covariance) < num_features:
            msg = (
                "metric='mahalanobis': the covariance of the training rows is singular (features linearly "
                "dependent, or fewer rows than features); pass metric_params={'VI': ...} yourself"
            )
            raise ValueError(msg)
        host = np.linalg.inv(covariance)
    else:
        host = _host_float64(params["VI"])
        if host.shape != (num_features, num_features):
            msg = (
                f"metric='mahalanobis': VI must be a ({num_features}, {num_features}) matrix (one row and column "
                f"per feature), got shape {host.shape}"
            )
            raise ValueError(msg)
        if not np.all(np.isfinite(host)):
            msg = "metric='mahalanobis': VI must hold finite values"
            raise ValueError(msg)
        if np.linalg.matrix_rank(host) < num_features:
            msg = "metric='mahalanobis': VI is singular; it must be the inverse of a covariance matrix"
            raise ValueError(msg)
    return {"VI": xp.asarray(host, dtype=exact, device=device)}


def _prepare_block_callable(train: Any, params: Mapping, *, xp: ModuleType, exact: Any) -> dict:
    metric = params["metric"]
    state = {"function": metric.function, "name": repr(metric)}
    # One check of the output on the first two training rows: a wrong shape is an error before the search.
    probe_rows = xp.astype(train[: min(2, train.shape[0]), ...], exact)
    _check_block_output(metric.function(probe_rows[:1, ...], probe_rows), 1, probe_rows.shape[0], state["name"], xp=xp)
    return state


def _prepare_host(train: Any, params: Mapping, *, xp: ModuleType, exact: Any) -> dict:
    metric = params["metric"]
    kwargs = {key: value for key, value in params.items() if key != "metric"}
    pairwise = metric.pairwise if _is_distance_metric(metric) else None
    return {"function": metric, "kwargs": kwargs, "pairwise": pairwise}


def _is_distance_metric(metric: Any) -> bool:
    """A ``sklearn.metrics.DistanceMetric`` (recognised without importing scikit-learn)."""
    return type(metric).__module__.startswith("sklearn.metrics") and hasattr(metric, "pairwise")


# -- the registry ------------------------------------------------------------------------------------

_ENTRIES = (
    Metric(
        "euclidean",
        "product",
        "euclidean",
        aliases=("l2",),
        trees=("ball_tree", "kd_tree"),
        sparse_input=True,
        description="sqrt(sum (q - t)^2)",
    ),
    Metric("sqeuclidean", "product", "sqeuclidean", trees=(), sparse_input=True, description="sum (q - t)^2"),
    Metric("cosine", "product", "cosine", trees=(), sparse_input=True, description="1 - q.t / (|q| |t|)"),
    Metric(
        "inner_product",
        "product",
        None,
        trees=(),
        sparse_input=True,
        distance_weights=False,
        similarity=True,
        description="maximum inner product search: the largest q.t first (a similarity)",
    ),
    Metric(
        "minkowski",
        "direct",
        "minkowski",
        params=("p", "w"),
        trees=("ball_tree", "kd_tree"),
        sparse_input=True,
        description="(sum |q - t|^p)^(1/p); p = 2 is euclidean (product path)",
    ),
    Metric(
        "manhattan",
        "direct",
        "manhattan",
        aliases=("l1", "cityblock"),
        trees=("ball_tree", "kd_tree"),
        sparse_input=True,
        description="sum |q - t| (p = 1)",
    ),
    Metric(
        "chebyshev",
        "direct",
        "chebyshev",
        aliases=("infinity",),
        trees=("ball_tree", "kd_tree"),
        sparse_input=True,
        description="max |q - t| (p = infinity)",
    ),
    Metric(
        "precomputed",
        "precomputed",
        "precomputed",
        trees=(),
        sparse_input=True,
        description="distances given: rows to the training samples",
    ),
    Metric(
        "braycurtis",
        "direct",
        "braycurtis",
        scipy_name="braycurtis",
        temporaries=2,
        block=_braycurtis,
        description="sum |q - t| / sum |q + t|",
    ),
    Metric(
        "canberra",
        "direct",
        "canberra",
        scipy_name="canberra",
        temporaries=5,
        block=_canberra,
        description="sum |q - t| / (|q| + |t|)",
    ),
    Metric(
        "correlation",
        "direct",
        "correlation",
        trees=(),
        scipy_name="correlation",
        block=_correlation,
        description="1 - centred cosine similarity",
    ),
    Metric(
        "hamming",
        "direct",
        "hamming",
        scipy_name="hamming",
        temporaries=1,
        block=_hamming,
        description="fraction of unequal features",
    ),
    Metric(
        "nan_euclidean",
        "direct",
        "nan_euclidean",
        trees=(),
        allows_nan=True,
        root=2.0,
        temporaries=4,
        block=_nan_euclidean,
        description="euclidean over the features present in both, scaled by n_features / present",
    ),
    Metric(
        "seuclidean",
        "direct",
        "seuclidean",
        params=("V",),
        scipy_name="seuclidean",
        root=2.0,
        temporaries=2,
        block=_seuclidean,
        prepare=_prepare_seuclidean,
        description="sqrt(sum (q - t)^2 / V); V defaults to the training rows' variance (ddof=1)",
    ),
    Metric(
        "mahalanobis",
        "direct",
        "mahalanobis",
        params=("VI",),
        scipy_name="mahalanobis",
        root=2.0,
        temporaries=3,
        block=_mahalanobis,
        prepare=_prepare_mahalanobis,
        description="sqrt((q - t) VI (q - t)); VI defaults to the inverse covariance of the training rows",
    ),
    Metric(
        "haversine",
        "direct",
        "haversine",
        num_features=2,
        block=_haversine,
        description="great-circle distance of (latitude, longitude) in radians, unit sphere",
    ),
    *(
        Metric(
            name,
            "direct",
            name,
            boolean=True,
            scipy_name=name,
            trees=() if name == "yule" else ("ball_tree",),
            block=_boolean(formula),
            description=f"boolean ({name})",
        )
        for name, formula in (
            ("jaccard", _jaccard),
            ("dice", _dice),
            ("rogerstanimoto", _rogerstanimoto),
            ("russellrao", _russellrao),
            ("sokalsneath", _sokalsneath),
            ("yule", _yule),
        )
    ),
    Metric(
        "block_callable",
        "direct",
        None,
        trees=(),
        sparse_input=True,
        block=_block_callable,
        prepare=_prepare_block_callable,
        description="BlockMetric(f): f(queries_block, train_block) on the data's device",
    ),
    Metric(
        "callable",
        "host",
        None,
        sparse_input=True,
        block=_host_pairs,
        prepare=_prepare_host,
        description="a Python function of two rows, or a sklearn DistanceMetric: on the host, slow",
    ),
)

#: Every metric by its canonical name.
REGISTRY: dict[str, Metric] = {entry.name: entry for entry in _ENTRIES}

#: Every name a user may pass (canonical names and aliases), to its entry.
_BY_NAME: dict[str, Metric] = {
    name: entry
    for entry in _ENTRIES
    if entry.name not in ("block_callable", "callable")
    for name in (entry.name, *entry.aliases)
}

#: The names ranked through one matrix product (Dask and out-of-core searches take only these).
PRODUCT_METRICS = tuple(entry.name for entry in _ENTRIES if entry.ranking == "product")

#: The Minkowski family's names (and "l2", euclidean) and "precomputed": the direct metrics with no block function.
MINKOWSKI_METRICS = ("l2", "minkowski", "manhattan", "l1", "cityblock", "chebyshev", "infinity", "precomputed")


def metric_names() -> tuple[str, ...]:
    """Every metric name accepted (aliases included), in registry order."""
    return tuple(_BY_NAME)


def lookup(metric: Any) -> Metric:
    """The registry entry of ``metric``: a name, a :class:`BlockMetric`, a callable or a DistanceMetric.

    Raises ``ValueError`` naming the accepted metrics for anything else.

    Examples
    --------
    >>> lookup("l1").name
    'manhattan'
    >>> lookup("seuclidean").params
    ('V',)
    """
    if isinstance(metric, str):
        entry = _BY_NAME.get(metric)
        if entry is not None:
            return entry
    elif isinstance(metric, BlockMetric):
        return REGISTRY["block_callable"]
    elif callable(metric) or _is_distance_metric(metric):
        return REGISTRY["callable"]
    msg = (
        f"metric must be one of {', '.join(map(repr, metric_names()))}, a BlockMetric, a callable of two rows "
        f"or a sklearn.metrics.DistanceMetric; got {metric!r}"
    )
    raise ValueError(msg)


def check_p(p: Any, *, warn: bool = True) -> float | None:
    """Minkowski's ``p``: :func:`knn_gpu._lib.validation.check_p`, the one rule (scikit-learn's) for every caller.

    ``p > 0``; 0 < p < 1 warns (scikit-learn's ``UserWarning``) unless
    ``warn=False`` (a caller that has warned already).
    """
    if warn:
        return check_p_rule(p)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(SEMI_METRIC_WARNING))
        return check_p_rule(p)


def check_metric_params(entry: Metric, metric_params: Any) -> dict:
    """``metric_params`` as a dict of the entry's parameters, or ``ValueError``/``TypeError`` before any work.

    Callables receive every key (scikit-learn passes them as keyword
    arguments); other metrics take only their own (``p``, ``w``, ``V``,
    ``VI``). A parameter of another metric would silently answer other
    neighbours, so it is refused.
    """
    if metric_params is None:
        return {}
    if not isinstance(metric_params, Mapping):
        msg = f"metric_params must be a dict or None, got {type(metric_params).__name__}"
        raise TypeError(msg)
    params = dict(metric_params)
    if entry.name == "callable":
        return params
    unknown = sorted(set(params) - set(entry.params), key=str)
    if unknown:
        accepted = ", ".join(map(repr, entry.params)) or "none"
        msg = f"metric_params {unknown} are not parameters of metric={entry.name!r} (its parameters: {accepted})"
        raise ValueError(msg)
    return params


@dataclass(frozen=True)
class Resolved:
    """A metric as the engine runs it: ``name`` (the engine's), Minkowski's ``p``, and the parameters."""

    name: str
    p: float | None
    params: dict
    entry: Metric


def resolve(metric: Any, p: Any = None, metric_params: Any = None, *, warn_p: bool = True) -> Resolved:
    """Check ``metric``, ``p`` and ``metric_params`` and give the engine's form, before any work.

    ``"l2"`` and Minkowski with p = 2 (the default) are ``"euclidean"`` (the
    product path); the names of p = 1 and p = infinity are ``"minkowski"``
    with that p. ``p`` is ignored by every metric but ``"minkowski"``, as
    scikit-learn ignores it. A :class:`Resolved` is returned as it is.
    ``warn_p=False``: no warning for 0 < p < 1 (the drop-ins warn in
    scikit-learn's words).

    Examples
    --------
    >>> resolved = resolve("cityblock")
    >>> resolved.name, resolved.p
    ('minkowski', 1.0)
    >>> resolve("minkowski", 2).name
    'euclidean'
    """
    if isinstance(metric, Resolved):
        return metric
    entry = lookup(metric)
    params = check_metric_params(entry, metric_params)
    if entry.name in ("block_callable", "callable"):
        params["metric"] = metric
        return Resolved(entry.name, None, params, entry)
    if entry.name == "minkowski":
        p = check_p(params.pop("p", p), warn=warn_p)
        if params.pop("w", None) is not None:
            # The drop-in estimators take it (they scale the rows by w ** (1/p)); ignoring it would answer
            # unweighted neighbours.
            msg = (
                "metric_params['w'] (weighted Minkowski) is taken by the estimators (NearestNeighbors, ...); "
                "here, scale queries and train by w ** (1 / p) yourself"
            )
            raise ValueError(msg)
        p = 2.0 if p is None else p
        if p == 2.0:
            return Resolved("euclidean", None, {}, REGISTRY["euclidean"])
        return Resolved("minkowski", p, {}, entry)
    if entry.name == "manhattan":
        return Resolved("minkowski", 1.0, {}, REGISTRY["minkowski"])
    if entry.name == "chebyshev":
        return Resolved("minkowski", math.inf, {}, REGISTRY["minkowski"])
    return Resolved(entry.name, None, params, entry)


def check_input_for(entry: Metric, data: Any, name: str, *, features: bool = True) -> None:
    """Checks of validated input that depend on the metric: feature count, the boolean conversion's warning.

    ``features=False``: the feature count is left to the queries (scikit-learn's
    estimators fit haversine on 3 columns and refuse at query time).
    """
    if features:
        check_features_for(entry, data.shape[1], name)
    if entry.boolean and str(data.dtype).rsplit(".", 1)[-1] not in ("bool", "bool_"):
        warnings.warn(f"Data was converted to boolean for metric {entry.name}", data_conversion_warning(), stacklevel=3)


def check_features_for(entry: Metric, num_features: int, name: str) -> None:
    """``ValueError`` where the metric needs another number of features (haversine: 2)."""
    if entry.num_features is not None and num_features != entry.num_features:
        msg = (
            f"metric={entry.name!r} is only valid in {entry.num_features} dimensions (Haversine distance only "
            f"valid in 2 dimensions: latitude, longitude in radians); {name} has {num_features} features"
        )
        raise ValueError(msg)


def prepare_state(resolved: Resolved, train: Any, *, xp: ModuleType, exact: Any) -> dict:
    """What the blocks of ``resolved`` need, computed from the validated training rows once (or ``ValueError``)."""
    entry = resolved.entry
    if entry.prepare is None:
        return {}
    return entry.prepare(train, resolved.params, xp=xp, exact=exact)
