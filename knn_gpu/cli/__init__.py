"""The command line, the top layer: ``knn-gpu demo``, ``compare``, ``info``.

It imports the layers below; nothing imports it but the package's front (``knn_gpu.config_info``,
``knn_gpu.show_config``).
"""

from .main import main

__all__ = ["main"]
