"""Benchmark: knn_gpu against FAISS IndexFlatL2 on CPU at every point of the speed grid.

The grid (2,000 queries unless named; float32 standard normal data):

* ``k1 k10 k100 k1000``: k in {1, 10, 100, 1000} at 100,000 train x 64 dims;
* ``d32 d64 d768 d768-k100``: 32, 64 and 768 dims at 50,000 train, k = 10
  (and k = 100 at 768);
* ``n20k n50k n100k``: 20,000, 50,000, 100,000 train x 64 dims, k = 10;
* ``batch10 batch2000``: the same 2,000 queries at 100,000 x 64, k = 10, sent
  in calls of 10 queries and in one call of 2,000 (seconds for all 2,000);
* ``goal``: 10,000 queries x 100,000 x 64, k = 10, where the bare matrix
  product of the same shape is also timed (goal: knn_gpu / product <= 1.3).

Points that name the same measurement are run once (``n50k`` is ``d64``;
``n100k`` and ``batch2000`` are ``k10``).

Methods, run in interleaved rounds (one round times each method once, so
noise hits all of them alike) after one untimed warm-up call; medians and
bests of the rounds are reported and ratios are taken between medians of
the same run:

* knn_gpu fitted: ``KNN(num_neighbors=k).fit(train, zeros)`` outside the
  timing, ``model.kneighbors(queries)`` timed -- the figure compared with
  FAISS, whose ``add`` is also outside;
* knn_gpu functional: ``knn_gpu.kneighbors(queries, train, k)``, which
  builds its index inside every call;
* FAISS ``IndexFlatL2.search(queries, k)`` (the index built outside).

Answers are checked against FAISS: "same idx" is the fraction of identical
indices, position by position (tied distances may be listed differently);
"both correct" is the fraction of knn_gpu's neighbours whose exact
(float64) distance is at most the exact distance of FAISS's k-th neighbour
plus 1e-4 relative, a training row listed twice in a row counting once.

Usage::

    python benchmarks/bench_grid.py                    # the grid, ~5-7 minutes on 2 cores
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

GOAL_FLOOR_RATIO = 1.3
RELATIVE_TOLERANCE = 1e-4


def _point(name: str, n_query: int, n_train: int, dim: int, k: int, **extra) -> dict:
    return {"name": name, "n_query": n_query, "n_train": n_train, "dim": dim, "k": k, **extra}


GRID = [
    _point("k1", 2_000, 100_000, 64, 1),
    _point("k10", 2_000, 100_000, 64, 10, also=["n100k", "batch2000"]),
    _point("k100", 2_000, 100_000, 64, 100),
    _point("k1000", 2_000, 100_000, 64, 1000),
    _point("d32", 2_000, 50_000, 32, 10),
    _point("d64", 2_000, 50_000, 64, 10, also=["n50k"]),
    _point("d768", 2_000, 50_000, 768, 10),
    _point("d768-k100", 2_000, 50_000, 768, 100),
    _point("n20k", 2_000, 20_000, 64, 10),
    _point("batch10", 2_000, 100_000, 64, 10, call_rows=10),
    _point("goal", 10_000, 100_000, 64, 10, floor=True),
]


def quick_grid() -> list[dict]:
    """The same points, shrunk to run in seconds: queries / 10, train / 50 (k = 1000 still fits)."""
    return [{**point, "n_query": point["n_query"] // 10, "n_train": point["n_train"] // 50} for point in GRID]


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


def methods_for(point: dict, train: np.ndarray, queries: np.ndarray, n_jobs: int | None) -> dict[str, Callable]:
    """Name -> callable returning the indices (host NumPy), every index and model built here, untimed."""
    k, call_rows = point["k"], point.get("call_rows")
    model = knn_gpu.KNN(num_neighbors=k, n_jobs=n_jobs).fit(train, np.zeros(train.shape[0], dtype=np.float32))
    index = faiss_index(train)
    if index is None:
        raise SystemExit("bench_grid.py needs faiss-cpu: pip install -e '.[benchmark]'")
    methods = {
        "knn_gpu fitted": in_calls(model.kneighbors, queries, call_rows),
        "knn_gpu functional": in_calls(
            lambda block: knn_gpu.kneighbors(block, train, k, n_jobs=n_jobs), queries, call_rows
        ),
        "faiss": in_calls(lambda block: index.search(block, k), queries, call_rows),
    }
    if point.get("floor"):
        methods["matmul floor"] = matmul_floor(train, queries, k)
    return methods


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


def run_point(point: dict, repeats: int, n_jobs: int | None) -> dict:
    train, queries = make_data(point)
    methods = methods_for(point, train, queries, n_jobs)
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
    result = {
        "point": point,
        "repeats": repeats,
        "seconds": times,
        "median": median,
        "best": best,
        "ratio_to_faiss": median["knn_gpu fitted"] / median["faiss"],
        "functional_ratio_to_faiss": median["knn_gpu functional"] / median["faiss"],
        "best_ratio_to_faiss": best["knn_gpu fitted"] / best["faiss"],
        "agreement": checks,
    }
    if "matmul floor" in median:
        result["ratio_to_floor"] = median["knn_gpu fitted"] / median["matmul floor"]
    return result


HEADER = (
    f"{'point':<20} {'queries x train x dim':>24} {'k':>5} {'knn_gpu s':>10} {'best':>7} {'functional':>10} "
    f"{'faiss s':>8} {'best':>7} {'ratio':>6} {'func':>6} {'same idx':>9} {'both correct':>13}"
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
        f"{fitted['same_indices']:>9.4f} {fitted['both_correct']:>13.4f}"
    )
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


def summary_lines(results: list[dict]) -> list[str]:
    worst = max(results, key=lambda result: result["ratio_to_faiss"])
    correct = [
        (result["agreement"][method]["both_correct"], point_label(result["point"]), method)
        for result in results
        for method in ("knn_gpu fitted", "knn_gpu functional")
    ]
    least = min(correct)
    lines = [
        f"worst knn_gpu / faiss: {worst['ratio_to_faiss']:.2f} at {point_label(worst['point'])} "
        f"(functional there: {worst['functional_ratio_to_faiss']:.2f}); "
        f"lowest both correct: {least[0]:.4f} ({least[2]} at {least[1]})"
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
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    points = select_points(quick_grid() if args.quick else GRID, args.points)

    import faiss

    machine = machine_description()
    print(machine_line(machine))
    print(
        f"knn_gpu {knn_gpu.__version__} ({Path(knn_gpu.__file__).parent}), n_jobs={args.n_jobs}; faiss threads {faiss.omp_get_max_threads()}; "
        f"float32; median of {args.repeats} interleaved rounds (best alongside); seconds for all queries"
        + ("; QUICK shapes" if args.quick else "")
    )
    print("ratio = knn_gpu fitted / faiss; func = knn_gpu functional / faiss")
    print(HEADER)
    results = []
    for point in points:
        result = run_point(point, args.repeats, args.n_jobs)
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
