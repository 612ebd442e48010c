"""Sparse input: SciPy, CuPy (``cupyx.scipy.sparse``) and torch sparse matrices, densified as they enter.

knn_gpu's engine works on dense rows (matrix products, direct blocks), so a
sparse matrix is turned into a dense array of its own library when it is
validated: NumPy for ``scipy.sparse`` (matrices and arrays, every format),
CuPy on the GPU for ``cupyx.scipy.sparse``, torch for torch's sparse
layouts. From there it goes where any dense array of that library goes
(the model's dtype and backend). None of these libraries is imported to
recognise its matrices (``type(x).__module__`` tells them apart), and SciPy
is never imported at all: a SciPy matrix carries its own ``toarray``.

Features: a missing entry is 0. Precomputed distances
(``metric="precomputed"``), as scikit-learn reads a sparse distance graph:
a missing entry is no neighbour (+infinity here), a stored entry is a
distance, an explicit stored 0 a distance of 0.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "PRECOMPUTED_FORMATS",
    "sparse_library",
    "is_sparse",
    "densify_features",
    "densify_distances",
    "fewest_stored_per_row",
    "check_stored_neighbors",
]

#: Formats of a sparse precomputed graph, as scikit-learn's ``_check_precomputed``: the others (dok, bsr,
#: dia) do not keep explicit zeros (distances of 0) reliably.
PRECOMPUTED_FORMATS = ("csr", "csc", "coo", "lil")


def sparse_library(x: Any) -> str | None:
    """``"scipy"``, ``"cupyx"`` or ``"torch"`` for a sparse matrix of that library, else None.

    Recognised by the module of its type (no import of SciPy, CuPy or
    torch); a torch tensor is sparse when its layout is not strided.
    """
    module = type(x).__module__
    if module.startswith("scipy.sparse"):
        return "scipy"
    if module.startswith("cupyx.scipy.sparse"):
        return "cupyx"
    if module.split(".")[0] == "torch" and str(getattr(x, "layout", "torch.strided")) != "torch.strided":
        return "torch"
    return None


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is a sparse matrix that knn_gpu densifies (see :func:`sparse_library`)."""
    return sparse_library(x) is not None


def _check_two_dimensional(x: Any, name: str) -> None:
    shape = tuple(x.shape)
    if len(shape) != 2:
        msg = f"{name} must be 2-D (n_samples, n_features), got a sparse array of shape {shape}"
        raise ValueError(msg)


def densify_features(x: Any, name: str) -> Any:
    """A sparse feature matrix as a dense array of its own library; a missing entry is 0.

    ``scipy.sparse`` (any format, matrix or array) becomes a NumPy array,
    ``cupyx.scipy.sparse`` a CuPy array on its GPU (``toarray`` runs
    there), a torch sparse tensor (COO, CSR, CSC, BSR, BSC) a strided
    tensor on its device (``to_dense``). The caller's matrix is not
    modified.

    Memory: the dense copy takes ``n_samples x n_features x itemsize``
    bytes (the sparse matrix's dtype; 8 bytes for float64), however few
    entries are stored: one array, written once (no second dense copy
    where the model keeps that dtype on that library). Densify only what
    fits, or query in slices of rows.

    Parameters
    ----------
    x : sparse matrix, shape (n_samples, n_features)
    name : str
        The argument's name, used in error messages.

    Returns
    -------
    array, shape (n_samples, n_features)
    """
    _check_two_dimensional(x, name)
    if sparse_library(x) == "torch":
        return x.to_dense()
    return x.toarray()


def _stored_entries(x: Any, name: str) -> tuple[Any, Any, Any, Any]:
    """``(module, rows, columns, values)`` of a sparse graph's stored entries, duplicates summed.

    ``module`` is the array library of the entries (numpy, cupy or torch).
    The caller's matrix is not modified (SciPy and CuPy: a COO copy).
    """
    library = sparse_library(x)
    if library == "torch":
        import torch

        entries = x.to_sparse_coo().coalesce()
        rows, columns = entries.indices()
        return torch, rows, columns, entries.values()
    if x.format not in PRECOMPUTED_FORMATS:
        msg = (
            f"Sparse matrix in {x.format!r} format is not supported due to its handling of explicit zeros: "
            f"with metric='precomputed', {name} must be in one of the formats {', '.join(PRECOMPUTED_FORMATS)}"
        )
        raise TypeError(msg)
    entries = x.tocoo(copy=True)
    entries.sum_duplicates()
    if library == "cupyx":
        import cupy as module
    else:
        import numpy as module
    return module, entries.row, entries.col, entries.data


def _check_stored_distances(values: Any, name: str, module: Any) -> None:
    """The stored entries of a sparse graph must be real, finite and non-negative (one read back)."""
    dtype = values.dtype
    if module.__name__ == "torch":
        real = not dtype.is_complex and dtype is not module.bool
    else:
        real = module.dtype(dtype).kind in "iuf"
    if not real:
        msg = f"with metric='precomputed', {name} must hold real distances, got a sparse matrix of dtype {dtype}"
        raise TypeError(msg)
    if values.shape[0] == 0:
        return
    if not bool(module.all(module.isfinite(values))):
        msg = f"{name} contains NaN or infinity; remove or impute those values first"
        raise ValueError(msg)
    if bool(module.any(values < 0)):
        msg = (
            "Negative values in data passed to precomputed distance matrix. "
            f"With metric='precomputed', {name} must hold distances (>= 0)"
        )
        raise ValueError(msg)


def densify_distances(x: Any, name: str) -> Any:
    """A sparse precomputed distance graph as a dense array of its library; a missing entry is +infinity.

    scikit-learn's reading of a sparse distance graph: the stored entries
    are the distances, an explicit stored 0 a distance of 0, and a missing
    entry is no neighbour. Here it is +infinity, which a search never ranks
    ahead of a stored distance, so that a row's ``k`` nearest are stored
    entries whenever it holds ``k`` (see :func:`check_stored_neighbors`).
    SciPy and CuPy formats must be CSR, CSC, COO or LIL (``TypeError``
    otherwise, as scikit-learn); duplicate entries are summed (as SciPy's
    conversion to CSR does). The caller's matrix is not modified.

    Memory: the dense copy takes ``n_queries x n_samples x itemsize`` bytes
    (float64 unless the graph is float32 or half precision), the whole graph
    at once, plus a COO copy of the stored entries; at ``fit`` the training
    graph becomes ``n_samples x n_samples`` (kept: it answers ``X=None``).
    Querying in slices of rows bounds the query side; the training side
    limits sparse graphs to what fits densely (80 MB at 3,000 samples,
    800 MB at 10,000 in float64).

    Parameters
    ----------
    x : sparse matrix, shape (n_queries, n_samples)
    name : str

    Returns
    -------
    array, shape (n_queries, n_samples)
        Floating (integer graphs become float64).

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse
    >>> graph = scipy.sparse.csr_matrix((np.array([0.0, 2.0]), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 2))
    >>> densify_distances(graph, "X")  # the stored 0 stays a distance, the missing entries are no neighbours
    array([[ 0., inf],
           [inf,  2.]])
    """
    _check_two_dimensional(x, name)
    module, rows, columns, values = _stored_entries(x, name)
    _check_stored_distances(values, name, module)
    floating = values.dtype
    if module.__name__ == "torch":
        if not floating.is_floating_point:
            floating = module.float64
        dense = module.full(tuple(x.shape), math.inf, dtype=floating, device=values.device)
    else:
        if module.dtype(floating).kind != "f":
            floating = module.float64
        dense = module.full(tuple(x.shape), math.inf, dtype=floating)
    dense[rows, columns] = values
    return dense


def fewest_stored_per_row(dense: Any, xp: Any) -> int:
    """The fewest finite entries in a row of a densified graph (its stored neighbours); one read back.

    A graph of no rows lacks nothing: its number of columns.
    """
    if dense.shape[0] == 0:
        return int(dense.shape[1])
    counts = xp.sum(xp.astype(xp.isfinite(dense), xp.int64), axis=1)
    return int(xp.min(counts))


def check_stored_neighbors(fewest: int, num_neighbors: int) -> None:
    """scikit-learn's ``ValueError`` when a row of a sparse precomputed graph holds fewer than ``num_neighbors`` entries."""
    if fewest < num_neighbors:
        msg = (
            f"{num_neighbors} neighbors per samples are required, but some samples have only {fewest} neighbors "
            "in precomputed graph matrix. Decrease number of neighbors used or recompute the graph with more "
            "neighbors."
        )
        raise ValueError(msg)
