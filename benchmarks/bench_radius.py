"""Benchmark: radius search and the graphs against the k-search at the same shape, and scikit-learn brute.

On NumPy, side by side: ``knn_gpu.radius_neighbors`` with a radius that holds
about ``k`` training rows per query on average (chosen from the exact
distances of a sample of queries), ``knn_gpu.kneighbors`` with that ``k``,
the graphs of a fitted ``knn_gpu.NearestNeighbors`` (``kneighbors_graph`` and
``radius_neighbors_graph``, distance mode, scipy CSR) and scikit-learn's
``NearestNeighbors(algorithm="brute").radius_neighbors`` (fitted outside the
timing). Interleaved rounds, median of ``--repeats``; knn_gpu's neighbours
must be scikit-learn's (as sets per query, but for distances within 1e-9 of
the radius, which float rounding may put either side). ``--metric`` picks
any metric of both libraries (``--p`` for minkowski).

Usage::

    python benchmarks/bench_radius.py                      # 2,000 x 20,000 x 32, k ~ 10 (under a minute)
    python benchmarks/bench_radius.py --metric manhattan   # a directly computed metric
    python benchmarks/bench_radius.py --quick              # 200 x 2,000 x 32 (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from _common import interleaved, machine_line, make_data

import knn_gpu
from knn_gpu import to_object_arrays

GOAL = {"n_train": 20_000, "n_query": 2_000, "dim": 32, "k": 10}
QUICK = {"n_train": 2_000, "n_query": 200, "dim": 32, "k": 10}

#: radius_neighbors / kneighbors at the same shape should stay at or below this.
RATIO_GOAL = 1.5


def exact_distances(queries: np.ndarray, train: np.ndarray, metric: str, p: float | None) -> np.ndarray:
    """float64 distances by SciPy's direct differences (the benchmark's oracle, independent of both libraries)."""
    from scipy.spatial.distance import cdist

    names = {"manhattan": "cityblock", "l1": "cityblock", "infinity": "chebyshev", "l2": "euclidean"}
    name = names.get(metric, metric)
    options = {"p": 2.0 if p is None else p} if name == "minkowski" else {}
    return cdist(queries.astype(np.float64), train.astype(np.float64), metric=name, **options)


def radius_for_mean_count(
    train: np.ndarray, queries: np.ndarray, k: int, sample: int = 200, metric: str = "euclidean", p: float | None = None
) -> float:
    """A radius holding ``k`` training rows per query on average over a sample of queries (float64 distances)."""
    distances = exact_distances(queries[:sample], train, metric, p).ravel()
    wanted = k * min(sample, queries.shape[0])
    below, above = np.partition(distances, [wanted - 1, wanted])[wanted - 1 : wanted + 1]
    return float((below + above) / 2)  # between two distances: no training row sits exactly at it


def _at_radius(query: np.ndarray, train: np.ndarray, rows: set, radius: float, metric: str, p: float | None) -> bool:
    """Whether every one of ``rows`` lies within 1e-9 of the radius (float64 direct differences)."""
    distances = exact_distances(query[None, :], train[sorted(rows)], metric, p)
    return bool(np.all(np.abs(distances - radius) < 1e-9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--metric", default="euclidean", help="any metric of both libraries (default euclidean)")
    parser.add_argument("--p", type=float, default=None, help="the power of metric='minkowski'")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("radius.json"))
    args = parser.parse_args()
    shape = QUICK if args.quick else GOAL
    from sklearn.neighbors import NearestNeighbors

    print(machine_line())
    train, queries = make_data(shape)
    metric, p, k = args.metric, args.p, shape["k"]
    radius = radius_for_mean_count(train, queries, k, metric=metric, p=p)
    print(
        f"{shape['n_query']} queries x {shape['n_train']} train x {shape['dim']}, float32, NumPy, metric {metric}"
        f"{'' if p is None else f' p={p}'}; radius {radius:.4f} (about {k} neighbours per query); "
        f"median of {args.repeats} interleaved rounds"
    )
    sk_options = {"metric": metric} if p is None else {"metric": metric, "p": p}
    model = NearestNeighbors(algorithm="brute", **sk_options).fit(train)
    fitted = knn_gpu.NearestNeighbors(n_neighbors=k, radius=radius, **sk_options).fit(train)
    power = {} if p is None else {"p": p}
    k_name, fitted_k_name = f"knn_gpu.kneighbors (k={k})", f"NearestNeighbors.kneighbors (k={k})"
    # Each call, and the k-search it is measured against: the functions build their index in the call,
    # the fitted model's methods do not.
    runs = {
        "knn_gpu.radius_neighbors": (
            lambda: knn_gpu.radius_neighbors(queries, train, radius, metric=metric, **power),
            k_name,
        ),
        k_name: (lambda: knn_gpu.kneighbors(queries, train, k, metric=metric, **power), None),
        fitted_k_name: (lambda: fitted.kneighbors(queries), None),
        "NearestNeighbors.radius_neighbors": (lambda: fitted.radius_neighbors(queries), fitted_k_name),
        "NearestNeighbors.radius_neighbors_graph": (
            lambda: fitted.radius_neighbors_graph(queries, mode="distance"),
            fitted_k_name,
        ),
        f"NearestNeighbors.kneighbors_graph (k={k})": (
            lambda: fitted.kneighbors_graph(queries, mode="distance"),
            fitted_k_name,
        ),
        "sklearn brute radius_neighbors": (lambda: model.radius_neighbors(queries, radius), k_name),
    }
    times, results = interleaved({name: run for name, (run, _) in runs.items()}, args.repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    radius_name, radius_graph_name, sklearn_name = (
        "knn_gpu.radius_neighbors",
        "NearestNeighbors.radius_neighbors_graph",
        "sklearn brute radius_neighbors",
    )
    ratios = {}
    for name, (_, base) in runs.items():
        relative = f"{medians[name] / medians[base]:5.2f}x {base.split(' ')[0]}" if base else ""
        print(f"  {name:42s} {medians[name]:8.3f} s  {relative:38s} (runs: "
              f"{', '.join(f'{t:.3f}' for t in times[name])})")  # fmt: skip
        if base and name != sklearn_name:
            ratios[name] = medians[name] / medians[base]
    for name, ratio in ratios.items():
        met = "met" if ratio <= RATIO_GOAL else "NOT met"
        print(f"{name} / {runs[name][1].split(' ')[0]} = {ratio:.2f} (goal <= {RATIO_GOAL}: {met})")
    ratio = ratios[radius_name]
    _, indices, offsets = results[radius_name]
    print(f"neighbours per query: mean {offsets[-1] / shape['n_query']:.2f}, max {np.diff(offsets).max()}")
    _, ours = to_object_arrays(*results[radius_name])
    _, sklearn_indices = results[sklearn_name]
    differing = [row for row, (got, want) in enumerate(zip(ours, sklearn_indices)) if set(got) != set(want)]
    borderline = [
        row
        for row in differing
        if _at_radius(queries[row], train, set(ours[row]) ^ set(sklearn_indices[row]), radius, metric, p)
    ]
    graph = results[radius_graph_name]
    agree = (
        len(differing) == len(borderline)
        and np.array_equal(graph.indptr, offsets)
        and np.array_equal(graph.indices, indices)
    )
    print(f"same neighbours as scikit-learn: {agree} ({len(differing)} rows differ, {len(borderline)} at the radius)")
    record = {
        "shape": shape,
        "metric": metric,
        "p": p,
        "radius": radius,
        "seconds": times,
        "median": medians,
        "ratio_to_kneighbors": ratio,
        "ratios_to_kneighbors": ratios,
        "mean_neighbours": float(offsets[-1] / shape["n_query"]),
        "agrees_with_sklearn": agree,
    }
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
