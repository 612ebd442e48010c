"""Reduce each query's neighbours to a prediction: weights, mean, vote."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat

from .distances import public_distances
from .metrics import REGISTRY

__all__ = [
    "WEIGHTS",
    "ALL_ZERO_WEIGHTS",
    "all_zero_rows",
    "check_weights",
    "neighbor_weights",
    "mean_of_neighbors",
    "votes_of_neighbors",
    "weighted_mean",
    "class_votes",
]

WEIGHTS = ("uniform", "distance")


def check_weights(weights: Any, metric: str = "euclidean") -> str | Callable:
    """``"uniform"``, ``"distance"`` or a callable (None means ``"uniform"``); anything else raises.

    ``"distance"`` (``1 / d``) has no meaning for a similarity, so it is
    refused with ``metric="inner_product"``.
    """
    if callable(weights):
        return weights
    if weights is None:
        return "uniform"  # scikit-learn's alias
    if weights not in WEIGHTS:
        msg = f"weights must be 'uniform', 'distance' or a callable, got {weights!r}"
        raise ValueError(msg)
    entry = REGISTRY.get(metric) if isinstance(metric, str) else None
    if weights == "distance" and entry is not None and not entry.distance_weights:
        msg = (
            "weights='distance' (1 / distance) is not defined for metric='inner_product', whose values are "
            "similarities; use weights='uniform' or a callable, which receives the inner products"
        )
        raise ValueError(msg)
    return weights


def neighbor_weights(distances: Any, weights: str | Callable, *, xp: ModuleType, metric: str = "euclidean") -> Any:
    """Weight of each neighbour, shape ``distances.shape``.

    ``distances`` are the search's own (for ``metric="inner_product"``, the
    negated inner products). ``"distance"`` gives ``1 / d``; in a row where
    some neighbours are at distance 0, those get weight 1 and the others 0
    (scikit-learn's rule). A callable receives what the public ``kneighbors``
    returns (the distances; the inner products for ``"inner_product"``) and
    must return an array of the same shape (a query whose weights are all
    zero gets NaN; the scikit-learn drop-in classes raise ``ValueError``
    there, see :func:`all_zero_rows`).
    """
    if weights == "uniform":
        return xp.ones_like(distances)
    if weights == "distance":
        at_zero = distances == 0
        any_zero = xp.any(at_zero, axis=1, keepdims=True)
        inverse = 1 / xp.where(at_zero, xp.ones_like(distances), distances)
        return xp.where(any_zero, xp.astype(at_zero, distances.dtype), inverse)
    result = weights(public_distances(distances, metric))
    shape = getattr(result, "shape", None)
    if shape is None or tuple(shape) != tuple(distances.shape):
        msg = (
            f"weights callable must return an array of shape {tuple(distances.shape)} "
            f"(the distances' shape), got {shape!r}"
        )
        raise ValueError(msg)
    result = xp.asarray(result, device=array_api_compat.device(distances))
    return xp.astype(result, distances.dtype)


#: scikit-learn's message for a query whose callable weights are all zero.
ALL_ZERO_WEIGHTS = (
    "All neighbors of some sample is getting zero weights. Please modify 'weights' to "
    "avoid this case if you are using a user-defined function."
)


def all_zero_rows(weights: Any, *, xp: ModuleType) -> Any:
    """Per query, whether all its weights are zero (no weighted mean or vote: 0 / 0), as a device array."""
    return xp.all(weights == 0, axis=1)


def _gather_rows(values: Any, indices: Any, *, xp: ModuleType) -> Any:
    """``values[indices]`` for a 2-D index array, along the first axis."""
    flat = xp.take(values, xp.reshape(indices, (-1,)), axis=0)
    return xp.reshape(flat, (*indices.shape, *values.shape[1:]))


def quiet_divide(numerator: Any, denominator: Any, *, xp: ModuleType) -> Any:
    """``numerator / denominator`` with IEEE's results but no floating-point warnings.

    0/0 and inf/inf are NaN, x/0 is +-inf, x/inf is 0 — what the division
    gives — computed so that NumPy raises no ``RuntimeWarning`` (a weight
    function may return inf, a query's weights may all be 0).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> quiet_divide(xp.asarray([[0.0, 1.0, 3.0]]), xp.asarray([[0.0]]), xp=xp)
    array([[nan, inf, inf]])
    """
    zero = denominator == 0
    infinite = xp.isinf(denominator)
    quotient = numerator / xp.where(zero | infinite, xp.ones_like(denominator), denominator)
    nan = xp.full_like(quotient, float("nan"))
    undefined = (numerator == 0) | xp.isnan(numerator)
    signed_inf = xp.where(numerator > 0, xp.full_like(quotient, float("inf")), xp.full_like(quotient, -float("inf")))
    over_zero = xp.where(undefined, nan, signed_inf)
    over_inf = xp.where(xp.isinf(numerator) | xp.isnan(numerator), nan, xp.zeros_like(quotient))
    return xp.where(zero, over_zero, xp.where(infinite, over_inf, quotient))


def mean_of_neighbors(neighbor_targets: Any, weights: Any, *, xp: ModuleType) -> Any:
    """Weighted mean over axis 1 of ``(rows, k, n_outputs)`` targets (NaN where a row's weights are all 0)."""
    weighted = xp.sum(weights[:, :, None] * neighbor_targets, axis=1)
    return quiet_divide(weighted, xp.sum(weights, axis=1, keepdims=True), xp=xp)


def votes_of_neighbors(
    neighbor_codes: Any, weights: Any, num_classes: int, *, xp: ModuleType, dtype: Any = None
) -> Any:
    """Share of weighted votes per class from ``(rows, k)`` class codes, in ``dtype`` (the weights' if None)."""
    if dtype is not None:
        weights = xp.astype(weights, dtype, copy=False)
    class_ids = xp.arange(num_classes, dtype=neighbor_codes.dtype, device=array_api_compat.device(neighbor_codes))
    one_hot = xp.astype(neighbor_codes[:, :, None] == class_ids, weights.dtype)
    votes = xp.sum(weights[:, :, None] * one_hot, axis=1)
    return quiet_divide(votes, xp.sum(votes, axis=1, keepdims=True), xp=xp)


def weighted_mean(targets: Any, indices: Any, weights: Any, *, xp: ModuleType) -> Any:
    """Weighted mean of the neighbours' targets.

    Parameters
    ----------
    targets : array, shape (n_samples, n_outputs)
    indices : array of int64, shape (rows, k)
    weights : array, shape (rows, k)

    Returns
    -------
    array, shape (rows, n_outputs)
    """
    return mean_of_neighbors(_gather_rows(targets, indices, xp=xp), weights, xp=xp)


def class_votes(codes: Any, indices: Any, weights: Any, num_classes: int, *, xp: ModuleType, dtype: Any = None) -> Any:
    """Each query's weighted votes per class, normalised to sum to 1.

    Parameters
    ----------
    codes : array of int64, shape (n_samples,)
        Class code (position in ``classes_``) of every training row.
    indices : array of int64, shape (rows, k)
    weights : array, shape (rows, k)
    num_classes : int
    dtype : dtype, optional
        The dtype the votes are summed and shared in; None: the weights'
        (the seed classes' rule, float32 in, float32 out). The drop-in
        classifiers pass float64 where the device has it, as scikit-learn.

    Returns
    -------
    array, shape (rows, num_classes)
    """
    return votes_of_neighbors(_gather_rows(codes, indices, xp=xp), weights, num_classes, xp=xp, dtype=dtype)
