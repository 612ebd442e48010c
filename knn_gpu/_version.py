"""The package version, in one place (read by ``knn_gpu.__version__`` and ``knn-gpu info``)."""

__version__ = "0.1.0"
