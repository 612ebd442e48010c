"""Benchmark: radius search against the k-search at the same shape, and scikit-learn brute's radius search.

On NumPy, side by side: ``knn_gpu.radius_neighbors`` with a radius that holds
about ``k`` training rows per query on average (chosen from the exact
distances of a sample of queries), ``knn_gpu.kneighbors`` with that ``k``,
and scikit-learn's ``NearestNeighbors(algorithm="brute").radius_neighbors``
(fitted outside the timing). Interleaved rounds, median of ``--repeats``;
knn_gpu's neighbours must be scikit-learn's (as sets per query, but for
distances within 1e-9 of the radius, which float rounding may put either side).

Usage::

    python benchmarks/bench_radius.py           # 2,000 x 20,000 x 32, k ~ 10 (well under a minute)
    python benchmarks/bench_radius.py --quick   # 200 x 2,000 x 32 (a smoke test)
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
from knn_gpu.radius import to_object_arrays

GOAL = {"n_train": 20_000, "n_query": 2_000, "dim": 32, "k": 10}
QUICK = {"n_train": 2_000, "n_query": 200, "dim": 32, "k": 10}

#: radius_neighbors / kneighbors at the same shape should stay at or below this.
RATIO_GOAL = 1.5


def radius_for_mean_count(train: np.ndarray, queries: np.ndarray, k: int, sample: int = 200) -> float:
    """A radius holding ``k`` training rows per query on average over a sample of queries (float64 distances)."""
    chosen = queries[:sample].astype(np.float64)
    train64 = train.astype(np.float64)
    squared = (chosen**2).sum(1)[:, None] - 2 * chosen @ train64.T + (train64**2).sum(1)[None, :]
    distances = np.sqrt(np.maximum(squared, 0)).ravel()
    wanted = k * chosen.shape[0]
    below, above = np.partition(distances, [wanted - 1, wanted])[wanted - 1 : wanted + 1]
    return float((below + above) / 2)  # between two distances: no training row sits exactly at it


def _at_radius(query: np.ndarray, train: np.ndarray, rows: set, radius: float) -> bool:
    """Whether every one of ``rows`` lies within 1e-9 of the radius (float64 direct differences)."""
    difference = train[sorted(rows)].astype(np.float64) - query.astype(np.float64)
    return bool(np.all(np.abs(np.sqrt((difference**2).sum(1)) - radius) < 1e-9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("radius.json"))
    args = parser.parse_args()
    shape = QUICK if args.quick else GOAL
    from sklearn.neighbors import NearestNeighbors

    print(machine_line())
    train, queries = make_data(shape)
    radius = radius_for_mean_count(train, queries, shape["k"])
    print(
        f"{shape['n_query']} queries x {shape['n_train']} train x {shape['dim']}, float32, NumPy; "
        f"radius {radius:.4f} (about {shape['k']} neighbours per query); median of {args.repeats} interleaved rounds"
    )
    model = NearestNeighbors(algorithm="brute").fit(train)
    runs = {
        "knn_gpu.radius_neighbors": lambda: knn_gpu.radius_neighbors(queries, train, radius),
        f"knn_gpu.kneighbors (k={shape['k']})": lambda: knn_gpu.kneighbors(queries, train, shape["k"]),
        "sklearn brute radius_neighbors": lambda: model.radius_neighbors(queries, radius),
    }
    times, results = interleaved(runs, args.repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    radius_name, k_name, sklearn_name = runs
    for name in runs:
        relative = medians[name] / medians[k_name]
        print(f"  {name:34s} {medians[name]:8.3f} s  {relative:5.2f}x kneighbors   (runs: "
              f"{', '.join(f'{t:.3f}' for t in times[name])})")  # fmt: skip
    ratio = medians[radius_name] / medians[k_name]
    print(
        f"radius_neighbors / kneighbors = {ratio:.2f} (goal <= {RATIO_GOAL}: {'met' if ratio <= RATIO_GOAL else 'NOT met'})"
    )
    _, indices, offsets = results[radius_name]
    print(f"neighbours per query: mean {offsets[-1] / shape['n_query']:.2f}, max {np.diff(offsets).max()}")
    _, ours = to_object_arrays(*results[radius_name])
    _, sklearn_indices = results[sklearn_name]
    differing = [row for row, (got, want) in enumerate(zip(ours, sklearn_indices)) if set(got) != set(want)]
    borderline = [
        row for row in differing if _at_radius(queries[row], train, set(ours[row]) ^ set(sklearn_indices[row]), radius)
    ]
    agree = len(differing) == len(borderline)
    print(f"same neighbours as scikit-learn: {agree} ({len(differing)} rows differ, {len(borderline)} at the radius)")
    record = {
        "shape": shape,
        "radius": radius,
        "seconds": times,
        "median": medians,
        "ratio_to_kneighbors": ratio,
        "mean_neighbours": float(offsets[-1] / shape["n_query"]),
        "agrees_with_sklearn": agree,
    }
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
