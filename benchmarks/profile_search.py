"""Where the time of a product-metric k-search goes, phase by phase (issue 19, item 1).

Runs the fitted search (``KNN(k).fit(train).kneighbors(queries)``'s engine,
:func:`knn_gpu._engine.search.search_index`) on one thread with a
single-threaded BLAS, on NumPy, and times each phase of every batch by
wrapping the engine's own functions (names looked up in
``knn_gpu._engine.search`` at call time, so a wrapper sees every call):

- **product**: ``batch_keys`` (the ranking keys: one matrix product per batch);
- **selection**: ``smallest_k_columns`` (top-k: the block prefilter's choice of
  blocks, then the candidates among the kept blocks' keys);
- **gathers**: ``take``, ``take_from_rows``, ``take_along_axis`` (candidate
  keys, positions, final order);
- **re-scoring**: ``gathered_distances`` (the candidates' rows, gathered a
  cache-sized step at a time, and their float64 distances);
- **other**: what is left of the batches' time: the prefilter's block minima,
  the final stable sort, index arithmetic.

The shares are of one core's time; the search itself runs a batch per core
(``n_jobs``), so its wall time is about this total divided by the cores.
This program reaches into the engine on purpose (it times its phases); the
other benchmarks use the public surface only.

Usage::

    python benchmarks/profile_search.py                 # k = 10/100/1000 at d = 64, k = 10/100 at d = 768
    python benchmarks/profile_search.py --quick         # small shapes, a smoke test
    python benchmarks/profile_search.py --json /tmp/profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import faiss_index, machine_line, make_data  # noqa: E402

from knn_gpu import KNN  # noqa: E402
from knn_gpu._engine import search as search_module  # noqa: E402

PHASES = {
    "batch_keys": "product",
    "smallest_k_columns": "selection",
    "take": "gathers",
    "take_from_rows": "gathers",
    "take_along_axis": "gathers",
    "gathered_distances": "re-scoring",
    "exact_distances": "re-scoring",
}
COLUMNS = ("product", "selection", "gathers", "re-scoring", "other")

POINTS = {
    "d64-k10": {"n_query": 2000, "n_train": 100_000, "dim": 64, "k": 10},
    "d64-k100": {"n_query": 2000, "n_train": 100_000, "dim": 64, "k": 100},
    "d64-k1000": {"n_query": 2000, "n_train": 100_000, "dim": 64, "k": 1000},
    "d768-k10": {"n_query": 2000, "n_train": 50_000, "dim": 768, "k": 10},
    "d768-k100": {"n_query": 2000, "n_train": 50_000, "dim": 768, "k": 100},
}
QUICK = {
    "d16-k10": {"n_query": 200, "n_train": 5000, "dim": 16, "k": 10},
    "d16-k100": {"n_query": 200, "n_train": 5000, "dim": 16, "k": 100},
}


class PhaseTimer:
    """Wraps the engine's phase functions; nested calls count once, in the outermost phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.depth = 0
        self.originals = {name: getattr(search_module, name) for name in PHASES}

    def wrap(self, name: str):
        original, phase = self.originals[name], PHASES[name]

        def timed(*args, **kwargs):
            if self.depth:
                return original(*args, **kwargs)
            self.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                self.depth -= 1

        return timed

    def __enter__(self) -> PhaseTimer:
        for name in PHASES:
            setattr(search_module, name, self.wrap(name))
        batches = search_module._search_batch

        def timed_batch(*args, **kwargs):
            start = time.perf_counter()
            try:
                return batches(*args, **kwargs)
            finally:
                self.seconds["batches"] += time.perf_counter() - start

        self.original_batch = batches
        search_module._search_batch = timed_batch
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self.originals.items():
            setattr(search_module, name, original)
        search_module._search_batch = self.original_batch


def profile_point(shape: dict, repeats: int) -> dict:
    train, queries = make_data(shape)
    k = shape["k"]
    model = KNN(k, n_jobs=1).fit(train, np.zeros(train.shape[0]))
    model.kneighbors(queries[:64])  # warm-up
    runs = []
    for _ in range(repeats):
        with PhaseTimer() as timer:
            start = time.perf_counter()
            model.kneighbors(queries)
            total = time.perf_counter() - start
        seconds = dict(timer.seconds)
        seconds["other"] = seconds.pop("batches") - sum(seconds.get(phase, 0.0) for phase in COLUMNS[:-1])
        seconds["total"] = total
        runs.append(seconds)
    best = min(runs, key=lambda run: run["total"])
    faiss_seconds = None
    index = faiss_index(train)
    if index is not None:
        import faiss

        faiss.omp_set_num_threads(1)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            index.search(queries, k)
            times.append(time.perf_counter() - start)
        faiss_seconds = min(times)
    return {"shape": shape, "seconds": {key: best.get(key, 0.0) for key in (*COLUMNS, "total")}, "faiss": faiss_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test (figures mean nothing)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point; the fastest is shown (default 3)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    points = QUICK if args.quick else POINTS
    print(machine_line())
    print("one thread, single-threaded BLAS; NumPy float32; fitted search; best of", args.repeats, "runs")
    header = f"{'point':<11} {'queries x train x dim':>22} {'k':>5}  " + "  ".join(f"{c:>10}" for c in COLUMNS)
    print(header + f"  {'total s':>8}  {'faiss s':>8}  {'/faiss':>6}")
    results = {}
    for name, shape in points.items():
        result = profile_point(shape, args.repeats)
        results[name] = result
        seconds = result["seconds"]
        shares = "  ".join(f"{seconds[c]:6.3f} {100 * seconds[c] / seconds['total']:2.0f}%" for c in COLUMNS)
        faiss_seconds = result["faiss"]
        ratio = f"{seconds['total'] / faiss_seconds:6.2f}" if faiss_seconds else "     -"
        faiss_text = f"{faiss_seconds:8.3f}" if faiss_seconds else "       -"
        dims = f"{shape['n_query']} x {shape['n_train']} x {shape['dim']}"
        print(f"{name:<11} {dims:>22} {shape['k']:>5}  {shares}  {seconds['total']:8.3f}  {faiss_text}  {ratio}")
    print("seconds and share of the total per phase; 'other' = block minima, final sort, index arithmetic")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "points": results}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
