"""Internals: the searches. Index building, the product, direct, streamed and Dask searches, top-k,
merging, radius search, the reductions of neighbours to predictions, and the memory budget and threads.

The engine imports only :mod:`knn_gpu._lib`; never the public functions, the estimators or the command line.
"""
