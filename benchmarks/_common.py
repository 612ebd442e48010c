"""Helpers shared by the benchmark programs: data, the FAISS peer, the product floor, the machine.

Only NumPy, FAISS and knn_gpu's public surface (plus ``knn_gpu.cli.compare``'s
machine description) are used here, so the programs keep running while the
engine's internals change. The programs are run as scripts
(``python benchmarks/NAME.py``), which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from knn_gpu.cli.compare import machine_description


def make_data(shape: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train, queries)``: float32 standard normal, ``shape["n_train"|"n_query"] x shape["dim"]``."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((shape["n_train"], shape["dim"]), dtype=np.float32)
    queries = rng.standard_normal((shape["n_query"], shape["dim"]), dtype=np.float32)
    return train, queries


def faiss_index(train: np.ndarray) -> Any | None:
    """A FAISS ``IndexFlatL2`` holding ``train`` (built outside any timing), or None without faiss-cpu."""
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatL2(train.shape[1])
    index.add(train)
    return index


def matmul_floor(train: np.ndarray, queries: np.ndarray, k: int) -> Callable:
    """The bare product ``queries @ train.T`` in 1024-row blocks, results discarded: what every exact method pays."""

    def run():
        for start in range(0, queries.shape[0], 1024):
            queries[start : start + 1024] @ train.T
        return None

    return run


def machine_line(machine: dict | None = None) -> str:
    """One line for the top of a report: CPU, cores, GPU and library versions."""
    machine = machine_description() if machine is None else machine
    versions = ", ".join(f"{name} {version}" for name, version in machine.get("versions", {}).items())
    gpu = machine.get("gpu") or "no GPU"
    return f"machine: {machine['cpu']}, {machine['cores']} cores, {gpu}; Python {machine['python']}; {versions}"


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    Read from ``VmHWM``, which ``exec`` resets: on Linux ``ru_maxrss`` of a
    subprocess keeps the parent's peak from before the ``exec``.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleaved(runs: dict[str, Callable], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds of each run per round, rounds interleaved (noise hits every run alike), and each run's last result."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            times[name].append(time.perf_counter() - start)
    return times, results
