"""``python -m knn_gpu``: the same as the ``knn-gpu`` console script."""

import sys

from .cli import main

sys.exit(main())
