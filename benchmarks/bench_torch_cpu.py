"""Torch CPU tensors against NumPy arrays holding the same data (issue 19, item 3).

With the default backend, ``knn_gpu.kneighbors`` and the estimators search
CPU float tensors with NumPy on zero-copy views
(``knn_gpu._lib.backends.numpy_views``, the front door's ``host_views``) and
answer tensors; an estimator's fitted rows stay tensors (scikit-learn's
array-API rule). ``backend="torch"`` forces torch's own kernels. One run,
rounds interleaved, median and minimum of each, ratio to NumPy's time:

- functional: NumPy arrays, torch tensors (views), torch tensors on torch's
  kernels (the views declined: what tensors cost before them);
- fitted ``KNN(k).fit(...).kneighbors(...)``: NumPy, torch tensors with the
  default backend, with ``backend="torch"`` and with ``backend="numpy"``.

Usage::

    python benchmarks/bench_torch_cpu.py              # 2,000 x 20,000 x 32 and 2,000 x 50,000 x 128, k = 10
    python benchmarks/bench_torch_cpu.py --quick      # a smoke test
    python benchmarks/bench_torch_cpu.py --json /tmp/torch_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from unittest import mock

import numpy as np
from _common import interleaved, machine_line, make_data

import knn_gpu
from knn_gpu import KNN

SHAPES = {
    "2000x20000x32": {"n_query": 2000, "n_train": 20_000, "dim": 32, "k": 10},
    "2000x50000x128": {"n_query": 2000, "n_train": 50_000, "dim": 128, "k": 10},
}
QUICK = {"200x2000x16": {"n_query": 200, "n_train": 2000, "dim": 16, "k": 10}}


def runs_for(shape: dict) -> dict:
    import torch

    train, queries = make_data(shape)
    k = shape["k"]
    t_train, t_queries = torch.from_numpy(train), torch.from_numpy(queries)
    labels = np.zeros(train.shape[0], dtype=np.float32)
    fitted_numpy = KNN(k).fit(train, labels)
    fitted_torch = KNN(k).fit(t_train, torch.from_numpy(labels))
    fitted_torch_kernels = KNN(k, backend="torch").fit(t_train, torch.from_numpy(labels))
    fitted_torch_on_numpy = KNN(k, backend="numpy").fit(t_train, torch.from_numpy(labels))

    def torch_kernels():
        # the views declined: what torch's own CPU kernels cost on the same tensors
        with mock.patch("knn_gpu._engine.index.numpy_views", return_value=None):
            return knn_gpu.kneighbors(t_queries, t_train, k)

    return {
        "functional numpy": lambda: knn_gpu.kneighbors(queries, train, k),
        "functional torch (views)": lambda: knn_gpu.kneighbors(t_queries, t_train, k),
        "functional torch kernels": torch_kernels,
        "KNN numpy": lambda: fitted_numpy.kneighbors(queries),
        "KNN torch": lambda: fitted_torch.kneighbors(t_queries),
        'KNN torch, backend="torch"': lambda: fitted_torch_kernels.kneighbors(t_queries),
        'KNN torch, backend="numpy"': lambda: fitted_torch_on_numpy.kneighbors(t_queries),
    }


def agree(results: dict) -> bool:
    """Every run found the same neighbours as the NumPy function."""
    reference = np.asarray(results["functional numpy"][1])
    return all(np.array_equal(np.asarray(result[1]), reference) for result in results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    shapes, repeats = (QUICK, 2) if args.quick else (SHAPES, args.repeats)
    print(machine_line())
    print(
        f"float32, k = 10, default threads; median and minimum of {repeats} interleaved rounds; ratio = median / NumPy's"
    )
    records = []
    for name, shape in shapes.items():
        runs = runs_for(shape)
        times, results = interleaved(runs, repeats)
        same = agree(results)
        print(f"\n{name} (k = {shape['k']}): same neighbours everywhere: {same}")
        print(f"  {'run':<30} {'median s':>9} {'min s':>9} {'ratio':>7}")
        baselines = {
            "functional": statistics.median(times["functional numpy"]),
            "KNN": statistics.median(times["KNN numpy"]),
        }
        for run, seconds in times.items():
            median = statistics.median(seconds)
            ratio = median / baselines[run.split()[0]]
            print(f"  {run:<30} {median:9.4f} {min(seconds):9.4f} {ratio:7.2f}")
            records.append(
                {"shape": name, **shape, "run": run, "median_s": median, "min_s": min(seconds), "ratio": ratio}
            )
        records.append({"shape": name, "same_neighbours": same})
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "records": records}, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
