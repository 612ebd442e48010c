"""Internals, bottom layer: namespaces and backends, devices, dtypes, input checks, sparse input.

Nothing here imports from the rest of knn_gpu.
"""
