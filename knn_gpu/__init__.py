"""knn_gpu: exact k-nearest neighbours, written once against the Array API standard.

The same code runs on NumPy (CPU), CuPy (CUDA), torch and array_api_strict.
"""

from ._api.neighbors import kneighbors
from ._api.radius import radius_neighbors, to_object_arrays
from ._engine.metrics import BlockMetric
from ._estimators.drop_in import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    KNeighborsTransformer,
    NearestNeighbors,
    kneighbors_graph,
)
from ._estimators.drop_in_radius import (
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
    RadiusNeighborsTransformer,
    radius_neighbors_graph,
)
from ._estimators.knn import KNN, KNNClassifier
from ._lib.backends import available_backends
from ._lib.validation import NotFittedError
from ._version import __version__ as __version__
from .cli.info import config_info, show_config

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
    "config_info",
    "kneighbors",
    "kneighbors_graph",
    "radius_neighbors",
    "radius_neighbors_graph",
    "to_object_arrays",
    "show_config",
]
