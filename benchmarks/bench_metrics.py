"""Benchmark: the directly computed metrics against scikit-learn's brute force, on NumPy.

Manhattan, Chebyshev, Minkowski p = 3 and four metrics of the registry
(canberra, correlation, seuclidean, hamming; one round each) at 2,000 queries
x 20,000 training rows x 32 features, k = 10: ``knn_gpu.kneighbors(..., metric=...)`` and
``NearestNeighbors(algorithm="brute", metric=...)`` (fitted outside the
timing), side by side, in interleaved rounds; the median of ``--repeats``
(one round for Minkowski, whose scikit-learn run alone takes 8-16 s)
and the ratio scikit-learn / knn_gpu (above 1: knn_gpu is faster). The
neighbours' distances must agree (to 1e-6, relative: float32 data is searched
in float64 and answered in float32); their indices may differ only among equal distances, which
scikit-learn does not order by index.

Usage::

    python benchmarks/bench_metrics.py           # 2,000 x 20,000 x 32, k = 10 (under a minute)
    python benchmarks/bench_metrics.py --quick   # 200 x 2,000 x 32 (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine_line, make_data
from sklearn.neighbors import NearestNeighbors

import knn_gpu

GOAL = {"n_train": 20_000, "n_query": 2_000, "dim": 32, "k": 10}
QUICK = {"n_train": 2_000, "n_query": 200, "dim": 32, "k": 10}

#: (label, knn_gpu keywords, scikit-learn keywords, rounds at most): scikit-learn's generic-p
#: brute force takes ~8-16 s here, so Minkowski gets one round to keep the run under a minute.
CASES = (
    ("manhattan", {"metric": "manhattan"}, {"metric": "manhattan"}, None),
    ("chebyshev", {"metric": "chebyshev"}, {"metric": "chebyshev"}, None),
    ("minkowski p=3", {"metric": "minkowski", "p": 3}, {"metric": "minkowski", "p": 3}, 1),
    # The registry's metrics (standard-only block functions on every namespace; SciPy's cdist for scikit-learn).
    ("canberra", {"metric": "canberra"}, {"metric": "canberra"}, 1),
    ("correlation", {"metric": "correlation"}, {"metric": "correlation"}, 1),
    ("seuclidean", {"metric": "seuclidean"}, {"metric": "seuclidean", "metric_params": {"V": None}}, 1),
    ("hamming", {"metric": "hamming"}, {"metric": "hamming"}, 1),
)


def timed(function, *args, **kwargs) -> tuple[float, tuple]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def same_neighbours(ours: tuple, theirs: tuple) -> bool:
    """Equal distances (relative 1e-6 for float32 results); indices equal wherever the distance is not tied."""
    our_distances, our_indices = ours
    their_distances, their_indices = theirs
    rtol = 1e-6 if our_distances.dtype == np.float32 else 1e-9  # float32 data: float32 distances
    if not np.allclose(our_distances, their_distances, rtol=rtol, atol=0):
        return False
    tied = np.zeros(our_distances.shape, dtype=bool)
    tied[:, 1:] |= our_distances[:, 1:] == our_distances[:, :-1]
    tied[:, :-1] |= our_distances[:, :-1] == our_distances[:, 1:]
    return bool(np.all((our_indices == their_indices) | tied))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("metrics.json"))
    args = parser.parse_args()
    shape = QUICK if args.quick else GOAL
    train, queries = make_data(shape)
    k = shape["k"]
    print(machine_line())
    print(
        f"shape: {shape['n_query']:,} queries x {shape['n_train']:,} training rows x {shape['dim']} features, k = {k}"
    )
    rows = []
    for label, ours_options, their_options, most_rounds in CASES:
        if their_options.get("metric_params") == {"V": None}:
            # knn_gpu's default V is the training rows' variance; SciPy's is that of queries and train together.
            their_options = {**their_options, "metric_params": {"V": np.var(train.astype(np.float64), axis=0, ddof=1)}}
        reference = NearestNeighbors(n_neighbors=k, algorithm="brute", **their_options).fit(train)
        ours_times, their_times = [], []
        agree = True
        for _ in range(min(args.repeats, most_rounds or args.repeats)):  # interleaved: both see the same machine state
            ours_time, ours = timed(knn_gpu.kneighbors, queries, train, k, **ours_options)
            their_time, theirs = timed(reference.kneighbors, queries)
            ours_times.append(ours_time)
            their_times.append(their_time)
            agree = agree and same_neighbours(ours, theirs)
        ours_median, their_median = statistics.median(ours_times), statistics.median(their_times)
        rows.append(
            {
                "metric": label,
                "knn_gpu_s": ours_median,
                "sklearn_brute_s": their_median,
                "speedup": their_median / ours_median,
                "same_neighbours": agree,
            }
        )
    print(f"{'metric':<16}{'knn_gpu s':>11}{'sklearn s':>11}{'sklearn/knn_gpu':>17}  same neighbours")
    for row in rows:
        print(
            f"{row['metric']:<16}{row['knn_gpu_s']:>11.3f}{row['sklearn_brute_s']:>11.3f}"
            f"{row['speedup']:>16.2f}x  {'yes' if row['same_neighbours'] else 'NO'}"
        )
    geometric = math.exp(statistics.fmean(math.log(row["speedup"]) for row in rows))
    print(f"geometric mean speedup over scikit-learn brute: {geometric:.2f}x")
    if not args.quick:
        args.json.write_text(json.dumps({"shape": shape, "results": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(row["same_neighbours"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
