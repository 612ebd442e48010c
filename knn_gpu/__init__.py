"""knn_gpu: exact k-nearest neighbours, written once against the Array API standard.

The same code runs on NumPy (CPU), CuPy (CUDA), torch and array_api_strict.
"""

from .backends import available_backends
from .drop_in import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    KNeighborsTransformer,
    NearestNeighbors,
    kneighbors_graph,
)
from .drop_in_radius import (
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
    RadiusNeighborsTransformer,
    radius_neighbors_graph,
)
from .estimators import KNN, KNNClassifier
from .info import config_info, show_config
from .neighbors import kneighbors
from .radius import radius_neighbors
from .validation import NotFittedError

__all__ = [
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
    "show_config",
]
__version__ = "0.1.0"
