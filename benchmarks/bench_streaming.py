"""Benchmark: out-of-core search against the in-memory search of the same data, side by side.

On NumPy, host and "device" are the same memory, so this measures what
streaming itself costs: per-chunk index builds, per-chunk selection and the
merges. Both runs are the functional ``knn_gpu.kneighbors`` (which builds its
index inside the call), interleaved, median of ``--repeats``; the indices of
the two must be identical. A third, traced run (tracemalloc, in a fresh
subprocess so that nothing else counts) gives the out-of-core call's peak
against ``budget + output``.

Usage::

    python benchmarks/bench_streaming.py                 # 10,000 x 1,000,000 x 64, k = 10, 256 MiB (~4 min)
    python benchmarks/bench_streaming.py --quick         # 1,000 x 50,000 x 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
from _common import interleaved, machine_line, make_data

import knn_gpu

GOAL = {"n_train": 1_000_000, "n_query": 10_000, "dim": 64, "k": 10, "budget_mib": 256}
QUICK = {"n_train": 50_000, "n_query": 1_000, "dim": 64, "k": 10, "budget_mib": 16}


def traced_peak(shape: dict) -> dict:
    """In a subprocess: the out-of-core call's traced peak (MiB) and its output's size."""
    train, queries = make_data(shape)
    budget = shape["budget_mib"] * 2**20
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    distances, indices = knn_gpu.kneighbors(queries, train, shape["k"], out_of_core=True, memory_budget=budget)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return {"peak_mib": peak / 2**20, "output_mib": (distances.nbytes + indices.nbytes) / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("streaming.json"))
    parser.add_argument("--trace", help=argparse.SUPPRESS)  # internal: run the traced probe and print JSON
    args = parser.parse_args()
    shape = QUICK if args.quick else GOAL
    if args.trace:
        print(json.dumps(traced_peak(json.loads(args.trace))))
        return 0
    print(machine_line())
    budget = shape["budget_mib"] * 2**20
    print(
        f"{shape['n_query']} queries x {shape['n_train']} train x {shape['dim']}, k = {shape['k']}, float32, "
        f"budget {shape['budget_mib']} MiB; median of {args.repeats} interleaved rounds"
    )
    train, queries = make_data(shape)
    runs = {
        "in-memory": lambda: knn_gpu.kneighbors(queries, train, shape["k"], memory_budget=budget),
        "out-of-core": lambda: knn_gpu.kneighbors(queries, train, shape["k"], out_of_core=True, memory_budget=budget),
    }
    times, results = interleaved(runs, args.repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    identical = bool(np.array_equal(results["in-memory"][1], results["out-of-core"][1]))
    for name in runs:
        print(f"  {name:12s} {medians[name]:8.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times[name])})")
    ratio = medians["out-of-core"] / medians["in-memory"]
    print(f"out-of-core / in-memory = {ratio:.2f} (goal <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")
    print(f"identical indices: {identical}")
    completed = subprocess.run(
        [sys.executable, __file__, "--trace", json.dumps(shape)], capture_output=True, text=True, check=True
    )
    memory = json.loads(completed.stdout)
    within = memory["peak_mib"] <= shape["budget_mib"] + memory["output_mib"]
    print(
        f"traced peak of the out-of-core call: {memory['peak_mib']:.1f} MiB; budget + output = "
        f"{shape['budget_mib']} + {memory['output_mib']:.1f} MiB ({'within' if within else 'OVER'})"
    )
    record = {"shape": shape, "seconds": times, "median": medians, "ratio": ratio, "identical": identical, **memory}
    args.json.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.json}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
