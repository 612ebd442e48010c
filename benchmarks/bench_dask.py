"""How the Dask scale-out scales from 1 to 2 worker processes (LocalCluster, loopback).

Each worker gets one thread and single-threaded BLAS, so the workers are the
only parallelism: the ratio shows what distributing the training chunks buys.

    python benchmarks/bench_dask.py [--n-train 400000] [--n-query 4000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import knn_gpu  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=400_000)
    parser.add_argument("--n-query", type=int, default=4_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=8, help="training chunks")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train = rng.standard_normal((args.n_train, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.n_query, args.dim), dtype=np.float32)
    reference = knn_gpu.kneighbors(queries, train, 10)[1]
    print(f"{args.n_query} queries x {args.n_train} train x {args.dim} dims, k=10, {args.chunks} training chunks")
    results = {}
    for workers in (1, 2):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            train_d = client.persist(da.from_array(train, chunks=(-(-args.n_train // args.chunks), args.dim)))
            queries_d = client.persist(da.from_array(queries, chunks=(1000, args.dim)))
            indices = knn_gpu.kneighbors(queries_d, train_d, 10)[1]
            assert (client.compute(indices, sync=True) == reference).all()  # warm-up and check
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                client.compute(indices, sync=True)
                times.append(time.perf_counter() - start)
            results[workers] = statistics.median(times)
            print(f"{workers} worker(s): median {results[workers]:.2f} s over {args.repeats} runs")
    print(f"speed-up 1 -> 2 workers: {results[1] / results[2]:.2f}x")


if __name__ == "__main__":
    main()
