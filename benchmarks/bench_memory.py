"""Benchmark: the memory one knn_gpu call allocates, next to the engine's memory budget.

Each probe runs in a fresh subprocess, so that peaks do not mix. There the
inputs (float32 standard normal) and, for the classifier, the fitted model
are made first; then ``tracemalloc.reset_peak()`` and one call. Reported:

* peak: the traced peak during the call minus the memory traced just before
  it (tracemalloc sees NumPy's buffers, not BLAS's or FAISS's internals); it
  includes the call's output, whose size is shown so that it can be
  subtracted;
* the ratio peak / budget, where the budget is
  ``knn_gpu._engine.budget.DEFAULT_MEMORY_BUDGET`` when that attribute exists (goal:
  below 2 x budget);
* the subprocess's max RSS, with the max RSS before the call (inputs and
  imports). It is read from ``/proc/self/status`` (``VmHWM``) where there is
  one: ``resource.getrusage``'s ``ru_maxrss`` of a subprocess starts from the
  parent's peak on Linux (it survives ``exec``); the JSON keeps it too.

Probes: ``kneighbors`` 2,000 x 50,000 x 768, k = 100; ``kneighbors``
2,000 x 100,000 x 64, k = 1,000; ``KNNClassifier(num_neighbors=5)
.fit(X, y).predict(Q)`` with 20,000 queries, 50,000 x 32 train and 1,000
classes; ``kneighbors`` 20,000 x 50,000 x 32, k = 10 (whose full distance
matrix would take 3.7 GiB). Worker threads (``n_jobs=None``: one per core)
each hold their own batch, so peaks grow with the cores.

Usage::

    python benchmarks/bench_memory.py            # the four probes, about a minute on 2 cores
    python benchmarks/bench_memory.py --quick    # small shapes, a smoke test
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
from _common import machine_line, make_data, peak_rss_mib

import knn_gpu
from knn_gpu.cli.compare import machine_description

MIB = 2**20
GOAL_BUDGET_RATIO = 2.0

PROBES = [
    {"name": "kneighbors d768 k100", "call": "kneighbors", "n_query": 2_000, "n_train": 50_000, "dim": 768, "k": 100},
    {"name": "kneighbors k1000", "call": "kneighbors", "n_query": 2_000, "n_train": 100_000, "dim": 64, "k": 1000},
    {
        "name": "classifier 1000 classes",
        "call": "classifier",
        "n_query": 20_000,
        "n_train": 50_000,
        "dim": 32,
        "k": 5,
        "classes": 1000,
    },
    {"name": "kneighbors 20k queries", "call": "kneighbors", "n_query": 20_000, "n_train": 50_000, "dim": 32, "k": 10},
]


def quick_probes() -> list[dict]:
    """The same probes, shrunk to run in seconds: queries / 10, train / 25 (k = 1,000 still fits)."""
    return [{**probe, "n_query": probe["n_query"] // 10, "n_train": probe["n_train"] // 25} for probe in PROBES]


def memory_budget() -> int | None:
    """``knn_gpu._engine.budget.DEFAULT_MEMORY_BUDGET`` in bytes, or None where the engine has no such attribute."""
    try:
        budget = importlib.import_module("knn_gpu._engine.budget")
    except ImportError:
        return None
    return getattr(budget, "DEFAULT_MEMORY_BUDGET", None)


def run_probe(probe: dict) -> dict:
    """In the subprocess: inputs and model, then one traced call."""
    tracemalloc.start()
    train, queries = make_data(probe)
    if probe["call"] == "classifier":
        labels = np.random.default_rng(1).integers(0, probe["classes"], size=probe["n_train"])
        model = knn_gpu.KNNClassifier(num_neighbors=probe["k"], batch_size=None).fit(train, labels)

        def call():
            return model.predict(queries)
    else:

        def call():
            return knn_gpu.kneighbors(queries, train, probe["k"])

    gc.collect()
    held_before = tracemalloc.get_traced_memory()[0]
    rss_before = peak_rss_mib() * MIB
    tracemalloc.reset_peak()
    result = call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    outputs = result if isinstance(result, tuple) else (result,)
    return {
        "probe": probe,
        "peak_bytes": peak - held_before,
        "held_before_bytes": held_before,
        "output_bytes": sum(np.asarray(output).nbytes for output in outputs),
        "max_rss_bytes": peak_rss_mib() * MIB,
        "max_rss_before_call_bytes": rss_before,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    }


def measure(probe: dict) -> dict:
    """Run ``probe`` in a fresh interpreter; its JSON record, or the error it ended with."""
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(probe)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"probe": probe, "error": f"exit {completed.returncode}: {last}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def shape_of(probe: dict) -> str:
    shape = f"{probe['n_query']} x {probe['n_train']} x {probe['dim']}, k={probe['k']}"
    return shape + (f", {probe['classes']} classes" if "classes" in probe else "")


def probe_line(record: dict, budget: int | None) -> str:
    probe = record["probe"]
    if "error" in record:
        return f"{probe['name']:<24} {shape_of(probe):<38} FAILED: {record['error']}"
    peak = record["peak_bytes"]
    ratio, verdict = ("-", "")
    if budget:
        ratio = f"{peak / budget:.2f}"
        verdict = "ok" if peak < GOAL_BUDGET_RATIO * budget else "OVER"
    return (
        f"{probe['name']:<24} {shape_of(probe):<38} {peak / MIB:>9.1f} {record['output_bytes'] / MIB:>8.1f} "
        f"{ratio:>11} {verdict:>5} {record['held_before_bytes'] / MIB:>8.1f} "
        f"{record['max_rss_bytes'] / MIB:>8.0f} {record['max_rss_before_call_bytes'] / MIB:>11.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke test)")
    parser.add_argument("--json", default="benchmarks/memory.json", help="where to write the results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_probe(json.loads(args.child))))
        return 0

    machine = machine_description()
    budget = memory_budget()
    print(machine_line(machine))
    print(f"knn_gpu {knn_gpu.__version__} ({Path(knn_gpu.__file__).parent})" + ("; QUICK shapes" if args.quick else ""))
    if budget:
        print(
            f"budget: knn_gpu._engine.budget.DEFAULT_MEMORY_BUDGET = {budget / MIB:.0f} MiB; "
            f"goal: peak during the call < {GOAL_BUDGET_RATIO:g} x budget"
        )
    else:
        print("budget: knn_gpu._engine.budget.DEFAULT_MEMORY_BUDGET not found; no ratio")
    print("MiB; peak = traced peak during the call minus memory held before it (includes the output)")
    print(
        f"{'probe':<24} {'queries x train x dim':<38} {'peak':>9} {'output':>8} {'peak/budget':>11} {'goal':>5} "
        f"{'held':>8} {'max RSS':>8} {'RSS before':>11}"
    )
    records = []
    for probe in quick_probes() if args.quick else PROBES:
        record = measure(probe)
        print(probe_line(record, budget), flush=True)
        records.append(record)
    report = {
        "machine": machine,
        "knn_gpu": {"version": knn_gpu.__version__, "path": str(Path(knn_gpu.__file__).parent)},
        "quick": args.quick,
        "budget_bytes": budget,
        "goal": f"peak < {GOAL_BUDGET_RATIO:g} x budget",
        "probes": records,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 1 if any("error" in record for record in records) else 0


if __name__ == "__main__":
    sys.exit(main())
