"""
The tie rule: equal distances go to the lower index
===================================================

Twelve training points lie on a circle of radius 5 around the query, so
every one of them is at exactly the same distance. Asked for k = 4,
:func:`knn_gpu.kneighbors` returns the four with the lowest training
indices — on every backend, whatever the library's own selection
(``partition``, ``topk``) would have picked. The points are numbered in a
shuffled order around the circle so that the rule, not the geometry, picks
them.

Needs: knn_gpu and matplotlib.
"""

import matplotlib.pyplot as plt
import numpy as np

import knn_gpu

# The twelve integer points at distance exactly 5 from the origin (5² = 3² + 4²),
# numbered in a shuffled order around the circle.
circle = [(5, 0), (4, 3), (3, 4), (0, 5), (-3, 4), (-4, 3), (-5, 0), (-4, -3), (-3, -4), (0, -5), (3, -4), (4, -3)]
order = np.random.default_rng(3).permutation(len(circle))
points = np.array([circle[position] for position in order], dtype=np.float64)
query = np.zeros((1, 2))
distances, indices = knn_gpu.kneighbors(query, points, 4)
print("distances:", distances[0])
print("indices:  ", indices[0])

all_distances = np.sqrt(((points - query) ** 2).sum(axis=1))
tied = np.flatnonzero(all_distances == distances[0, -1])
print("training rows at the 4th distance:", tied)

# The same indices on every backend usable here (the tie rule is applied with
# standard functions after each library's own selection).
for backend in knn_gpu.available_backends():
    if backend == "torch":
        import torch

        found = knn_gpu.kneighbors(torch.asarray(query), torch.asarray(points), 4)[1]
    elif backend == "array_api_strict":
        import array_api_strict

        found = knn_gpu.kneighbors(array_api_strict.asarray(query), array_api_strict.asarray(points), 4)[1]
    else:
        continue
    print(f"{backend}: {np.asarray(found)[0]}")

# %%
# The chosen points (filled) are the lowest indices among those tied at the
# k-th distance. scikit-learn's answer among ties depends on its search: on
# these points its brute force gives the same four, its trees list them in
# another order (``[3, 1, 2, 0]`` with scikit-learn 1.9).

fig, ax = plt.subplots(figsize=(5, 5.4), layout="constrained")
chosen = set(indices[0].tolist())
for index, (x, y) in enumerate(points):
    is_chosen = index in chosen
    ax.scatter(x, y, s=260, color="tab:blue" if is_chosen else "white", edgecolors="tab:blue", zorder=2)
    ax.annotate(str(index), (x, y), ha="center", va="center", color="white" if is_chosen else "tab:blue", zorder=3)
ax.scatter([0], [0], marker="*", s=300, color="tab:red", zorder=3, label="query")
ax.set_aspect("equal")
ax.set_title("k = 4 of 12 equally distant points:\nthe lowest training indices win")
ax.legend(loc="lower right")
ax.set_xlim(-6.5, 6.5)
ax.set_ylim(-6.5, 6.5)
plt.show()
