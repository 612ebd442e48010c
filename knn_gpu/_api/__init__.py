"""The public functions, above the engine: :func:`knn_gpu.kneighbors`, :func:`knn_gpu.radius_neighbors`."""
