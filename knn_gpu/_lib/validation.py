"""Checks on user input, done eagerly and before any work.

Every check names the argument, the value it got and what it expected.
``ValueError`` is for bad values, ``TypeError`` for bad types. Nothing here
writes into the caller's arrays.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .sparse_input import densify_distances, densify_features, is_sparse

__all__ = [
    "check_p",
    "SEMI_METRIC_WARNING",
    "NotFittedError",
    "DataConversionWarning",
    "not_fitted_error",
    "data_conversion_warning",
    "feature_names_of",
    "record_feature_names",
    "check_feature_names",
    "as_feature_matrix",
    "check_dask_features",
    "refuse_dask",
    "as_targets",
    "check_batch_size",
    "check_memory_budget",
    "check_nonnegative_distances",
    "check_square_distances",
    "check_out_of_core",
    "check_radius",
    "check_radius_shape",
    "check_n_jobs",
    "check_num_neighbors",
    "check_same_namespace",
    "floating_dtype",
    "distance_dtype_for",
    "is_half_precision",
    "check_finite",
]

# The metrics (names, aliases, parameters and their checks) are the registry's: knn_gpu._engine.metrics.


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used before ``fit``.

    It subclasses both ``ValueError`` and ``AttributeError``, as
    scikit-learn's error of the same name does, so code written for either
    convention catches it. The instances knn_gpu raises are built by
    an internal factory: when scikit-learn is already imported they are
    also instances of ``sklearn.exceptions.NotFittedError``.
    """


class DataConversionWarning(UserWarning):
    """Warned when the data had to be converted (a column vector of labels raveled).

    As :class:`NotFittedError`, the instances warned are also scikit-learn's
    class of the same name when scikit-learn is already imported.
    """


_SKLEARN_TWINS: dict[type, type] = {}


def _with_sklearn_twin(own: type) -> type:
    """``own``, or a subclass of it and of scikit-learn's class of the same name if scikit-learn is imported.

    scikit-learn is never imported here: a program that has not imported it
    cannot be catching its exceptions.
    """
    if "sklearn" not in sys.modules:
        return own
    if own not in _SKLEARN_TWINS:
        import sklearn.exceptions

        theirs = getattr(sklearn.exceptions, own.__name__)
        _SKLEARN_TWINS[own] = type(own.__name__, (own, theirs), {"__module__": own.__module__})
    return _SKLEARN_TWINS[own]


def not_fitted_error(message: str) -> NotFittedError:
    """A :class:`NotFittedError` with ``message`` (also scikit-learn's when it is imported)."""
    return _with_sklearn_twin(NotFittedError)(message)


def data_conversion_warning() -> type:
    """The :class:`DataConversionWarning` class to warn with (scikit-learn's twin when it is imported)."""
    return _with_sklearn_twin(DataConversionWarning)


def _as_array(x: Any, name: str) -> Any:
    """Return ``x`` as an array of its own library, or as a NumPy array."""
    if x is None:
        msg = f"{name} must be an array of numbers, got None"
        raise TypeError(msg)
    if is_sparse(x) or hasattr(x, "tocsr"):
        msg = (
            f"{name} is a sparse matrix; {name} must be dense here "
            "(feature matrices and precomputed distances may be SciPy, CuPy or torch sparse matrices)"
        )
        raise TypeError(msg)
    if isinstance(x, (str, bytes)):
        msg = f"{name} must be an array of numbers, got a string: {x!r:.40}"
        raise TypeError(msg)
    if array_api_compat.is_array_api_obj(x) and not isinstance(x, np.generic):
        return x
    if _is_pandas(x):
        return _pandas_to_numpy(x)
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        msg = f"{name} must be a rectangular array of numbers; converting it with numpy.asarray failed: {exc}"
        raise ValueError(msg) from exc


def _from_library(obj: Any, library: str) -> bool:
    """Whether ``obj``'s type is defined by ``library`` (pandas 3 names its classes' module ``"pandas"``)."""
    module = type(obj).__module__
    return module == library or module.startswith(library + ".")


def _is_pandas(x: Any) -> bool:
    """A pandas DataFrame or Series, recognised without importing pandas."""
    return _from_library(x, "pandas") and hasattr(x, "dtypes") and hasattr(x, "to_numpy")


def _is_polars(x: Any) -> bool:
    """A polars DataFrame or Series, recognised without importing polars."""
    return _from_library(x, "polars") and hasattr(x, "dtypes") and hasattr(x, "to_numpy")


def _pandas_to_numpy(frame: Any) -> np.ndarray:
    """A DataFrame or Series as NumPy: nullable numeric columns (``Float64``, ``Int64``, ``boolean``) as float64.

    Missing values of nullable columns become NaN (refused later as
    non-finite); other columns (strings, categoricals) convert as NumPy does,
    to object arrays, which class labels may be.
    """
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    dtypes = [frame.dtypes] if frame.ndim == 1 else list(frame.dtypes)
    nullable = [_from_library(dtype, "pandas") for dtype in dtypes]
    numeric = all(is_numeric_dtype(dtype) or is_bool_dtype(dtype) for dtype in dtypes)
    if numeric and any(nullable):
        return frame.to_numpy(dtype=np.float64, na_value=np.nan)
    return frame.to_numpy()


def feature_names_of(X: Any) -> np.ndarray | None:
    """The column names of a DataFrame as an object array of ``str``; None for other input.

    As scikit-learn's ``_get_feature_names``: names are used only when every
    column name is a string; mixing strings with other types is a
    ``TypeError``.
    """
    is_frame = _is_pandas(X) or _is_polars(X) or hasattr(X, "__dataframe__")
    columns = getattr(X, "columns", None) if is_frame else None
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    types = sorted({type(name).__name__ for name in names})
    if len(types) > 1 and "str" in types:
        msg = (
            "Feature names are only supported if all input features have string names, "
            f"but your input has {types} as feature name / column name types. If you want "
            "feature names to be stored and validated, you must convert them all to strings, "
            "by using X.columns = X.columns.astype(str) for example. Otherwise you can remove "
            "feature / column names from your input data, or convert them all to a non-string data type."
        )
        raise TypeError(msg)
    return names if types == ["str"] else None


def record_feature_names(estimator: Any, X: Any) -> None:
    """Set ``estimator.feature_names_in_`` from ``X`` at fit, or remove a previous fit's."""
    names = feature_names_of(X)
    if names is not None:
        estimator.feature_names_in_ = names
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_


def check_feature_names(estimator: Any, X: Any) -> None:
    """Compare the column names of queries ``X`` with those seen at fit, as scikit-learn does.

    Other names, or the same in another order, raise ``ValueError`` (the
    columns would be matched by position, silently wrong); names on one side
    only warn (``UserWarning``).
    """
    fitted = getattr(estimator, "feature_names_in_", None)
    given = feature_names_of(X)
    if fitted is None and given is None:
        return
    cls = type(estimator).__name__
    if given is None:
        warnings.warn(
            f"X does not have valid feature names, but {cls} was fitted with feature names", UserWarning, stacklevel=4
        )
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {cls} was fitted without feature names", UserWarning, stacklevel=4)
        return
    if len(fitted) == len(given) and np.all(fitted == given):
        return
    message = "The feature names should match those that were passed during fit.\n"
    unseen = sorted(set(given) - set(fitted))
    missing = sorted(set(fitted) - set(given))

    def listing(names: list) -> str:
        shown = [f"- {name}" for name in names[:5]] + (["- ..."] if len(names) > 5 else [])
        return "\n".join(shown) + "\n"

    if unseen:
        message += "Feature names unseen at fit time:\n" + listing(unseen)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + listing(missing)
    if not unseen and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def _numbers_of_objects(array: Any) -> Any:
    """An object array of numbers as float64, as scikit-learn converts it; others unchanged.

    An element that is not a number raises NumPy's ``TypeError`` ("float()
    argument must be a string or a real number, ...").
    """
    if isinstance(array, np.ndarray) and array.dtype.kind == "O":
        return array.astype(np.float64)
    return array


def _check_numeric_dtype(x: Any, name: str, xp: ModuleType) -> None:
    dtype = x.dtype
    if (isinstance(x, np.ndarray) and dtype.kind == "c") or (
        not isinstance(x, np.ndarray) and xp.isdtype(dtype, "complex floating")
    ):
        msg = f"Complex data not supported: {name} has dtype {dtype}; knn_gpu needs real numbers"
        raise ValueError(msg)
    is_host_non_real = isinstance(x, np.ndarray) and dtype.kind in "OSUVMmc"
    if is_host_non_real or not xp.isdtype(dtype, ("bool", "integral", "real floating")):
        msg = f"{name} must hold real numbers (bool, integer or floating), got dtype {dtype}"
        raise TypeError(msg)


def floating_dtype(dtype: Any, xp: ModuleType, device: Any) -> Any:
    """The floating dtype the data is stored and searched in for input of ``dtype``.

    float32 stays float32; float64 stays float64 where the device has it
    (float32 otherwise); the half-precision types (float16, torch's
    bfloat16) stay as they are (stored as given, ranked in float32, see
    :func:`distance_dtype_for`); other floating types become float32;
    integers and booleans become the namespace's default floating dtype on
    that device.
    """
    supported = _supported_dtypes(xp, device)
    if dtype == xp.float32:
        return xp.float32
    if dtype == xp.float64:
        return xp.float64 if "float64" in supported else xp.float32
    if is_half_precision(dtype, xp):
        return dtype
    if xp.isdtype(dtype, "real floating"):
        return xp.float32
    try:
        info = xp.__array_namespace_info__()
        default = info.default_dtypes(device=device)["real floating"]
    except (AttributeError, TypeError, KeyError):
        default = xp.float64
    if default == xp.float64 and "float64" not in supported:
        return xp.float32
    return default


def is_half_precision(dtype: Any, xp: ModuleType) -> bool:
    """True for 16-bit floating dtypes: float16, and bfloat16 where the library has it (torch)."""
    return bool(xp.isdtype(dtype, "real floating")) and xp.finfo(dtype).bits == 16


def distance_dtype_for(dtype: Any, xp: ModuleType) -> Any:
    """dtype of the distances returned for data of floating ``dtype``.

    The data's own dtype, except for half precision: float32, as FAISS
    returns (half-precision distances would overflow above 65504 and keep
    only about three significant digits).
    """
    return xp.float32 if is_half_precision(dtype, xp) else dtype


def _supported_dtypes(xp: ModuleType, device: Any) -> set[str]:
    try:
        return set(xp.__array_namespace_info__().dtypes(device=device))
    except (AttributeError, TypeError, ValueError):
        return {"float32", "float64"}


def exact_dtype(xp: ModuleType, device: Any) -> Any:
    """float64 where the device has it, float32 otherwise."""
    return xp.float64 if "float64" in _supported_dtypes(xp, device) else xp.float32


def check_finite(x: Any, name: str, xp: ModuleType, *, allow_nan: bool = False) -> None:
    """Raise ``ValueError`` if floating array ``x`` holds NaN (unless ``allow_nan``) or infinity.

    This reads one number back from the device: validation is the one place
    where knn_gpu synchronises on purpose, before any work starts. The
    number is the largest magnitude (``vector_norm`` with ``ord=inf``): NaN
    if any value is NaN, infinity if any is infinite. One reduction, where
    ``all(isfinite(x))`` is five kernels on torch (``isfinite`` decomposes
    into ``abs``, ``ne``, ``eq``, ``mul``) and a boolean copy of ``x``.
    """
    if allow_nan:
        if xp.isdtype(x.dtype, "real floating") and bool(xp.any(xp.isinf(x))):
            msg = f"{name} contains infinity; only NaN (a missing value) is allowed with this metric"
            raise ValueError(msg)
        return
    if not xp.isdtype(x.dtype, "real floating") or 0 in x.shape:
        return
    if hasattr(xp, "linalg"):
        finite = math.isfinite(float(xp.linalg.vector_norm(x, ord=xp.inf)))
    else:
        finite = bool(xp.all(xp.isfinite(x)))
    if not finite:
        msg = f"{name} contains NaN or infinity; remove or impute those values first"
        raise ValueError(msg)


def as_feature_matrix(
    x: Any, name: str, *, allow_empty: bool = False, distances: bool = False, allow_nan: bool = False
) -> Any:
    """Validate a 2-D array of features and return it (never a modified copy).

    Parameters
    ----------
    x : array_like or sparse matrix
        Anything NumPy can convert, an array of an Array API library, or a
        sparse matrix (``scipy.sparse``, ``cupyx.scipy.sparse``, torch
        sparse), densified by :mod:`knn_gpu._lib.sparse_input`.
    name : str
        The argument's name, used in error messages.
    allow_empty : bool
        Accept zero rows (a query batch may be empty; a training set may not).
    distances : bool
        ``x`` holds precomputed distances (``metric="precomputed"``): a sparse
        ``x`` is a neighbour graph, its missing entries +infinity (no
        neighbour), its stored entries checked finite and non-negative.
    allow_nan : bool
        Let NaN through (missing values, for ``metric="nan_euclidean"``);
        infinity is still refused.

    Returns
    -------
    array
        ``x`` itself when it is already an array, else ``numpy.asarray(x)``
        (a DataFrame's values, nullable columns as float64; an object array
        of numbers as float64), or the dense copy of a sparse ``x``, of its
        own library.
    """
    if is_sparse(x):
        return _dense_of_sparse(x, name, allow_empty=allow_empty, distances=distances)
    if array_api_compat.is_dask_array(x):
        return check_dask_features(x, name, allow_empty=allow_empty)
    array = _numbers_of_objects(_as_array(x, name))
    xp = array_api_compat.array_namespace(array)
    _check_numeric_dtype(array, name, xp)
    if array.ndim != 2:
        hint = ""
        if array.ndim == 1:
            hint = ". Reshape your data: x.reshape(1, -1) for a single example or x.reshape(-1, 1) for a single feature"
        msg = (
            f"{name} must be 2-D (n_samples, n_features), got {array.ndim}-D shape {tuple(array.shape)} "
            f"(Found array with dim {array.ndim}){hint}"
        )
        raise ValueError(msg)
    _check_matrix_size(array, name, allow_empty=allow_empty)
    check_finite(array, name, xp, allow_nan=allow_nan)
    return array


def check_dask_features(x: Any, name: str, *, allow_empty: bool = False) -> Any:
    """Checks of a Dask feature matrix on its metadata only: its values stay lazy (no NaN scan)."""
    if x.ndim != 2:
        msg = f"{name} must be 2-D (n_samples, n_features), got {x.ndim}-D shape {x.shape}"
        raise ValueError(msg)
    if any(np.isnan(size) for size in x.shape):
        msg = f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        raise ValueError(msg)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        msg = f"{name} must hold real numbers (bool, integer or floating), got dtype {x.dtype}"
        raise TypeError(msg)
    if (x.shape[0] == 0 and not allow_empty) or x.shape[1] == 0:
        msg = f"{name} has shape {x.shape}; at least 1 sample and 1 feature are required"
        raise ValueError(msg)
    return x


def refuse_dask(x: Any, owner: str) -> None:
    """``TypeError`` naming ``owner`` (a class) for a Dask array where only in-memory arrays are taken."""
    if array_api_compat.is_dask_array(x):
        msg = (
            f"{owner} does not take Dask arrays yet; use knn_gpu.KNN or KNNClassifier, "
            "which keep Dask training data distributed, or pass X.compute()"
        )
        raise TypeError(msg)


def _dense_of_sparse(x: Any, name: str, *, allow_empty: bool, distances: bool) -> Any:
    """A validated sparse matrix's dense copy (see :func:`as_feature_matrix`).

    Precomputed graphs: the stored entries were checked when densifying; the
    missing ones are +infinity on purpose, so no finiteness check follows.
    """
    if distances:
        array = densify_distances(x, name)
        _check_matrix_size(array, name, allow_empty=allow_empty)
        return array
    array = densify_features(x, name)
    xp = array_api_compat.array_namespace(array)
    _check_numeric_dtype(array, name, xp)
    _check_matrix_size(array, name, allow_empty=allow_empty)
    check_finite(array, name, xp)
    return array


def _check_matrix_size(array: Any, name: str, *, allow_empty: bool) -> None:
    """scikit-learn's errors for zero rows (unless ``allow_empty``) or zero columns."""
    rows, features = array.shape
    if rows == 0 and not allow_empty:
        msg = f"{name} has 0 sample(s): Found array with 0 sample(s) (shape={tuple(array.shape)}) while a minimum of 1 is required."
        raise ValueError(msg)
    if features == 0:
        msg = f"{name} has 0 feature(s): Found array with 0 feature(s) (shape={tuple(array.shape)}) while a minimum of 1 is required."
        raise ValueError(msg)


def as_targets(y: Any, name: str, num_samples: int, *, numeric: bool = True) -> Any:
    """Validate targets: 1-D or 2-D, one row per training sample.

    With ``numeric=False`` (class labels) any sortable NumPy dtype is allowed,
    strings included; NaN is still rejected.
    """
    if y is None:
        msg = f"this estimator requires y to be passed, but the target {name} is None"
        raise ValueError(msg)
    array = _as_array(y, name)
    xp = array_api_compat.array_namespace(array)
    if not numeric and array.ndim == 2 and array.shape[1] == 1:
        # A column vector of labels, accepted with scikit-learn's warning.
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the shape "
            "of y to (n_samples,), for example using ravel().",
            data_conversion_warning(),
            stacklevel=3,
        )
        array = xp.reshape(array, (-1,))
    if numeric:
        array = _numbers_of_objects(array)
        _check_numeric_dtype(array, name, xp)
    elif isinstance(array, np.ndarray) and array.dtype.kind in "cO":
        if array.dtype.kind == "c" or any(label is None for label in array.ravel()):
            msg = f"{name} must hold sortable labels (numbers or strings), got dtype {array.dtype}"
            raise TypeError(msg)
    if array.ndim not in (1, 2) or (not numeric and array.ndim != 1):
        expected = "1-D or 2-D" if numeric else "1-D"
        msg = f"{name} must be {expected}, got shape {tuple(array.shape)}"
        raise ValueError(msg)
    if array.shape[0] != num_samples:
        msg = (
            f"{name} must have one entry per training sample: X has "
            f"{num_samples} samples but {name} has {array.shape[0]}"
        )
        raise ValueError(msg)
    if array.ndim == 2 and array.shape[1] == 0:
        msg = f"{name} must have at least one output column, got shape {tuple(array.shape)}"
        raise ValueError(msg)
    if isinstance(array, np.ndarray) and array.dtype.kind != "f":
        return array  # integers, booleans, strings: nothing to check
    if array_api_compat.is_dask_array(array):
        return array  # lazy: its values are not scanned (as for Dask features)
    check_finite(array, name, xp)
    return array


def check_num_neighbors(value: Any, num_samples: int, name: str = "num_neighbors") -> int:
    """Return ``value`` as an ``int`` in ``[1, num_samples]`` or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{name} must be a positive integer, got {value}"
        raise ValueError(msg)
    if value > num_samples:
        msg = (
            f"{name}={value} is larger than the number of training samples "
            f"(n_samples = {num_samples}); expected {name} <= {num_samples}"
        )
        raise ValueError(msg)
    return int(value)


def check_batch_size(batch_size: Any) -> int | None:
    """``None`` or a positive ``int``; anything else raises."""
    return _none_or_positive_int(batch_size, "batch_size")


def _none_or_positive_int(value: Any, name: str, unit: str = "") -> int | None:
    """``value`` as an ``int`` if positive, ``None`` kept; a ``ValueError`` for other integers, else ``TypeError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        msg = f"{name} must be None or a positive integer{unit}, got {value!r}"
        raise ValueError(msg) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else TypeError(msg)
    return int(value)


def check_n_jobs(n_jobs: Any) -> int | None:
    """``None``, ``-1`` (both: every available core) or a positive ``int``; anything else raises."""
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
        msg = f"n_jobs must be None, -1 or a positive integer, got {n_jobs!r} of type {type(n_jobs).__name__}"
        raise TypeError(msg)
    if n_jobs == 0 or n_jobs < -1:
        msg = f"n_jobs must be None, -1 (every core) or a positive integer, got {n_jobs}"
        raise ValueError(msg)
    return int(n_jobs)


def check_memory_budget(memory_budget: Any) -> int | None:
    """``None`` or a positive number of bytes (an ``int``); anything else raises."""
    return _none_or_positive_int(memory_budget, "memory_budget", " (bytes)")


def check_out_of_core(out_of_core: Any) -> bool | None:
    """``None`` (automatic), ``True`` or ``False``; anything else raises ``TypeError``."""
    if out_of_core is None or isinstance(out_of_core, bool):
        return out_of_core
    msg = f"out_of_core must be None (automatic), True or False, got {out_of_core!r}"
    raise TypeError(msg)


#: scikit-learn's warning for 0 < p < 1 (its brute-force search, as every knn_gpu search, accepts them).
SEMI_METRIC_WARNING = (
    "Mind that for 0 < p < 1, Minkowski metrics are not distance metrics. Continuing the execution with "
    "`algorithm='brute'`."
)


def check_p(p: Any) -> float | None:
    """Return the Minkowski power ``p`` as a float (None stays None: p = 2), or raise.

    The one rule for ``p``, used by the functions and the estimators alike,
    as scikit-learn's: any ``p > 0``, ``float("inf")`` being the Chebyshev
    distance; ``0 < p < 1`` warns (``UserWarning``: no triangle inequality,
    a semi-metric; the exact brute-force search still ranks by it).
    ``TypeError`` unless a real number (bool refused); ``ValueError`` for
    NaN or ``p <= 0``.
    """
    if p is None:
        return None
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        msg = f"p must be a real number > 0 (float('inf') for chebyshev), got {p!r} of type {type(p).__name__}"
        raise TypeError(msg)
    p = float(p)
    if math.isnan(p) or p <= 0:
        msg = f"p must be > 0 (float('inf') for chebyshev; 0 < p < 1 is a semi-metric, with a warning), got {p!r}"
        raise ValueError(msg)
    if p < 1:
        warnings.warn(SEMI_METRIC_WARNING, UserWarning, stacklevel=3)
    return p


def check_square_distances(train: Any, name: str = "train") -> None:
    """For ``metric="precomputed"``: ``train`` must be a square matrix of distances, none negative.

    Reads one boolean back from the device (validation, before any work).
    """
    if train.shape[0] != train.shape[1]:
        msg = f"with metric='precomputed', {name} must be a square matrix of distances; got shape {tuple(train.shape)}"
        raise ValueError(msg)
    check_nonnegative_distances(train, name)


def check_nonnegative_distances(distances: Any, name: str) -> None:
    """For ``metric="precomputed"``: raise ``ValueError`` if ``distances`` has a negative value (one read back)."""
    xp = array_api_compat.array_namespace(distances)
    if distances.shape[0] and bool(xp.any(distances < 0)):
        msg = f"with metric='precomputed', {name} must hold distances (>= 0), but it has negative values"
        raise ValueError(msg)


def check_same_namespace(first: Any, second: Any, names: tuple[str, str]) -> ModuleType:
    """The common namespace of two arrays, or a ``TypeError`` naming both."""
    try:
        return array_api_compat.array_namespace(first, second)
    except TypeError as exc:
        msg = (
            f"{names[0]} and {names[1]} must come from the same array library, "
            f"got {type(first).__module__}.{type(first).__name__} and "
            f"{type(second).__module__}.{type(second).__name__}"
        )
        raise TypeError(msg) from exc


def check_radius(radius: Any, num_queries: int | None = None) -> Any:
    """Return ``radius`` checked: a ``float``, or a 1-D array of one radius per query.

    A real number ``>= 0`` (infinity allowed) comes back as a ``float``. An
    array of any namespace (a list or tuple: NumPy) of real numbers, shape
    ``(num_queries,)`` (any length while ``num_queries`` is None), each
    ``>= 0`` or infinity, comes back as an array in its own namespace, as
    scikit-learn's ``radius_neighbors`` takes them. ``TypeError`` for
    anything else (a bool, a string, an array of bools or strings);
    ``ValueError`` for NaN, negative values and a wrong shape. Checking the
    values of a device array reads one boolean back.
    """
    if isinstance(radius, (list, tuple)):
        radius = np.asarray(radius)
    if not isinstance(radius, numbers.Real) and array_api_compat.is_array_api_obj(radius):
        return _check_radius_array(radius, num_queries)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real):
        msg = f"radius must be a non-negative real number or an array of them, got {radius!r} of type {type(radius).__name__}"
        raise TypeError(msg)
    value = float(radius)
    if value != value or value < 0:  # NaN is the one value unequal to itself
        msg = f"radius must be a non-negative real number (distance <= radius is a neighbour), got {radius!r}"
        raise ValueError(msg)
    return value


def check_radius_shape(radius: Any, num_queries: int | None) -> None:
    """``ValueError`` unless the array ``radius`` is 1-D with ``num_queries`` entries (any number when None)."""
    if radius.ndim != 1 or (num_queries is not None and radius.shape[0] != num_queries):
        expected = "(n_queries,)" if num_queries is None else f"({num_queries},), one per query"
        msg = f"radius as an array must have shape {expected}, got shape {tuple(radius.shape)}"
        raise ValueError(msg)


def _check_radius_array(radius: Any, num_queries: int | None) -> Any:
    """:func:`check_radius` for an array: 1-D, real, ``(num_queries,)`` when known, every value ``>= 0`` or infinity."""
    xp = array_api_compat.array_namespace(radius)
    if not xp.isdtype(radius.dtype, ("real floating", "integral")):
        msg = f"radius must be a non-negative real number or an array of them, got an array of dtype {radius.dtype}"
        raise TypeError(msg)
    check_radius_shape(radius, num_queries)
    if radius.shape[0] and bool(xp.any(~(radius >= 0))):  # NaN fails >= 0 too
        msg = "radius must hold non-negative real numbers (infinity allowed), but it has negative or NaN values"
        raise ValueError(msg)
    return radius


def prepare_queries(
    queries: Any, num_features: int, dtype: Any, *, xp: Any, name: str = "X", expected_by: str = "train"
) -> Any:
    """Check the feature count of validated queries and cast them to ``dtype``."""
    check_feature_count(queries, num_features, name=name, expected_by=expected_by)
    return xp.astype(queries, dtype, copy=False)


def check_feature_count(queries: Any, num_features: int, *, name: str, expected_by: str) -> None:
    """Raise ``ValueError`` unless ``queries`` has ``num_features`` columns."""
    if queries.shape[1] != num_features:
        msg = f"{name} has {queries.shape[1]} features, but {expected_by} is expecting {num_features} features as input"
        raise ValueError(msg)


def check_precomputed_inputs(queries: Any, train: Any) -> None:
    """For ``metric="precomputed"``: a square ``train`` of distances, and query rows of distances to its samples."""
    check_square_distances(train, "train")
    check_feature_count(queries, train.shape[1], name="queries", expected_by="train")
    check_nonnegative_distances(queries, "queries")


def dtype_in(xp: Any, dtype: Any) -> Any:
    """The dtype of namespace ``xp`` with the name of ``dtype`` (of any library), e.g. NumPy's float32 in torch."""
    name = str(dtype).rsplit(".", 1)[-1]
    if array_api_compat.is_dask_namespace(xp):
        return np.dtype(name)  # Dask's dtypes are NumPy's; its namespace names only the standard's (no float16)
    if not hasattr(xp, name):
        msg = f"data of dtype {name} cannot move to {xp.__name__}, which has no {name}; convert it first"
        raise TypeError(msg)
    return getattr(xp, name)
