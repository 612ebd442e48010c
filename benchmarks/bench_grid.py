"""Benchmark: knn_gpu against FAISS IndexFlatL2 and scikit-learn's brute force on CPU at every point of the grid.

The grid varies one factor at a time around 2,000 queries x 100,000 x 64,
k = 10, float32 standard normal data, so that no single point can be tuned
for:

* ``k1 k10 k100 k1000``: k in {1, 10, 100, 1000} at 100,000 train x 64 dims;
* ``d8 d32 d64 d128 d256 d768 d768-k100``: dims at 50,000 train, k = 10
  (and k = 100 at 768);
* ``n20k n50k n100k n200k n1m``: 20,000 to 1,000,000 train x 64 dims, k = 10
  (1,000 queries at 1,000,000);
* ``batch1 batch10 batch100 batch2000``: queries sent in calls of 1 (100
  queries), 10, 100 and 2,000 (one call) at 100,000 x 64, k = 10 (seconds
  for all the queries of the point);
* ``f64``: the ``k10`` point in float64 (FAISS searches a float32 copy, as
  its users must);
* ``goal``: 10,000 queries x 100,000 x 64, k = 10, where the bare matrix
  product of the same shape is also timed (goal: knn_gpu / product <= 1.1).

Points that name the same measurement are run once (``n50k`` is ``d64``;
``n100k`` and ``batch2000`` are ``k10``).

Methods, run in interleaved rounds (one round times each method once, so
noise hits all of them alike) after one untimed warm-up call; medians and
bests of the rounds are reported and ratios are taken between medians of
the same run:

* knn_gpu fitted: ``KNN(num_neighbors=k).fit(train, zeros)`` outside the
  timing, ``model.kneighbors(queries)`` timed -- the figure compared with
  the peers, whose indexes are also built outside;
* knn_gpu functional: ``knn_gpu.kneighbors(queries, train, k)``, which
  builds its index inside every call;
* FAISS ``IndexFlatL2.search(queries, k)``;
* scikit-learn ``NearestNeighbors(algorithm="brute").kneighbors`` (skipped
  with ``--no-sklearn``).

Answers are checked twice. Against a float64 oracle written here (direct
differences, a stable sort: ties to the lower index) on the first
``ORACLE_QUERIES`` queries: "oracle" is the fraction of knn_gpu's indices
identical to the oracle's, position by position -- the contract says 1.
Against FAISS: "both correct" is the fraction of knn_gpu's neighbours whose
exact (float64) distance is at most the exact distance of FAISS's k-th
neighbour plus 1e-4 relative, a training row listed twice in a row counting
once.

The summary gives the geometric mean and the worst point of knn_gpu fitted /
FAISS and / scikit-learn.

Usage::

    python benchmarks/bench_grid.py                    # the grid, ~15 minutes on 2 cores
    python benchmarks/bench_grid.py --quick            # tiny shapes, a smoke test
    python benchmarks/bench_grid.py --points k1000,goal --repeats 5 --n-jobs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import faiss_index, machine_line, make_data, matmul_floor

import knn_gpu
from knn_gpu.cli.compare import machine_description

GOAL_FLOOR_RATIO = 1.1
ORACLE_QUERIES = 50
RELATIVE_TOLERANCE = 1e-4


def _point(name: str, n_query: int, n_train: int, dim: int, k: int, **extra) -> dict:
    return {"name": name, "n_query": n_query, "n_train": n_train, "dim": dim, "k": k, **extra}


GRID = [
    _point("k1", 2_000, 100_000, 64, 1),
    _point("k10", 2_000, 100_000, 64, 10, also=["n100k", "batch2000"]),
    _point("k100", 2_000, 100_000, 64, 100),
    _point("k1000", 2_000, 100_000, 64, 1000),
    _point("d8", 2_000, 50_000, 8, 10),
    _point("d32", 2_000, 50_000, 32, 10),
    _point("d64", 2_000, 50_000, 64, 10, also=["n50k"]),
    _point("d128", 2_000, 50_000, 128, 10),
    _point("d256", 2_000, 50_000, 256, 10),
    _point("d768", 2_000, 50_000, 768, 10),
    _point("d768-k100", 2_000, 50_000, 768, 100),
    _point("n20k", 2_000, 20_000, 64, 10),
    _point("n200k", 2_000, 200_000, 64, 10),
    _point("n1m", 1_000, 1_000_000, 64, 10),
    _point("batch1", 100, 100_000, 64, 10, call_rows=1),
    _point("batch10", 2_000, 100_000, 64, 10, call_rows=10),
    _point("batch100", 2_000, 100_000, 64, 10, call_rows=100),
    _point("f64", 2_000, 100_000, 64, 10, dtype="float64"),
    _point("goal", 10_000, 100_000, 64, 10, floor=True),
]


def quick_grid() -> list[dict]:
    """The same points, shrunk to run in seconds: queries / 10, train / 50, at most 20,000 (k = 1000 still fits)."""
    return [
        {**point, "n_query": max(10, point["n_query"] // 10), "n_train": min(20_000, point["n_train"] // 50)}
        for point in GRID
    ]


def select_points(grid: list[dict], names: str | None) -> list[dict]:
    """The points named in ``names`` (comma-separated, aliases allowed), in grid order."""
    if names is None:
        return grid
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    known = {name for point in grid for name in [point["name"], *point.get("also", [])]}
    unknown = sorted(wanted - known)
    if unknown:
        msg = f"--points: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        raise SystemExit(msg)
    return [point for point in grid if wanted & {point["name"], *point.get("also", [])}]


def in_calls(search: Callable, queries: np.ndarray, call_rows: int | None) -> Callable:
    """A method answering all ``queries`` in calls of ``call_rows`` queries (one call if None)."""
    if call_rows is None:
        return lambda: search(queries)

    def run():
        answers = [search(queries[start : start + call_rows]) for start in range(0, queries.shape[0], call_rows)]
        return np.concatenate([indices for _, indices in answers])

    return run


def methods_for(
    point: dict, train: np.ndarray, queries: np.ndarray, n_jobs: int | None, sklearn: bool
) -> dict[str, Callable]:
    """Name -> callable returning the indices (host NumPy), every index and model built here, untimed."""
    k, call_rows = point["k"], point.get("call_rows")
    model = knn_gpu.KNN(num_neighbors=k, n_jobs=n_jobs).fit(train, np.zeros(train.shape[0], dtype=np.float32))
    index = faiss_index(np.ascontiguousarray(train, dtype=np.float32))
    if index is None:
        raise SystemExit("bench_grid.py needs faiss-cpu: pip install -e '.[benchmark]'")
    faiss_queries = np.ascontiguousarray(queries, dtype=np.float32)
    methods = {
        "knn_gpu fitted": in_calls(model.kneighbors, queries, call_rows),
        "knn_gpu functional": in_calls(
            lambda block: knn_gpu.kneighbors(block, train, k, n_jobs=n_jobs), queries, call_rows
        ),
        "faiss": in_calls(lambda block: index.search(block, k), faiss_queries, call_rows),
    }
    if sklearn:
        from sklearn.neighbors import NearestNeighbors

        brute = NearestNeighbors(n_neighbors=k, algorithm="brute", n_jobs=n_jobs).fit(train)
        methods["sklearn brute"] = in_calls(lambda block: brute.kneighbors(block, k), queries, call_rows)
    if point.get("floor"):
        methods["matmul floor"] = matmul_floor(train, queries, k)
    return methods


def oracle_indices(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Float64 k nearest of each query by direct differences, ties to the lower index (a stable sort)."""
    train64 = train.astype(np.float64)
    result = np.empty((queries.shape[0], k), dtype=np.int64)
    for row, query in enumerate(queries.astype(np.float64)):
        distances = ((train64 - query) ** 2).sum(axis=1)
        result[row] = np.argsort(distances, kind="stable")[:k]
    return result


def indices_of(answer) -> np.ndarray | None:
    """The index array of a method's answer: ``(distances, indices)``, bare indices, or None."""
    if answer is None:
        return None
    return np.asarray(answer[1] if isinstance(answer, tuple) else answer)


def exact_sq_distances(train: np.ndarray, queries: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Float64 squared distance from each query to each listed training row; +inf for an invalid index."""
    valid = (indices >= 0) & (indices < train.shape[0])
    safe = np.where(valid, indices, 0)
    result = np.empty(indices.shape, dtype=np.float64)
    rows = max(1, 2**22 // (indices.shape[1] * train.shape[1]))  # about 32 MiB of float64 per block
    for start in range(0, queries.shape[0], rows):
        block = queries[start : start + rows].astype(np.float64)[:, None, :]
        neighbours = train[safe[start : start + rows]].astype(np.float64)
        result[start : start + rows] = ((neighbours - block) ** 2).sum(axis=2)
    return np.where(valid, result, np.inf)


def agreement(train: np.ndarray, queries: np.ndarray, ours: np.ndarray, faiss_indices: np.ndarray) -> dict:
    """Fraction of indices identical to FAISS's, and of neighbours within FAISS's exact k-th distance."""
    if ours.shape != faiss_indices.shape:
        return {"same_indices": 0.0, "both_correct": 0.0, "shape": list(ours.shape)}
    kth = exact_sq_distances(train, queries, faiss_indices).max(axis=1, keepdims=True)
    within = exact_sq_distances(train, queries, ours) <= kth * (1 + RELATIVE_TOLERANCE)
    ordered = np.sort(ours, axis=1)
    repeats = int((ordered[:, 1:] == ordered[:, :-1]).sum())
    return {
        "same_indices": float((ours == faiss_indices).mean()),
        "both_correct": max(0, int(within.sum()) - repeats) / ours.size,
    }


def run_point(point: dict, repeats: int, n_jobs: int | None, sklearn: bool = True) -> dict:
    train, queries = make_data(point)
    dtype = np.dtype(point.get("dtype", "float32"))
    train, queries = train.astype(dtype, copy=False), queries.astype(dtype, copy=False)
    methods = methods_for(point, train, queries, n_jobs, sklearn)
    answers = {name: indices_of(method()) for name, method in methods.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    best = {name: min(seconds) for name, seconds in times.items()}
    checks = {
        name: agreement(train, queries, answers[name], answers["faiss"])
        for name in ("knn_gpu fitted", "knn_gpu functional")
    }
    checked = min(ORACLE_QUERIES, queries.shape[0])
    oracle = oracle_indices(train, queries[:checked], point["k"])
    same_as_oracle = {
        name: float((answers[name][:checked] == oracle).mean()) for name in ("knn_gpu fitted", "knn_gpu functional")
    }
    result = {
        "point": point,
        "oracle_identical": same_as_oracle,
        "repeats": repeats,
        "seconds": times,
        "median": median,
        "best": best,
        "ratio_to_faiss": median["knn_gpu fitted"] / median["faiss"],
        "functional_ratio_to_faiss": median["knn_gpu functional"] / median["faiss"],
        "best_ratio_to_faiss": best["knn_gpu fitted"] / best["faiss"],
        "agreement": checks,
    }
    if "sklearn brute" in median:
        result["ratio_to_sklearn"] = median["knn_gpu fitted"] / median["sklearn brute"]
    if "matmul floor" in median:
        result["ratio_to_floor"] = median["knn_gpu fitted"] / median["matmul floor"]
    return result


HEADER = (
    f"{'point':<20} {'queries x train x dim':>24} {'k':>5} {'knn_gpu s':>10} {'best':>7} {'functional':>10} "
    f"{'faiss s':>8} {'best':>7} {'ratio':>6} {'func':>6} {'sklearn':>8} {'oracle':>7} {'both correct':>13}"
)


def point_label(point: dict) -> str:
    label = "=".join([point["name"], *point.get("also", [])])
    if point.get("call_rows"):
        label += f" ({point['call_rows']}/call)"
    return label


def point_line(result: dict) -> str:
    point, median, best = result["point"], result["median"], result["best"]
    shape = f"{point['n_query']} x {point['n_train']} x {point['dim']}"
    fitted, functional = result["agreement"]["knn_gpu fitted"], result["agreement"]["knn_gpu functional"]
    line = (
        f"{point_label(point):<20} {shape:>24} {point['k']:>5} {median['knn_gpu fitted']:>10.4f} "
        f"{best['knn_gpu fitted']:>7.4f} {median['knn_gpu functional']:>10.4f} {median['faiss']:>8.4f} "
        f"{best['faiss']:>7.4f} {result['ratio_to_faiss']:>6.2f} {result['functional_ratio_to_faiss']:>6.2f} "
        f"{result.get('ratio_to_sklearn', float('nan')):>8.2f} {result['oracle_identical']['knn_gpu fitted']:>7.4f} "
        f"{fitted['both_correct']:>13.4f}"
    )
    if result["oracle_identical"]["knn_gpu functional"] != result["oracle_identical"]["knn_gpu fitted"]:
        line += f"  (functional: oracle {result['oracle_identical']['knn_gpu functional']:.4f})"
    if functional["both_correct"] != fitted["both_correct"]:
        line += (
            f"  (functional: same idx {functional['same_indices']:.4f}, both correct {functional['both_correct']:.4f})"
        )
    if "ratio_to_floor" in result:
        line += (
            f"\n{'':<20} matmul floor {median['matmul floor']:.4f} s; knn_gpu / floor = "
            f"{result['ratio_to_floor']:.2f} (goal <= {GOAL_FLOOR_RATIO})"
        )
    return line


def geometric_mean(values) -> float:
    values = list(values)
    return float(np.exp(np.mean(np.log(values))))


def summary_lines(results: list[dict]) -> list[str]:
    worst = max(results, key=lambda result: result["ratio_to_faiss"])
    correct = [
        (result["agreement"][method]["both_correct"], point_label(result["point"]), method)
        for result in results
        for method in ("knn_gpu fitted", "knn_gpu functional")
    ]
    least = min(correct)
    lines = [
        f"geometric mean knn_gpu / faiss: {geometric_mean(r['ratio_to_faiss'] for r in results):.2f}"
        + (
            f"; / sklearn brute: {geometric_mean(r['ratio_to_sklearn'] for r in results):.2f} "
            f"(worst {max(r['ratio_to_sklearn'] for r in results):.2f})"
            if all("ratio_to_sklearn" in r for r in results)
            else ""
        ),
        "identical to the float64 oracle's indices (first queries of each point): "
        + ("every point" if all(min(r["oracle_identical"].values()) == 1.0 for r in results) else "NOT every point"),
        f"worst knn_gpu / faiss: {worst['ratio_to_faiss']:.2f} at {point_label(worst['point'])} "
        f"(functional there: {worst['functional_ratio_to_faiss']:.2f}); "
        f"lowest both correct: {least[0]:.4f} ({least[2]} at {least[1]})",
    ]
    for result in results:
        if "ratio_to_floor" in result:
            verdict = "met" if result["ratio_to_floor"] <= GOAL_FLOOR_RATIO else "NOT met"
            lines.append(
                f"{point_label(result['point'])}: knn_gpu / matmul floor = {result['ratio_to_floor']:.2f} "
                f"(goal <= {GOAL_FLOOR_RATIO}: {verdict}); knn_gpu / faiss = {result['ratio_to_faiss']:.2f}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--points", help="comma-separated point names to run (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per point (default 3)")
    parser.add_argument("--json", default="benchmarks/grid.json", help="where to write the results")
    parser.add_argument("--n-jobs", type=int, default=None, help="n_jobs passed to knn_gpu (default None)")
    parser.add_argument("--no-sklearn", action="store_true", help="leave out scikit-learn's brute force")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    points = select_points(quick_grid() if args.quick else GRID, args.points)

    import faiss

    machine = machine_description()
    print(machine_line(machine))
    print(
        f"knn_gpu {knn_gpu.__version__} ({Path(knn_gpu.__file__).parent}), n_jobs={args.n_jobs}; faiss threads {faiss.omp_get_max_threads()}; "
        f"float32 unless named; median of {args.repeats} interleaved rounds (best alongside); seconds for all queries"
        + ("; QUICK shapes" if args.quick else "")
    )
    print(
        "ratio = knn_gpu fitted / faiss; func = knn_gpu functional / faiss; sklearn = knn_gpu fitted / sklearn brute; "
        f"oracle = share of indices identical to the float64 oracle's (first {ORACLE_QUERIES} queries)"
    )
    print(HEADER)
    results = []
    for point in points:
        result = run_point(point, args.repeats, args.n_jobs, sklearn=not args.no_sklearn)
        print(point_line(result), flush=True)
        results.append(result)
    for line in summary_lines(results):
        print(line)
    report = {
        "machine": machine,
        "knn_gpu": {"version": knn_gpu.__version__, "path": str(Path(knn_gpu.__file__).parent)},
        "quick": args.quick,
        "n_jobs": args.n_jobs,
        "repeats": args.repeats,
    }
    report["points"] = results
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
