"""``knn-gpu compare``: one workload, every usable backend and peer, side by side.

For each backend (NumPy, CuPy, torch, array_api_strict, ...) and each
installed peer (scikit-learn brute, FAISS flat, and torch ``matmul`` +
``topk`` where torch has a GPU) the same ``kneighbors`` runs once to warm up,
then ``--repeats`` times, with the device synchronised before the clock starts
and before it stops. The median is reported with the speed-up over NumPy and
agreement with the NumPy run (fraction of identical neighbour indices; the
largest distance difference is checked and kept in the JSON records).

Exit status: 0 when every row ran and agrees with NumPy; 1 when any backend or
peer failed (its full reason is printed under the table), the NumPy baseline
failed, or a result disagrees with NumPy beyond tolerance; 2 for bad arguments.

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

import array_api_compat
import numpy as np

from .._api.neighbors import kneighbors
from .._lib.backends import BACKENDS, available_backends, to_backend, to_host
from .._lib.devices import synchronize

__all__ = [
    "add_compare_arguments",
    "run_compare",
    "compare_backends",
    "machine_description",
    "synchronize",
    "sweep_workloads",
    "fastest_line",
]

#: Other libraries timed on the same workload (not knn_gpu backends).
PEERS = ("sklearn", "faiss", "torch-topk")
#: ``--sweep`` times these multiples of the given size.
SWEEP_FRACTIONS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: File types ``--data`` reads.
DATA_SUFFIXES = (".npy", ".npz", ".csv")
#: torch-topk's distance block holds at most this many entries (256 MiB of float32).
TORCH_TOPK_BLOCK_ENTRIES = 2**26


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``knn-gpu compare``."""
    parser.add_argument("--n-train", type=int, default=20_000, help="training rows (default 20000)")
    parser.add_argument("--n-query", type=int, default=2_000, help="query rows (default 2000)")
    parser.add_argument("--dim", type=int, default=32, help="features (default 32)")
    parser.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data",
        type=Path,
        help="training rows from a .npy, .npz or .csv file (numeric, comma-separated, optional header line); "
        "queries are drawn from it",
    )
    parser.add_argument(
        "--backends",
        help="comma-separated backends and peers (default: every usable backend, scikit-learn and FAISS "
        f"if installed, torch-topk if torch has a GPU; peers: {', '.join(PEERS)})",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (default 3)")
    parser.add_argument("--min-agreement", type=float, default=0.999, help="least index agreement with NumPy")
    parser.add_argument("--json", type=Path, help="write the results as JSON records here")
    parser.add_argument("--plot", type=Path, help="write a PNG chart here (the folder must exist)")
    parser.add_argument(
        "--sweep",
        choices=("n_train", "n_query"),
        help="also time 1/4, 1/2, 1, 2 and 4 times that size (table, and a log-log plot: needs --plot)",
    )


class UsageError(ValueError):
    """A bad command-line argument: reported with exit status 2."""


def machine_description() -> dict[str, Any]:
    """CPU, GPU (if any) and library versions, for the records."""
    from .info import gpu_devices

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus, _ = gpu_devices()
    description: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": ", ".join(gpu["name"] for gpu in gpus) or None,
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
    return description


def _torch_has_gpu() -> bool:
    """Whether torch is installed and sees a CUDA device (False on any failure)."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def default_peers() -> list[str]:
    """Peers timed when ``--backends`` is not given: those installed (torch-topk only with a GPU)."""
    peers = [peer for peer in ("sklearn", "faiss") if importlib.util.find_spec(peer) is not None]
    if _torch_has_gpu():
        peers.append("torch-topk")
    return peers


def _check_paths(args: argparse.Namespace) -> None:
    if args.data is not None:
        if not args.data.is_file():
            raise UsageError(f"--data {args.data}: no such file")
        if args.data.suffix.lower() not in DATA_SUFFIXES:
            raise UsageError(
                f"--data {args.data}: cannot read {args.data.suffix or 'a file without a suffix'!r} files; "
                "give a .npy or .npz NumPy file or a .csv file (numeric, comma-separated, optional header line)"
            )
    if args.plot is not None and not args.plot.parent.is_dir():
        raise UsageError(f"--plot {args.plot}: the folder {args.plot.parent} does not exist; create it first")


def _check_arguments(args: argparse.Namespace) -> list[str]:
    """Validate the arguments; return the backends and peers to time, NumPy first."""
    for name in ("n_train", "n_query", "dim", "k", "repeats"):
        value = getattr(args, name)
        if value < 1:
            # The option as typed: "-k" is the one single-letter option.
            option = "-k" if name == "k" else f"--{name.replace('_', '-')}"
            raise UsageError(f"{option} must be a positive integer, got {value}")
    if not 0.0 <= args.min_agreement <= 1.0:
        raise UsageError(f"--min-agreement must be between 0 and 1, got {args.min_agreement}")
    if args.sweep and args.plot is None:
        raise UsageError("--sweep draws a plot: give --plot PATH too")
    _check_paths(args)
    usable = available_backends()
    if args.backends is None:
        return usable + default_peers()
    chosen = list(dict.fromkeys(name.strip() for name in args.backends.split(",") if name.strip()))
    known = list(dict.fromkeys([*BACKENDS, *usable, *PEERS]))
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise UsageError(f"--backends: unknown {unknown or chosen}; choose from {', '.join(known)}")
    if "numpy" not in chosen:
        chosen.insert(0, "numpy")  # the reference every other run is compared with
    return chosen


def _is_numeric_row(line: str) -> bool:
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """A numeric comma-separated table; a first line that is not numeric is taken as a header."""
    try:
        with path.open(encoding="utf-8") as file:
            first_line = file.readline()
        if not first_line.strip():
            raise UsageError(f"--data {path}: the first line is empty; expected numbers or a header line")
        header_lines = 0 if _is_numeric_row(first_line) else 1
        return np.loadtxt(path, delimiter=",", skiprows=header_lines, dtype=np.float64, ndmin=2)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"--data {path}: not a numeric comma-separated table ({exc})") from exc


def _read_numpy_file(path: Path) -> np.ndarray:
    """The array in a .npy file, or in a .npz file (its "train", "X" or "data" entry, else the first)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            if not loaded.files:
                raise UsageError(f"--data {path}: the .npz file holds no array")
            key = next((name for name in ("train", "X", "data") if name in loaded.files), loaded.files[0])
            loaded = loaded[key]
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"--data {path}: cannot read it as a NumPy {path.suffix} file ({exc})") from exc
    return np.asarray(loaded)


def read_data(path: Path) -> np.ndarray:
    """Training rows from ``--data``: a 2-D numeric array with at least one row."""
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_numpy_file(path)
    if rows.ndim != 2 or rows.shape[0] < 1 or not np.issubdtype(rows.dtype, np.number):
        raise UsageError(f"--data {path}: expected a 2-D numeric array with at least one row, got shape {rows.shape}")
    return rows


def load_workload(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Training rows and queries (host NumPy) and a one-line description."""
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    if args.data is not None:
        train = read_data(args.data).astype(dtype)
        if args.k > train.shape[0]:
            raise UsageError(f"-k {args.k} is larger than the {train.shape[0]} rows in --data")
        queries = train[rng.integers(0, train.shape[0], size=args.n_query)]
        description = f"{args.data.name}: {train.shape[0]} x {train.shape[1]}, {args.n_query} queries drawn from it"
        return train, queries, description
    if args.k > args.n_train:
        raise UsageError(f"-k {args.k} is larger than --n-train {args.n_train}")
    train = rng.standard_normal((args.n_train, args.dim)).astype(dtype)
    queries = rng.standard_normal((args.n_query, args.dim)).astype(dtype)
    return train, queries, f"synthetic N(0, 1): {args.n_train} train x {args.dim} dims, {args.n_query} queries"


def sweep_sizes(size: int, minimum: int = 1) -> list[int]:
    """``SWEEP_FRACTIONS`` of ``size``, at least ``minimum``, without repeats, ascending."""
    return sorted({max(minimum, round(size * fraction)) for fraction in SWEEP_FRACTIONS})


def sweep_workloads(
    args: argparse.Namespace, train: np.ndarray, queries: np.ndarray
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(size, train, queries)`` for every size of ``--sweep``, below and above the given one.

    Smaller sizes take the first rows. Larger ones keep every given row and
    add more: synthetic rows from the same seed (a separate stream, so the
    given workload is unchanged), or, with ``--data``, rows drawn again from
    the file (with replacement).
    """
    along_train = args.sweep == "n_train"
    rows = train if along_train else queries
    sizes = sweep_sizes(rows.shape[0], minimum=args.k if along_train else 1)
    extra = max(sizes) - rows.shape[0]
    rng = np.random.default_rng([args.seed, 1])
    if args.data is not None:
        more = train[rng.integers(0, train.shape[0], size=extra)]
    else:
        more = rng.standard_normal((extra, train.shape[1])).astype(train.dtype)
    pool = np.concatenate([rows, more])
    if along_train:
        return [(size, pool[:size], queries) for size in sizes]
    return [(size, train, pool[:size]) for size in sizes]


def time_runs(runner: Callable[[], Any], anchor: Any, repeats: int) -> tuple[Any, list[float]]:
    """Run ``runner`` once to warm up, then ``repeats`` times on the clock.

    The device of ``anchor`` (an array where the work happens, or ``None``
    on the host) is synchronised before the clock starts and before it stops.

    Returns
    -------
    result
        What the warm-up run returned.
    seconds : list of float
        The time of each timed run.
    """
    synchronize(anchor)
    result = runner()
    synchronize(anchor)
    seconds = []
    for _ in range(repeats):
        synchronize(anchor)
        start = time.perf_counter()
        runner()
        synchronize(anchor)
        seconds.append(time.perf_counter() - start)
    return result, seconds


def _device_label(array: Any) -> str:
    """``cpu``, ``cuda:0``, ``CPU_DEVICE``: where ``array`` lives, briefly."""
    if array is None or isinstance(array, np.ndarray):
        return "cpu"
    if array_api_compat.is_cupy_array(array):
        return f"cuda:{array.device.id}"
    device = str(array_api_compat.device(array))
    return device.split("'")[1] if device.count("'") == 2 else device  # Device('CPU_DEVICE') -> CPU_DEVICE


def _missing_peer(package: str, exc: ImportError) -> RuntimeError:
    return RuntimeError(f'{package} is not installed ({exc}): pip install "knn-gpu[benchmark]"')


def _prepare_sklearn(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[Callable, Any]:
    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError as exc:
        raise _missing_peer("scikit-learn", exc) from exc
    model = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train)
    return (lambda: model.kneighbors(queries)), None


def _prepare_faiss(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[Callable, Any]:
    try:
        import faiss
    except ImportError as exc:
        raise _missing_peer("faiss", exc) from exc
    index = faiss.IndexFlatL2(train.shape[1])
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    queries32 = np.ascontiguousarray(queries, dtype=np.float32)

    def faiss_search():
        squared, indices = index.search(queries32, k)
        return np.sqrt(np.maximum(squared, 0)), indices

    return faiss_search, None


def _prepare_torch_topk(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[Callable, Any]:
    """What GPU users write by hand: ||q||^2 - 2 q.t + ||t||^2 by ``matmul``, then ``torch.topk``.

    On CUDA when torch sees a GPU, else on the CPU; queries in batches whose
    distance block holds at most ``TORCH_TOPK_BLOCK_ENTRIES`` entries.
    """
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_t = torch.from_numpy(np.ascontiguousarray(train)).to(device)
    queries_t = torch.from_numpy(np.ascontiguousarray(queries)).to(device)
    train_sq_norms = torch.sum(train_t * train_t, dim=1)
    batch_rows = max(1, TORCH_TOPK_BLOCK_ENTRIES // train_t.shape[0])

    def torch_topk_search():
        distances, indices = [], []
        for start in range(0, queries_t.shape[0], batch_rows):
            batch = queries_t[start : start + batch_rows]
            squared = torch.sum(batch * batch, dim=1, keepdim=True) - 2 * (batch @ train_t.T) + train_sq_norms
            values, positions = torch.topk(squared, k, dim=1, largest=False)
            distances.append(torch.sqrt(torch.clamp(values, min=0)))
            indices.append(positions)
        return torch.cat(distances), torch.cat(indices)

    return torch_topk_search, train_t


def _prepare_backend(name: str, train: np.ndarray, queries: np.ndarray, k: int) -> tuple[Callable, Any]:
    """knn_gpu's ``kneighbors`` on backend ``name``, whatever ``to_backend`` understands by it."""
    train_b, queries_b = to_backend(train, name), to_backend(queries, name)
    return (lambda: kneighbors(queries_b, train_b, k)), train_b


PEER_RUNNERS = {"sklearn": _prepare_sklearn, "faiss": _prepare_faiss, "torch-topk": _prepare_torch_topk}


def _search_on_backend(name: str, train: np.ndarray, queries: np.ndarray, k: int) -> tuple[Callable, Any]:
    """A no-argument runner returning (distances, indices), and an array on its device (None: host)."""
    if name in PEER_RUNNERS:
        return PEER_RUNNERS[name](train, queries, k)
    return _prepare_backend(name, train, queries, k)


def _time_one(name: str, train, queries, k: int, repeats: int) -> dict[str, Any]:
    """Warm up, then time ``repeats`` runs; never raises (a failure is a record)."""
    record: dict[str, Any] = {"backend": name, "device": None, "dtype": str(train.dtype)}
    try:
        runner, anchor = _search_on_backend(name, train, queries, k)
        record["device"] = _device_label(anchor)
        (distances, indices), times = time_runs(runner, anchor, repeats)
        record["_distances"] = to_host(distances).astype(np.float64)
        record["_indices"] = to_host(indices)
    except Exception as exc:  # report and carry on with the other backends
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}", seconds=None)
        return record
    record.update(
        status="ok",
        reason="",
        seconds=statistics.median(times),
        all_seconds=times,
        queries_per_second=queries.shape[0] / statistics.median(times),
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
    """Backends whose neighbours or distances differ from NumPy beyond tolerance.

    The distance tolerance follows the dtype a row computed in (FAISS computes
    in float32 whatever it is given), else ``dtype``.
    """
    found = []
    for record in records:
        if record.get("agreement") is None:
            continue
        distance_tolerance = 1e-3 if record.get("dtype", dtype) == "float32" else 1e-8
        if record["agreement"] < min_agreement:
            found.append(f"{record['backend']}: index agreement {record['agreement']:.4f} < {min_agreement}")
        elif record["max_distance_difference"] > distance_tolerance:
            found.append(f"{record['backend']}: distances differ by {record['max_distance_difference']:.3g}")
    return found


def failures(records: list[dict[str, Any]]) -> list[str]:
    """``backend: full reason`` for every row that did not run."""
    return [f"{record['backend']}: {record['reason']}" for record in records if record["status"] != "ok"]


def fastest_line(records: list[dict[str, Any]]) -> str:
    """Which row was fastest, and by how much over the next, among the rows that ran.

    Examples
    --------
    >>> fastest_line([{"backend": "numpy", "status": "ok", "seconds": 0.1},
    ...               {"backend": "faiss", "status": "ok", "seconds": 0.142}])
    'fastest: numpy, 1.42x faster than faiss (the next)'
    """
    ran = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["seconds"])
    if not ran:
        return "fastest: none (nothing ran)"
    if len(ran) == 1:
        return f"fastest: {ran[0]['backend']} (the only one that ran)"
    first, second = ran[0], ran[1]
    return f"fastest: {first['backend']}, {second['seconds'] / first['seconds']:.2f}x faster than {second['backend']} (the next)"


def _results_table(records: list[dict[str, Any]], k: int, dtype: str) -> Any:
    """The main table: 78 columns at most with the names knn_gpu has (the dtype is in the title)."""
    from rich.table import Table

    table = Table(title=f"kneighbors, k={k}, {dtype}")
    for column in ("backend", "device", "median s", "vs numpy", "agreement", "status"):
        justify = "left" if column in ("backend", "device", "status") else "right"
        table.add_column(column, justify=justify, overflow="fold")
    for r in records:
        ok = r["status"] == "ok"
        status = "failed"
        if ok:
            status = "ok" if r["dtype"] == str(dtype) else f"ok (f{np.dtype(r['dtype']).itemsize * 8})"  # FAISS: f32
        table.add_row(
            r["backend"],
            r["device"] or "-",
            f"{r['seconds']:.4f}" if ok else "-",
            f"{r['speedup_vs_numpy']:.2f}x" if r.get("speedup_vs_numpy") else "-",
            f"{r['agreement']:.4f}" if r.get("agreement") is not None else "-",
            status,
        )
    return table


def _sweep_table(points: list[dict[str, Any]], axis: str) -> Any:
    """Median seconds, one row per backend, one column per size."""
    from rich.table import Table

    sizes = sorted({point[axis] for point in points})
    table = Table(title=f"median seconds against {axis}")
    table.add_column("backend", overflow="fold")
    for size in sizes:
        table.add_column(f"{size:,}", justify="right", overflow="fold")
    for backend in dict.fromkeys(point["backend"] for point in points):
        seconds = {p[axis]: p["seconds"] for p in points if p["backend"] == backend}
        table.add_row(backend, *(f"{seconds[s]:.4f}" if seconds.get(s) is not None else "-" for s in sizes))
    return table


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
        speedup = record.get("speedup_vs_numpy")
        axes[0][0].annotate(
            f"{speedup:.2f}x" if speedup else "",
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
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _run_sweep(
    args: argparse.Namespace,
    names: list[str],
    train: np.ndarray,
    queries: np.ndarray,
    records: list[dict[str, Any]],
    progress: Callable[[], None],
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Time every size of ``--sweep``; the given size reuses ``records``.

    Returns the points ``{backend, <axis>, seconds}``, and the failures and
    disagreements found, each naming its size.
    """
    base_size = train.shape[0] if args.sweep == "n_train" else queries.shape[0]
    points, failed, disagreeing = [], [], []
    for size, sweep_train, sweep_queries in sweep_workloads(args, train, queries):
        if size == base_size:
            size_records = records
        else:
            size_records = compare_backends(names, sweep_train, sweep_queries, args.k, args.repeats, progress)
            failed += [f"{line} (at {args.sweep}={size})" for line in failures(size_records)]
            disagreeing += [
                f"{line} (at {args.sweep}={size})"
                for line in disagreements(size_records, args.min_agreement, args.dtype)
            ]
        points += [{"backend": r["backend"], args.sweep: size, "seconds": r["seconds"]} for r in size_records]
    return points, failed, disagreeing


def _workload_record(args: argparse.Namespace, train: np.ndarray, queries: np.ndarray, workload: str) -> dict:
    return {
        "description": workload,
        "n_train": int(train.shape[0]),
        "n_query": int(queries.shape[0]),
        "dim": int(train.shape[1]),
        "k": args.k,
        "dtype": args.dtype,
        "seed": args.seed,
        "repeats": args.repeats,
    }


def _print_verdict(console: Any, records: list[dict[str, Any]], failed: list[str], disagreeing: list[str]) -> None:
    """Failures in full, disagreements, then the fastest row: the lines under the table."""
    from rich.text import Text

    for line in failed:  # word-wrapped by rich, never cut
        console.print(Text.assemble(("failed ", "bold red"), line))
    if next(r for r in records if r["backend"] == "numpy")["status"] != "ok":
        console.print(Text.assemble(("failed ", "bold red"), "the NumPy baseline: no row could be checked against it"))
    for line in disagreeing:
        console.print(Text.assemble(("disagreement ", "bold red"), line))
    console.print(Text(fastest_line(records)))


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
    console = Console()  # the terminal's width, or COLUMNS, or 80: the table fits in 80
    sweep_count = len(SWEEP_FRACTIONS) - 1 if args.sweep else 0
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("timing", total=len(names) * (1 + sweep_count))
        advance = lambda: progress.advance(task)  # noqa: E731
        records = compare_backends(names, train, queries, args.k, args.repeats, advance)
        failed, disagreeing = failures(records), disagreements(records, args.min_agreement, args.dtype)
        sweep_points: list[dict[str, Any]] = []
        if args.sweep:
            sweep_points, sweep_failed, sweep_disagreeing = _run_sweep(args, names, train, queries, records, advance)
            failed, disagreeing = failed + sweep_failed, disagreeing + sweep_disagreeing
    console.print(workload, markup=False, highlight=False)
    console.print(_results_table(records, args.k, args.dtype))
    if sweep_points:
        console.print(_sweep_table(sweep_points, args.sweep))
    machine = machine_description()
    if args.json:
        workload_record = _workload_record(args, train, queries, workload)
        payload = [dict(record, workload=workload_record, machine=machine) for record in records]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}", markup=False, highlight=False)
    if args.plot:
        title = f"{workload}, k={args.k}, {args.dtype} — {machine['cpu']}"
        _plot(args.plot, records, sweep_points or None, args.sweep, title)
        console.print(f"wrote {args.plot}", markup=False, highlight=False)
    _print_verdict(console, records, failed, disagreeing)
    numpy_failed = next(r for r in records if r["backend"] == "numpy")["status"] != "ok"
    return 1 if failed or disagreeing or numpy_failed else 0
