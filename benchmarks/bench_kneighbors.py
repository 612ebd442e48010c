"""Benchmark: knn_gpu against its peers and the matrix-product floor, side by side.

Every method runs on the same data in interleaved rounds (one round times each
method once), so a noisy machine slows all of them alike; medians are
reported, with ratios to knn_gpu (NumPy backend) measured in the same run.

Methods: knn_gpu on every usable backend (CuPy timed with device
synchronisation) and on NumPy with ``n_jobs=1`` (no worker threads), scikit-learn ``NearestNeighbors(algorithm="brute")``, FAISS
``IndexFlatL2`` (when ``faiss-cpu`` is installed), the bare matrix product of
the same shape (the floor: ``queries @ train.T`` in 1024-row blocks, results
discarded) and, on the smallest shape only, the tutorial's pure-Python loop.

Usage::

    python benchmarks/bench_kneighbors.py            # the grid, ~10 minutes on 2 cores
    python benchmarks/bench_kneighbors.py --quick    # small shapes only
    python benchmarks/bench_kneighbors.py --memory   # peak memory of the 20k x 50k x 32 search
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import faiss_index, make_data, matmul_floor, peak_rss_mib

import knn_gpu
from knn_gpu._lib.backends import namespace_of_backend, to_host
from knn_gpu.cli.compare import machine_description

GOAL = {"name": "goal", "n_train": 100_000, "n_query": 10_000, "dim": 64, "k": 10}
SMALL = {"name": "small", "n_train": 10_000, "n_query": 1_000, "dim": 32, "k": 10}
TUTORIAL = {"name": "tutorial-loop", "n_train": 2_000, "n_query": 50, "dim": 16, "k": 5}
SCALING = [
    {"name": f"n_train={n}", "n_train": n, "n_query": 2_000, "dim": 64, "k": 10} for n in (25_000, 50_000, 100_000)
] + [{"name": f"n_query={m}", "n_train": 50_000, "n_query": m, "dim": 64, "k": 10} for m in (2_500, 5_000, 10_000)]


def tutorial_loop(train: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The classic from-scratch KNN: a Python loop over every training row."""
    result = []
    for query in queries.tolist():
        distances = []
        for index, row in enumerate(train.tolist()):
            distances.append((math.sqrt(sum((a - b) ** 2 for a, b in zip(query, row))), index))
        distances.sort()
        result.append([index for _, index in distances[:k]])
    return np.asarray(result)


def knn_gpu_method(backend: str, train: np.ndarray, queries: np.ndarray, k: int, n_jobs: int | None = None) -> Callable:
    xp = namespace_of_backend(backend)
    train_b, queries_b = xp.asarray(train), xp.asarray(queries)
    synchronize = (lambda: __import__("cupy").cuda.Device().synchronize()) if backend == "cupy" else (lambda: None)

    def run():
        distances, indices = knn_gpu.kneighbors(queries_b, train_b, k, n_jobs=n_jobs)
        synchronize()
        return indices

    return run


def sklearn_method(train: np.ndarray, queries: np.ndarray, k: int) -> Callable | None:
    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        return None
    model = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train)
    return lambda: model.kneighbors(queries)[1]


def faiss_method(train: np.ndarray, queries: np.ndarray, k: int) -> Callable | None:
    index = faiss_index(train)
    return None if index is None else lambda: index.search(queries, k)[1]


def methods_for(shape: dict, train, queries, backends: list[str]) -> dict[str, Callable]:
    k = shape["k"]
    methods: dict[str, Callable] = {}
    for backend in backends:
        if backend == "array_api_strict" and shape["n_train"] * shape["n_query"] > 2e8:
            continue  # a reference implementation, not a fast one: small shapes only
        methods[f"knn_gpu[{backend}]"] = knn_gpu_method(backend, train, queries, k)
    # The same search on one thread (multi-threaded BLAS, single-threaded selection).
    methods["knn_gpu[numpy] n_jobs=1"] = knn_gpu_method("numpy", train, queries, k, n_jobs=1)
    for name, factory in (("sklearn brute", sklearn_method), ("faiss IndexFlatL2", faiss_method)):
        method = factory(train, queries, k)
        if method is not None:
            methods[name] = method
    methods["matmul floor"] = matmul_floor(train, queries, k)
    if shape["name"] == TUTORIAL["name"]:
        methods["tutorial python loop"] = lambda: tutorial_loop(train, queries, k)
    return methods


def run_shape(shape: dict, backends: list[str], repeats: int) -> dict:
    train, queries = make_data(shape)
    methods = methods_for(shape, train, queries, backends)
    times: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, np.ndarray | None] = {}
    for name, method in methods.items():  # warm-up, and the answers to compare
        results[name] = method()
    for _ in range(repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - start)
    reference = to_host(results["knn_gpu[numpy]"])
    rows = []
    base = statistics.median(times["knn_gpu[numpy]"])
    for name in methods:
        seconds = statistics.median(times[name])
        answer = results[name]
        agreement = None if answer is None else float((to_host(answer) == reference).mean())
        rows.append(
            {
                "method": name,
                "seconds": seconds,
                "all_seconds": times[name],
                "ratio_to_knn_gpu_numpy": seconds / base,
                "index_agreement_with_knn_gpu_numpy": agreement,
            }
        )
    return {"shape": shape, "repeats": repeats, "rows": rows}


def print_shape(result: dict) -> None:
    shape = result["shape"]
    print(
        f"\n## {shape['name']}: {shape['n_query']} queries x {shape['n_train']} train x {shape['dim']} dims, "
        f"k={shape['k']}, float32, median of {result['repeats']}"
    )
    print(f"{'method':<24} {'seconds':>9} {'x knn_gpu[numpy]':>17} {'agreement':>10}")
    for row in result["rows"]:
        agreement = (
            "-"
            if row["index_agreement_with_knn_gpu_numpy"] is None
            else f"{row['index_agreement_with_knn_gpu_numpy']:.4f}"
        )
        print(f"{row['method']:<24} {row['seconds']:>9.3f} {row['ratio_to_knn_gpu_numpy']:>17.2f} {agreement:>10}")
    by_name = {row["method"]: row["seconds"] for row in result["rows"]}
    ours = by_name["knn_gpu[numpy]"]
    goals = []
    if "faiss IndexFlatL2" in by_name:
        goals.append(f"knn_gpu / faiss = {ours / by_name['faiss IndexFlatL2']:.2f} (goal <= 1.0)")
    if "sklearn brute" in by_name:
        goals.append(f"sklearn / knn_gpu = {by_name['sklearn brute'] / ours:.2f} (goal >= 3)")
    goals.append(f"knn_gpu / matmul floor = {ours / by_name['matmul floor']:.2f} (goal <= 1.5)")
    print("ratios: " + "; ".join(goals))


def peak_memory_child(n_query: int) -> None:
    """Run in a subprocess: data, then the search; print peak RSS in MiB."""
    shape = {"n_train": 50_000, "n_query": n_query, "dim": 32}
    train, queries = make_data(shape)
    before = peak_rss_mib()
    knn_gpu.kneighbors(queries, train, 10)
    after = peak_rss_mib()
    print(json.dumps({"n_query": n_query, "peak_rss_mib": after, "peak_before_search_mib": before}))


def measure_memory() -> list[dict]:
    records = []
    print("\n## peak memory: n_query x 50,000 train x 32 dims, k=10, float32 (full distance matrix at 20k: 3.7 GiB)")
    for n_query in (5_000, 20_000):
        output = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n_query)], capture_output=True, text=True, check=True
        ).stdout
        record = json.loads(output.strip().splitlines()[-1])
        records.append(record)
        print(
            f"n_query={n_query:>6}: peak RSS {record['peak_rss_mib']:.0f} MiB "
            f"(data and imports alone: {record['peak_before_search_mib']:.0f} MiB)"
        )
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--memory", action="store_true", help="only the peak-memory measurement")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write the results")
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return 0
    backends = knn_gpu.available_backends()
    report: dict = {"machine": machine_description(), "backends": backends, "shapes": [], "memory": []}
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; backends: {', '.join(backends)}")
    if not args.memory:
        shapes = [TUTORIAL, SMALL] if args.quick else [TUTORIAL, SMALL, *SCALING, GOAL]
        for shape in shapes:
            result = run_shape(shape, backends, args.repeats)
            print_shape(result)
            report["shapes"].append(result)
    if args.memory or not args.quick:
        report["memory"] = measure_memory()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
