"""
Radius search
=============

:func:`knn_gpu.radius_neighbors` returns every training point within a
radius of each query — exactly: a point at distance equal to the radius is
a neighbour, as in scikit-learn. The result is three flat arrays,
``(distances, indices, offsets)``: query ``i``'s neighbours are
``indices[offsets[i]:offsets[i + 1]]``. A radius can be given per query.

Needs: knn_gpu and matplotlib.
"""

import matplotlib.pyplot as plt
import numpy as np

import knn_gpu

rng = np.random.default_rng(1)
train = rng.uniform(-3, 3, size=(1_500, 2))
queries = np.array([[-1.5, -1.0], [0.5, 1.2], [1.8, -1.6]])
radii = np.array([0.6, 1.0, 0.4])  # one radius per query

distances, indices, offsets = knn_gpu.radius_neighbors(queries, train, radii, sort_results=True)
for query in range(len(queries)):
    found = indices[offsets[query] : offsets[query + 1]]
    nearest = distances[offsets[query]]
    print(f"query {query}: radius {radii[query]}, {len(found)} neighbours, nearest at {nearest:.3f}")

# The same neighbours as a brute-force check in float64:
expected = [np.flatnonzero(np.hypot(*(train - q).T) <= r) for q, r in zip(queries, radii)]
print("same sets as brute force:", all(
    set(indices[offsets[i] : offsets[i + 1]].tolist()) == set(e.tolist()) for i, e in enumerate(expected)
))

# %%
# Each query's circle and the training points it found.

fig, ax = plt.subplots(figsize=(5.6, 5.6), layout="constrained")
ax.scatter(*train.T, s=4, color="lightgray", label="training points")
colors = ["tab:blue", "tab:orange", "tab:green"]
for query, color in enumerate(colors):
    found = indices[offsets[query] : offsets[query + 1]]
    ax.scatter(*train[found].T, s=8, color=color)
    ax.add_patch(plt.Circle(queries[query], radii[query], fill=False, color=color, linewidth=1.5))
    ax.scatter(*queries[query], marker="*", s=180, color=color, edgecolors="black", zorder=3)
ax.set_aspect("equal")
ax.set_title("radius_neighbors: one radius per query")
ax.legend(loc="upper right")
plt.show()

# %%
# The counts of neighbours give a density estimate: here, the number of
# training points within 0.3 of each point of a grid.

grid_x, grid_y = np.meshgrid(np.linspace(-3, 3, 61), np.linspace(-3, 3, 61))
grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
_, _, grid_offsets = knn_gpu.radius_neighbors(grid, train, 0.3)
counts = np.diff(grid_offsets).reshape(grid_x.shape)
fig, ax = plt.subplots(figsize=(5.6, 4.6), layout="constrained")
image = ax.pcolormesh(grid_x, grid_y, counts, shading="auto", cmap="viridis")
fig.colorbar(image, ax=ax, label="training points within 0.3")
ax.set_aspect("equal")
ax.set_title("neighbour counts on a grid")
plt.show()
