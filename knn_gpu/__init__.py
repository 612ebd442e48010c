"""knn_gpu: exact k-nearest neighbours, written once against the Array API standard.

The same code runs on NumPy (CPU), CuPy (CUDA), torch and array_api_strict.
"""

from .backends import available_backends
from .estimators import KNN, KNNClassifier
from .neighbors import kneighbors
from .validation import NotFittedError

__all__ = ["KNN", "KNNClassifier", "NotFittedError", "available_backends", "kneighbors"]
__version__ = "0.1.0"
