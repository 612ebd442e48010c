"""
Time against training-set size, per backend
===========================================

The same :func:`knn_gpu.kneighbors` call timed on every backend usable on
this machine, for training sets from 1,000 to 16,000 rows: the measurement
``knn-gpu compare --sweep n_train`` makes (there with larger sizes and the
peers scikit-learn and FAISS). On a machine with a GPU the CuPy and
torch-CUDA lines appear by themselves; this page was built on a CPU.

Needs: knn_gpu and matplotlib (``pip install -e ".[compare]"``); torch and
array-api-strict add their lines where installed.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import knn_gpu

rng = np.random.default_rng(0)
dim, k, n_queries = 32, 10, 200
sizes = [1_000, 2_000, 4_000, 8_000, 16_000]
train_all = rng.standard_normal((sizes[-1], dim), dtype=np.float32)
queries_host = rng.standard_normal((n_queries, dim), dtype=np.float32)


def to_namespace(array, backend):
    """``array`` (NumPy) in ``backend``'s library and device."""
    if backend == "numpy" or backend == "dask":
        return array
    if backend == "array_api_strict":
        import array_api_strict

        return array_api_strict.asarray(array)
    if backend.startswith("torch"):
        import torch

        return torch.asarray(array, device="cuda" if backend == "torch:cuda" else "cpu")
    if backend == "cupy":
        import cupy

        return cupy.asarray(array)
    raise ValueError(backend)


backends = [name for name in knn_gpu.available_backends() if name != "dask"]
print("backends timed here:", backends)

timings = {}
for backend in backends:
    queries = to_namespace(queries_host, backend)
    seconds = []
    for size in sizes:
        train = to_namespace(train_all[:size], backend)
        knn_gpu.kneighbors(queries, train, k)  # warm-up
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            knn_gpu.kneighbors(queries, train, k)
            runs.append(time.perf_counter() - start)
        seconds.append(min(runs))  # the least disturbed of three runs (the machine may be shared)
    timings[backend] = seconds

# %%
# The times were measured while this page was built, on whatever machine
# built it (for this site's published build: 2 shared CPU cores, no GPU), so
# read them loosely; ``knn-gpu compare`` and the programs in ``benchmarks/``
# measure with more care. Every backend gives the same neighbours (the tie rule makes them
# identical, not only close); the lines differ only in time.

reference = knn_gpu.kneighbors(queries_host, train_all, k)[1]
for backend in backends:
    found = knn_gpu.kneighbors(to_namespace(queries_host, backend), to_namespace(train_all, backend), k)[1]
    print(f"{backend:18s} same indices as NumPy: {bool((np.asarray(found) == reference).all())}")

fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
for backend, seconds in timings.items():
    ax.loglog(sizes, seconds, marker="o", label=backend)
ax.set_xlabel("training rows (32 features)")
ax.set_ylabel(f"seconds (best of 3), {n_queries} queries, k = {k}")
ax.set_title("kneighbors: time against training-set size")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
plt.show()
