"""
Training data larger than the GPU (out of core)
===============================================

**Needs a CUDA GPU** (and CuPy: ``pip install -e ".[cuda12]"``): this
example is shown, not executed, when the site is built.

The training rows stay in host memory; each chunk is copied to the GPU once
per search and searched there, and the chunks' k best are merged with the
same rule as the in-memory search, so the indices are the same.
``memory_budget`` bounds what the GPU holds (one chunk and one batch's
temporaries).

Needs: knn_gpu, CuPy and a CUDA GPU.
"""

import cupy
import numpy as np

import knn_gpu

rng = np.random.default_rng(0)
train = rng.standard_normal((2_000_000, 128), dtype=np.float32)  # 1 GiB, stays in host memory
queries = cupy.asarray(rng.standard_normal((10_000, 128), dtype=np.float32))  # on the GPU

# Queries on the GPU and train in host memory: the search streams by itself.
distances, indices = knn_gpu.kneighbors(queries, train, 10, memory_budget=512 * 2**20)
print(type(indices), indices.device, indices.shape)  # a CuPy array on the GPU, (10000, 10)

# An estimator keeps host X in host memory when it would not fit in half the free GPU memory;
# out_of_core=True forces it.
model = knn_gpu.KNNClassifier(10, backend="cupy", out_of_core=True).fit(train, np.arange(len(train)) % 7)
print(model.predict(queries[:5]))
