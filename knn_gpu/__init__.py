"""knn_gpu: exact k-nearest neighbours, written once against the Array API standard.

The same code runs on NumPy (CPU), CuPy (CUDA), torch and array_api_strict.

``import knn_gpu`` needs only NumPy and the array API helpers: the tutorial's
``KNN`` / ``KNNClassifier`` and the functions never import scikit-learn. The
scikit-learn-named classes (``KNeighborsClassifier``, ``NearestNeighbors``...)
are built on scikit-learn's own base classes; their top-level names load
:mod:`knn_gpu._estimators.drop_in` / :mod:`knn_gpu._estimators.drop_in_radius`
on first use, and without scikit-learn that use raises one ``ImportError``
naming the extra (``pip install "knn-gpu[sklearn]"``).
"""

from importlib import import_module
from typing import Any

from ._api.neighbors import kneighbors
from ._api.radius import radius_neighbors, to_object_arrays
from ._engine.metrics import BlockMetric
from ._estimators.knn import KNN, KNNClassifier
from ._lib.backends import available_backends
from ._lib.config import config_context, get_config, set_config
from ._lib.validation import NotFittedError
from ._version import __version__ as __version__
from .cli.info import config_info, show_config

#: Top-level names of the scikit-learn-named classes and functions, and the module defining each.
_SKLEARN_NAMED = {
    "KNeighborsClassifier": "drop_in",
    "KNeighborsRegressor": "drop_in",
    "KNeighborsTransformer": "drop_in",
    "NearestNeighbors": "drop_in",
    "kneighbors_graph": "drop_in",
    "RadiusNeighborsClassifier": "drop_in_radius",
    "RadiusNeighborsRegressor": "drop_in_radius",
    "RadiusNeighborsTransformer": "drop_in_radius",
    "radius_neighbors_graph": "drop_in_radius",
}


def __getattr__(name: str) -> Any:
    """Load a scikit-learn-named class or function on first use (they import scikit-learn)."""
    module = _SKLEARN_NAMED.get(name)
    if module is None:
        msg = f"module 'knn_gpu' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(import_module(f"._estimators.{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SKLEARN_NAMED))


__all__ = [
    "BlockMetric",
    "KNN",
    "KNNClassifier",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KNeighborsTransformer",
    "NearestNeighbors",
    "NotFittedError",
    "RadiusNeighborsClassifier",
    "RadiusNeighborsRegressor",
    "RadiusNeighborsTransformer",
    "available_backends",
    "config_context",
    "config_info",
    "get_config",
    "kneighbors",
    "kneighbors_graph",
    "radius_neighbors",
    "radius_neighbors_graph",
    "set_config",
    "to_object_arrays",
    "show_config",
]
