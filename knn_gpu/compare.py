"""``knn-gpu compare``: one workload, every usable backend and peer, side by side.

For each backend (NumPy, CuPy, torch, array_api_strict, ...) and each
installed peer (scikit-learn brute, FAISS flat) the same ``kneighbors`` runs
once to warm up, then ``--repeats`` times (GPU runs synchronised); the median
is reported with queries per second, the speed-up over NumPy, and agreement
with the NumPy run (fraction of identical neighbour indices, largest distance
difference). A disagreement beyond tolerance makes the exit status 1; bad
arguments make it 2.

``rich`` (table, progress bar) and ``matplotlib`` (``--plot``) come with the
``compare`` extra: ``pip install "knn-gpu[compare]"``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .backends import available_backends, namespace_of_backend, to_host
from .neighbors import kneighbors

__all__ = ["add_compare_arguments", "run_compare", "compare_backends", "machine_description"]

PEERS = ("sklearn", "faiss")
SWEEP_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``knn-gpu compare``."""
    parser.add_argument("--n-train", type=int, default=20_000, help="training rows (default 20000)")
    parser.add_argument("--n-query", type=int, default=2_000, help="query rows (default 2000)")
    parser.add_argument("--dim", type=int, default=32, help="features (default 32)")
    parser.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help=".npy or .npz file of training rows; queries are drawn from it")
    parser.add_argument(
        "--backends",
        help=f"comma-separated backends and peers (default: every usable one; peers: {', '.join(PEERS)})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (default 3)")
    parser.add_argument("--min-agreement", type=float, default=0.999, help="least index agreement with NumPy")
    parser.add_argument("--json", type=Path, help="write the results as JSON records here")
    parser.add_argument("--plot", type=Path, help="write a PNG chart here")
    parser.add_argument("--sweep", choices=("n_train", "n_query"), help="also time growing sizes (log-log plot)")


class UsageError(ValueError):
    """A bad command-line argument: reported with exit status 2."""


def machine_description() -> dict[str, Any]:
    """CPU, GPU (if any) and library versions, for the records."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    description: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": None,
        "python": platform.python_version(),
        "versions": {},
    }
    for name in (
        "numpy",
        "cupy",
        "torch",
        "array_api_strict",
        "sklearn",
        "faiss",
        "array_api_compat",
        "array_api_extra",
    ):
        if importlib.util.find_spec(name) is not None and (name != "cupy" or "cupy" in available_backends()):
            module = __import__(name)
            description["versions"][name] = getattr(module, "__version__", "unknown")
    if "cupy" in available_backends():
        import cupy

        description["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return description


def _check_arguments(args: argparse.Namespace) -> list[str]:
    for name in ("n_train", "n_query", "dim", "k", "repeats"):
        value = getattr(args, name)
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not 0.0 <= args.min_agreement <= 1.0:
        raise UsageError(f"--min-agreement must be between 0 and 1, got {args.min_agreement}")
    if args.data is not None and not args.data.is_file():
        raise UsageError(f"--data {args.data}: no such file")
    if args.sweep and args.plot is None:
        raise UsageError("--sweep draws a plot: give --plot PATH too")
    usable = available_backends()
    if args.backends is None:
        return usable + [peer for peer in PEERS if importlib.util.find_spec(peer) is not None]
    chosen = [name.strip() for name in args.backends.split(",") if name.strip()]
    known = ("numpy", "cupy", "torch", "array_api_strict", *PEERS)
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise UsageError(f"--backends: unknown {unknown or chosen}; choose from {', '.join(known)}")
    if "numpy" not in chosen:
        chosen.insert(0, "numpy")  # the reference every other run is compared with
    return chosen


def load_workload(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Training rows and queries (host NumPy) and a one-line description."""
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    if args.data is not None:
        try:
            loaded = np.load(args.data, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                key = next((name for name in ("train", "X", "data") if name in loaded.files), loaded.files[0])
                loaded = loaded[key]
        except (OSError, ValueError, IndexError) as exc:
            raise UsageError(f"--data {args.data}: cannot read a .npy/.npz array ({exc})") from exc
        train = np.asarray(loaded)
        if train.ndim != 2 or train.shape[0] < 1 or not np.issubdtype(train.dtype, np.number):
            raise UsageError(f"--data {args.data}: expected a 2-D numeric array, got shape {train.shape}")
        train = train.astype(dtype)
        if args.k > train.shape[0]:
            raise UsageError(f"-k {args.k} is larger than the {train.shape[0]} rows in --data")
        queries = train[rng.integers(0, train.shape[0], size=args.n_query)]
        return (
            train,
            queries,
            f"{args.data.name}: {train.shape[0]} x {train.shape[1]}, {args.n_query} queries drawn from it",
        )
    if args.k > args.n_train:
        raise UsageError(f"-k {args.k} is larger than --n-train {args.n_train}")
    train = rng.standard_normal((args.n_train, args.dim)).astype(dtype)
    queries = rng.standard_normal((args.n_query, args.dim)).astype(dtype)
    return train, queries, f"synthetic N(0, 1): {args.n_train} train x {args.dim} dims, {args.n_query} queries"


def _search_on_backend(name: str, train: np.ndarray, queries: np.ndarray, k: int) -> tuple[Callable, str]:
    """A no-argument runner returning (distances, indices) on the host, and the device name."""
    if name == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        model = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train)
        return (lambda: model.kneighbors(queries)), "cpu"
    if name == "faiss":
        import faiss

        index = faiss.IndexFlatL2(train.shape[1])
        index.add(np.ascontiguousarray(train, dtype=np.float32))
        queries32 = np.ascontiguousarray(queries, dtype=np.float32)

        def faiss_search():
            squared, indices = index.search(queries32, k)
            return np.sqrt(np.maximum(squared, 0)), indices

        return faiss_search, "cpu"
    xp = namespace_of_backend(name)
    train_b, queries_b = xp.asarray(train), xp.asarray(queries)
    device = str(getattr(train_b, "device", "cpu"))
    if name == "array_api_strict":
        device = str(train_b.device).split("'")[1]  # 'CPU_DEVICE' rather than the full repr
    if name == "cupy":
        import cupy

        device = f"cuda:{cupy.cuda.Device().id}"

        def run():
            result = kneighbors(queries_b, train_b, k)
            cupy.cuda.Device().synchronize()
            return result

        return run, device
    return (lambda: kneighbors(queries_b, train_b, k)), device


def _time_one(name: str, train, queries, k: int, repeats: int) -> dict[str, Any]:
    """Warm up, then time ``repeats`` runs; never raises (a failure is a record)."""
    record: dict[str, Any] = {"backend": name, "device": None, "dtype": str(train.dtype)}
    try:
        runner, record["device"] = _search_on_backend(name, train, queries, k)
        distances, indices = runner()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner()
            times.append(time.perf_counter() - start)
    except Exception as exc:  # report and carry on with the other backends
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}", seconds=None)
        return record
    record.update(
        status="ok",
        reason="",
        seconds=statistics.median(times),
        all_seconds=times,
        queries_per_second=queries.shape[0] / statistics.median(times),
        _distances=to_host(distances).astype(np.float64),
        _indices=to_host(indices),
    )
    if name == "faiss" and train.dtype == np.float64:
        record["dtype"] = "float32"
    return record


def compare_backends(
    names: list[str], train: np.ndarray, queries: np.ndarray, k: int, repeats: int, progress: Any = None
) -> list[dict[str, Any]]:
    """Time every backend and peer; add speed-up and agreement with NumPy."""
    records = []
    for name in names:
        records.append(_time_one(name, train, queries, k, repeats))
        if progress is not None:
            progress()
    reference = next(r for r in records if r["backend"] == "numpy")
    for record in records:
        if record["status"] != "ok" or reference["status"] != "ok":
            record.update(speedup_vs_numpy=None, agreement=None, max_distance_difference=None)
            continue
        record["speedup_vs_numpy"] = reference["seconds"] / record["seconds"]
        record["agreement"] = float(np.mean(record["_indices"] == reference["_indices"]))
        record["max_distance_difference"] = float(
            np.max(np.abs(record["_distances"] - reference["_distances"]), initial=0.0)
        )
    for record in records:
        record.pop("_distances", None)
        record.pop("_indices", None)
    return records


def disagreements(records: list[dict[str, Any]], min_agreement: float, dtype: str) -> list[str]:
    """Backends whose neighbours or distances differ from NumPy beyond tolerance."""
    distance_tolerance = 1e-3 if dtype == "float32" else 1e-8
    found = []
    for record in records:
        if record.get("agreement") is None:
            continue
        if record["agreement"] < min_agreement:
            found.append(f"{record['backend']}: index agreement {record['agreement']:.4f} < {min_agreement}")
        elif record["max_distance_difference"] > distance_tolerance:
            found.append(f"{record['backend']}: distances differ by {record['max_distance_difference']:.3g}")
    return found


def _print_table(console: Any, records: list[dict[str, Any]], workload: str, k: int) -> None:
    from rich.table import Table

    table = Table(title=f"kneighbors, k={k} — {workload}")
    for column in (
        "backend",
        "device",
        "dtype",
        "median s",
        "queries/s",
        "vs numpy",
        "agreement",
        "max |Δd|",
        "status",
    ):
        table.add_column(column, justify="left" if column in ("backend", "device", "dtype", "status") else "right")
    for r in records:
        ok = r["status"] == "ok"
        table.add_row(
            r["backend"],
            str(r["device"]),
            r["dtype"],
            f"{r['seconds']:.4f}" if ok else "-",
            f"{r['queries_per_second']:,.0f}" if ok else "-",
            f"{r['speedup_vs_numpy']:.2f}x" if r.get("speedup_vs_numpy") else "-",
            f"{r['agreement']:.4f}" if r.get("agreement") is not None else "-",
            f"{r['max_distance_difference']:.2g}" if r.get("max_distance_difference") is not None else "-",
            "ok" if ok else f"failed: {r['reason'][:60]}",
        )
    console.print(table)


def _plot(
    path: Path, records: list[dict[str, Any]], sweep: list[dict[str, Any]] | None, sweep_axis: str | None, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if sweep else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ok = [r for r in records if r["status"] == "ok"]
    bars = axes[0][0].bar([r["backend"] for r in ok], [r["seconds"] for r in ok], color="#4c72b0")
    for bar, record in zip(bars, ok):
        axes[0][0].annotate(
            f"{record['speedup_vs_numpy']:.2f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axes[0][0].set_ylabel("median seconds (lower is better)")
    axes[0][0].set_title(title, fontsize=9)
    axes[0][0].tick_params(axis="x", rotation=20)
    if sweep:
        ax = axes[0][1]
        for backend in dict.fromkeys(point["backend"] for point in sweep):
            points = [p for p in sweep if p["backend"] == backend and p["seconds"] is not None]
            ax.plot([p[sweep_axis] for p in points], [p["seconds"] for p in points], marker="o", label=backend)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(sweep_axis)
        ax.set_ylabel("median seconds")
        ax.set_title(f"time against {sweep_axis}", fontsize=9)
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_compare(args: argparse.Namespace) -> int:
    """Run ``knn-gpu compare``; returns the exit status."""
    missing = [
        name for name in ("rich",) + (("matplotlib",) if args.plot else ()) if importlib.util.find_spec(name) is None
    ]
    if missing:
        print(
            f'knn-gpu compare needs {", ".join(missing)}: pip install "knn-gpu[compare]"',
            file=sys.stderr,
        )
        return 2
    from rich.console import Console
    from rich.progress import Progress

    try:
        names = _check_arguments(args)
        train, queries, workload = load_workload(args)
    except UsageError as exc:
        print(f"knn-gpu compare: error: {exc}", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 160)  # files and pipes get full columns
    sweep_sizes = [max(args.k, int(getattr(args, args.sweep) * f)) for f in SWEEP_FRACTIONS] if args.sweep else []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("timing", total=len(names) * (1 + len(sweep_sizes)))
        records = compare_backends(names, train, queries, args.k, args.repeats, lambda: progress.advance(task))
        sweep_points = []
        for size in sweep_sizes:
            sub_train = train[:size] if args.sweep == "n_train" else train
            sub_queries = queries[:size] if args.sweep == "n_query" else queries
            for record in compare_backends(
                names, sub_train, sub_queries, args.k, args.repeats, lambda: progress.advance(task)
            ):
                sweep_points.append({"backend": record["backend"], args.sweep: size, "seconds": record["seconds"]})
    _print_table(console, records, workload, args.k)
    found = disagreements(records, args.min_agreement, args.dtype)
    for line in found:
        console.print(f"[red]disagreement[/red] {line}")
    workload_record = {
        "description": workload,
        "n_train": int(train.shape[0]),
        "n_query": int(queries.shape[0]),
        "dim": int(train.shape[1]),
        "k": args.k,
        "dtype": args.dtype,
        "seed": args.seed,
        "repeats": args.repeats,
    }
    machine = machine_description()
    if args.json:
        payload = [dict(record, workload=workload_record, machine=machine) for record in records]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    if args.plot:
        title = f"{workload}, k={args.k}, {args.dtype} — {machine['cpu']}"
        _plot(args.plot, records, sweep_points or None, args.sweep, title)
        console.print(f"wrote {args.plot}")
    return 1 if found else 0
