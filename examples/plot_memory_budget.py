"""
Memory held against the memory budget
=====================================

``memory_budget`` bounds the temporaries of a search's batches in flight.
This example traces the peak memory of one fitted model's
:meth:`knn_gpu.KNN.kneighbors` call with Python's ``tracemalloc`` (NumPy
allocations are traced) for budgets from 1 to 16 MiB, and subtracts the
output, which the budget does not cover. The peak stays below the budget and
grows with it: larger budgets buy larger batches, not unbounded memory.
(A batch holds at least one query, so a budget smaller than one query's
temporaries would be exceeded rather than refused; at this size one query
needs about 0.1 MiB.)

Needs: knn_gpu and matplotlib.
"""

import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

import knn_gpu

rng = np.random.default_rng(0)
train = rng.standard_normal((20_000, 32), dtype=np.float32)
queries = rng.standard_normal((1_000, 32), dtype=np.float32)
k = 10
model = knn_gpu.KNN(k).fit(train, np.zeros(len(train), dtype=np.float32))
output_bytes = queries.shape[0] * k * (4 + 8)  # float32 distances, int64 indices

budgets = [2**20 * mib for mib in (1, 2, 4, 8, 16)]
peaks = []
for budget in budgets:
    model.set_params(memory_budget=budget)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    model.kneighbors(queries)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peaks.append(peak - before - output_bytes)
    print(f"budget {budget / 2**20:5.0f} MiB: peak of the temporaries {peaks[-1] / 2**20:6.2f} MiB")

# %%
# The dashed line is "peak = budget". The default budget is 256 MiB on the
# host and half the free memory on a GPU.

mib = np.array(budgets) / 2**20
fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
ax.plot(mib, np.array(peaks) / 2**20, marker="o", label="traced peak (output excluded)")
ax.plot(mib, mib, linestyle="--", color="gray", label="peak = budget")
ax.set_xscale("log", base=2)
ax.set_yscale("log", base=2)
ax.set_xlabel("memory_budget (MiB)")
ax.set_ylabel("memory held during kneighbors (MiB)")
ax.set_title("1,000 queries × 20,000 × 32, k = 10, NumPy")
ax.legend()
plt.show()
