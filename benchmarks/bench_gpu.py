"""Benchmark on a GPU: knn_gpu against the hand-written torch peer and the GEMM floor.

For each shape (item 3 of issue 17), on the same data on one GPU:

* ``knn_gpu`` — the functional ``knn_gpu.kneighbors(queries, train, k)``
  (builds its index at every call), on every usable GPU backend
  (``torch-cuda``, ``cupy``);
* ``knn_gpu fitted`` — ``KNN(k).fit(train, y)`` once, then ``kneighbors(queries)``;
  on torch also fitted under ``knn_gpu.config_context(ranking="bf16x3")``
  (``knn_gpu fitted bf16x3``: the certified tensor-core ranking);
* ``peer`` — what GPU users write by hand: ``‖t‖² − 2 q·tᵀ`` (one ``addmm``)
  and ``torch.topk``, queries in batches whose distance block stays within
  the same memory budget as knn_gpu's (half the free GPU memory, 3 blocks'
  worth: the block and top-k's workspace);
* ``floor`` — the bare product ``q @ tᵀ`` of the same shape in the same
  batches, into a preallocated block: what every exact method pays.

Out of core: the training rows stay in host memory and ``memory_budget``
forces several chunks; the peer then copies each chunk (pinned) to the GPU,
runs its top-k and merges; the floor copies the chunks and multiplies.

Timing: one warm-up call (CuPy compiles its kernels, cuBLAS picks its
algorithms), then up to ``--repeats`` calls, each between two device
synchronisations, stopping early after ``--seconds-per-method``; min and
median are reported. ``--deadline`` (seconds) skips the shapes that would start
after it, so that a run under ``timeout`` still writes its files; results are
written after every shape. Every record carries the GPU's name, the shape,
k, backend, method and seconds, so that ``gpu_cost_model.py``'s modeled times
can be put beside them.

Usage::

    python benchmarks/bench_gpu.py --out /tmp/gpu            # the GPU shapes (~4 min on an H200)
    python benchmarks/bench_gpu.py --quick --out /tmp/gpu    # tiny shapes, on torch CPU when no GPU
    python benchmarks/bench_gpu.py --dry-run                 # the plan and estimated times, nothing run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import knn_gpu
from knn_gpu._api import neighbors as api
from knn_gpu._lib.backends import namespace_of_backend, to_host

#: Item 3's shapes; ``out_of_core`` gives the memory budget (bytes) that forces streaming.
SHAPES = [
    {"name": "10k x 1M x 128, k=10", "n_query": 10_000, "n_train": 1_000_000, "dim": 128, "k": 10},
    {"name": "10k x 1M x 128, k=100", "n_query": 10_000, "n_train": 1_000_000, "dim": 128, "k": 100},
    {"name": "10k x 1M x 128, k=1000", "n_query": 10_000, "n_train": 1_000_000, "dim": 128, "k": 1000},
    {"name": "2000 x 200k x 768, k=100", "n_query": 2_000, "n_train": 200_000, "dim": 768, "k": 100},
    {"name": "10 x 1M x 128, k=10 (latency)", "n_query": 10, "n_train": 1_000_000, "dim": 128, "k": 10},
    {"name": "100 x 1M x 128, k=10 (latency)", "n_query": 100, "n_train": 1_000_000, "dim": 128, "k": 10},
    {
        "name": "10k x 1M x 128, k=10, out of core",
        "n_query": 10_000,
        "n_train": 1_000_000,
        "dim": 128,
        "k": 10,
        "out_of_core": 512 * 2**20,
    },
]
#: The same kinds of shapes, small enough for a CPU smoke test (seconds).
QUICK_SHAPES = [
    {"name": "1000 x 20k x 32, k=10", "n_query": 1000, "n_train": 20_000, "dim": 32, "k": 10},
    {"name": "200 x 5000 x 96, k=100", "n_query": 200, "n_train": 5000, "dim": 96, "k": 100},
    {"name": "10 x 20k x 32, k=10 (latency)", "n_query": 10, "n_train": 20_000, "dim": 32, "k": 10},
    {"name": "200 x 20k x 32, k=10, out of core", "n_query": 200, "n_train": 20_000, "dim": 32, "k": 10,
     "out_of_core": 4 * 2**20},
]  # fmt: skip

#: H200 figures for the plan's estimates (dense fp32 without tensor cores; HBM3e).
H200_FP32_FLOPS = 60e12
H200_BANDWIDTH = 4.0e12
H200_HOST_COPY = 25e9  # bytes/s over PCIe 5 from pinned memory, roughly


def estimate_seconds(shape: dict) -> float:
    """A rough time of one call of one method on an H200: the product at fp32 peak, plus reading the block 3 times."""
    n_query, n_train, dim = shape["n_query"], shape["n_train"], shape["dim"]
    product = 2.0 * n_query * n_train * dim / H200_FP32_FLOPS
    block = 3 * 4.0 * n_query * n_train / H200_BANDWIDTH
    train_bytes = 4.0 * (n_train * dim)
    copy = train_bytes / H200_HOST_COPY if shape.get("out_of_core") else train_bytes / H200_BANDWIDTH
    return product + block + copy + 2e-4


def shape_repeats(shape: dict, repeats: int, seconds_per_method: float) -> int:
    """``repeats``, raised up to 50 for shapes whose calls take milliseconds (latency: more samples, same time)."""
    return max(repeats, min(50, int(0.2 * seconds_per_method / estimate_seconds(shape))))


# --------------------------------------------------------------------------- devices


class Device:
    """Where the benchmark runs: torch on CUDA (and CuPy on the same GPU), or torch on the CPU for a smoke test."""

    def __init__(self, use_cuda: bool, backends: list[str]) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        self.name = torch.cuda.get_device_name(0) if use_cuda else f"CPU ({platform.processor() or platform.machine()})"
        self.backends = backends

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
            if "cupy" in self.backends:
                import cupy

                cupy.cuda.Device(self.device.index).synchronize()

    def release(self) -> None:
        """Give cached blocks back (torch's caching allocator, CuPy's pool): each method starts on the same free memory."""
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()
            if "cupy" in self.backends:
                import cupy

                cupy.get_default_memory_pool().free_all_blocks()
                cupy.get_default_pinned_memory_pool().free_all_blocks()

    def free_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(self.torch.cuda.mem_get_info(self.device)[0])
        return 2 * 2**30

    def as_backend(self, tensor: Any, backend: str) -> Any:
        """``tensor`` (torch, on this device) as the backend's array, sharing memory where it can."""
        if backend == "cupy":
            import cupy

            return cupy.from_dlpack(tensor)
        return tensor


def timed(run: Callable[[], Any], device: Device, repeats: int, max_seconds: float) -> tuple[list[float], Any]:
    """One warm-up call, then up to ``repeats`` synchronised calls (fewer past ``max_seconds``)."""
    device.synchronize()
    result = run()
    device.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - started < max_seconds):
        device.synchronize()
        start = time.perf_counter()
        run()
        device.synchronize()
        times.append(time.perf_counter() - start)
    return times, result


# --------------------------------------------------------------------------- methods


def peer_batch_rows(n_train: int, budget: int) -> int:
    """Queries per batch of the peer: its float32 distance block, 3 times over, within ``budget``."""
    return max(1, budget // (3 * 4 * n_train))


def streamed_chunk_rows(dim: int, budget: int) -> int:
    """Training rows per chunk of knn_gpu's out-of-core search for ``budget`` (its rule, read from the engine)."""
    from knn_gpu._engine.streaming import chunk_rows_for

    return chunk_rows_for(dim, 4, budget)


def peer(queries: Any, train: Any, k: int, batch_rows: int) -> Callable[[], Any]:
    """The hand-written search: ``‖t‖² − 2 q·tᵀ`` by one ``addmm`` per batch, then ``torch.topk`` (smallest)."""
    import torch

    train_sq = (train * train).sum(dim=1)

    def run():
        found = []
        for start in range(0, queries.shape[0], batch_rows):
            block = torch.addmm(train_sq[None, :], queries[start : start + batch_rows], train.T, alpha=-2.0)
            found.append(torch.topk(block, k, dim=1, largest=False, sorted=True).indices)
        return torch.cat(found)

    return run


def streamed_peer(queries: Any, host_train: Any, k: int, batch_rows: int, chunk_rows: int) -> Callable[[], Any]:
    """The peer out of core: each pinned chunk copied to the GPU, searched, merged with the running best."""
    import torch

    device = queries.device

    def run():
        best_keys = best_indices = None
        for first in range(0, host_train.shape[0], chunk_rows):
            chunk = host_train[first : first + chunk_rows].to(device, non_blocking=True)
            chunk_sq = (chunk * chunk).sum(dim=1)
            keys, indices = [], []
            for start in range(0, queries.shape[0], batch_rows):
                block = torch.addmm(chunk_sq[None, :], queries[start : start + batch_rows], chunk.T, alpha=-2.0)
                found = torch.topk(block, min(k, chunk.shape[0]), dim=1, largest=False, sorted=True)
                keys.append(found.values)
                indices.append(found.indices + first)
            keys, indices = torch.cat(keys), torch.cat(indices)
            if best_keys is not None:
                keys, indices = torch.cat([best_keys, keys], dim=1), torch.cat([best_indices, indices], dim=1)
            best = torch.topk(keys, min(k, keys.shape[1]), dim=1, largest=False, sorted=True)
            best_keys, best_indices = best.values, torch.gather(indices, 1, best.indices)
        return best_indices

    return run


def floor(queries: Any, train: Any, batch_rows: int, host_train: Any = None, chunk_rows: int = 0) -> Callable[[], Any]:
    """The bare product in the peer's batches (and, out of core, the chunks' copies), into one reused block."""
    import torch

    rows = min(batch_rows, queries.shape[0])
    columns = train.shape[0] if host_train is None else min(chunk_rows, host_train.shape[0])
    block = torch.empty((rows, columns), dtype=queries.dtype, device=queries.device)

    def multiply(matrix):
        for start in range(0, queries.shape[0], batch_rows):
            part = queries[start : start + batch_rows]
            torch.matmul(part, matrix.T, out=block[: part.shape[0], : matrix.shape[0]])

    def run():
        if host_train is None:
            multiply(train)
        else:
            for first in range(0, host_train.shape[0], chunk_rows):
                multiply(host_train[first : first + chunk_rows].to(queries.device, non_blocking=True))
        return None

    return run


def knn_gpu_call(queries: Any, train: Any, k: int, memory_budget: int | None) -> Callable[[], Any]:
    def run():
        return api.kneighbors(queries, train, k, memory_budget=memory_budget)[1]

    return run


def knn_gpu_fitted(
    queries: Any, train: Any, k: int, memory_budget: int | None, xp: Any, ranking: str = "float32"
) -> Callable[[], Any]:
    targets = xp.zeros(train.shape[0], dtype=xp.float32, device=getattr(train, "device", None))
    with knn_gpu.config_context(ranking=ranking):  # read at fit
        model = knn_gpu.KNN(num_neighbors=k, memory_budget=memory_budget).fit(train, targets)
    return lambda: model.kneighbors(queries)[1]


# --------------------------------------------------------------------------- one shape


def run_shape(shape: dict, device: Device, repeats: int, max_seconds: float) -> list[dict]:
    torch = device.torch
    generator = torch.Generator(device=device.device).manual_seed(0)
    n_query, n_train, dim, k = shape["n_query"], shape["n_train"], shape["dim"], shape["k"]
    train = torch.randn((n_train, dim), generator=generator, device=device.device)
    queries = torch.randn((n_query, dim), generator=generator, device=device.device)
    budget = shape.get("out_of_core")
    batch_rows = peer_batch_rows(n_train, int(device.free_bytes() * 0.5))
    # Factories: each method's buffers (the floor's block, a fitted model) exist only while it is timed,
    # so that knn_gpu's default budget (half the free memory, read at each call) sees the same GPU every time.
    methods: dict[str, tuple[str, Callable[[], Callable]]] = {}
    if budget:
        host_train = train.cpu()
        if device.device.type == "cuda":
            host_train = host_train.pin_memory()
        del train
        chunk_rows = streamed_chunk_rows(dim, budget)
        peer_rows = min(batch_rows, peer_batch_rows(chunk_rows, budget))
        methods["peer"] = ("torch", lambda: streamed_peer(queries, host_train, k, peer_rows, chunk_rows))
        methods["floor"] = ("torch", lambda: floor(queries, None, peer_rows, host_train, chunk_rows))
        host_rows = host_train.numpy()
        for backend in device.backends:
            on_backend = device.as_backend(queries, backend)
            options = {} if device.device.type == "cuda" else {"out_of_core": True}
            methods[f"knn_gpu [{backend}]"] = (
                backend,
                lambda q=on_backend, o=options: lambda: api.kneighbors(q, host_rows, k, memory_budget=budget, **o)[1],
            )
        batch_rows, shape = peer_rows, dict(shape, chunk_rows=chunk_rows)
    else:
        methods["peer"] = ("torch", lambda: peer(queries, train, k, batch_rows))
        methods["floor"] = ("torch", lambda: floor(queries, train, batch_rows))
        for backend in device.backends:
            xp = namespace_of_backend("cupy" if backend == "cupy" else "torch")
            on_backend = (device.as_backend(queries, backend), device.as_backend(train, backend))
            methods[f"knn_gpu [{backend}]"] = (backend, lambda b=on_backend: knn_gpu_call(*b, k, None))
            methods[f"knn_gpu fitted [{backend}]"] = (
                backend,
                lambda b=on_backend, x=xp: knn_gpu_fitted(*b, k, None, x),
            )
            if backend.startswith("torch"):  # the certified tensor-core ranking (torch CUDA tensors only)
                methods[f"knn_gpu fitted bf16x3 [{backend}]"] = (
                    backend,
                    lambda b=on_backend, x=xp: knn_gpu_fitted(*b, k, None, x, "bf16x3"),
                )
    records = []
    answers: dict[str, np.ndarray] = {}
    for method, (backend, factory) in methods.items():
        try:
            times, answer = timed(factory(), device, repeats, max_seconds)
            error = ""
        except Exception as exc:  # an out-of-memory or a failing backend: recorded, the others still run
            times, answer, error = [], None, f"{type(exc).__name__}: {exc}"
        device.release()
        if answer is not None:
            answers[method] = to_host(answer)
        records.append(
            {
                "gpu": device.name,
                "shape": shape["name"],
                "n_query": n_query,
                "n_train": n_train,
                "dim": dim,
                "k": k,
                "out_of_core": bool(budget),
                "memory_budget": budget,
                "peer_batch_rows": batch_rows,
                "method": method,
                "backend": backend,
                "dtype": "float32",
                "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                "seconds_min": min(times) if times else None,
                "seconds_median": statistics.median(times) if times else None,
                "repeats": len(times),
                "error": error,
            }
        )
    reference = answers.get("peer")
    for record in records:
        answer = answers.get(record["method"])
        same_shape = reference is not None and answer is not None and answer.shape == reference.shape
        record["agreement_with_peer"] = float((answer == reference).mean()) if same_shape else None
        if " bf16x3 " in record["method"]:  # exact either way: the tensor-core ranking must answer identically
            plain = answers.get(record["method"].replace(" bf16x3 ", " "))
            same = plain is not None and answer is not None and plain.shape == answer.shape
            record["identical_to_float32_ranking"] = bool((plain == answer).all()) if same else None
    peer_seconds = next((r["seconds_median"] for r in records if r["method"] == "peer"), None)
    floor_seconds = next((r["seconds_median"] for r in records if r["method"] == "floor"), None)
    for record in records:
        seconds = record["seconds_median"]
        record["ratio_to_peer"] = seconds / peer_seconds if seconds and peer_seconds else None
        record["ratio_to_floor"] = seconds / floor_seconds if seconds and floor_seconds else None
    return records


# --------------------------------------------------------------------------- report


def markdown_table(records: list[dict]) -> str:
    if not records:
        return "(no shape ran)\n"
    lines = [
        f"GPU: {records[0]['gpu']}; float32; min / median of the repeats; ratio < 1 is faster than the peer",
        "",
        "| shape | method | min s | median s | × peer | × floor | agreement with peer | repeats |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any, form: str) -> str:
        return "-" if value is None else format(value, form)

    for r in records:
        if r["error"]:
            lines.append(f"| {r['shape']} | {r['method']} | error: {r['error'][:80]} | | | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['method']} | {cell(r['seconds_min'], '.4f')} | {cell(r['seconds_median'], '.4f')} "
            f"| {cell(r['ratio_to_peer'], '.2f')} | {cell(r['ratio_to_floor'], '.2f')} "
            f"| {cell(r['agreement_with_peer'], '.4f')} | {r['repeats']} |"
        )
    return "\n".join(lines) + "\n"


def gpu_backends(requested: list[str] | None) -> tuple[list[str], list[str]]:
    """The GPU backends to time and, for the others, why not."""
    from knn_gpu._lib.backends import cupy_gpu_status, torch_cuda_status

    usable, notes = [], []
    for backend, (ok, reason) in (("torch-cuda", torch_cuda_status()), ("cupy", cupy_gpu_status())):
        if requested and backend not in requested:
            continue
        (usable.append(backend) if ok else notes.append(f"{backend}: {reason}"))
    return usable, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for bench_gpu.json and bench_gpu.md")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test; torch CPU without a GPU)")
    parser.add_argument("--shapes", help="comma-separated indices into the shape list (0-based), e.g. 0,3,4")
    parser.add_argument("--backends", help="comma-separated among torch-cuda, cupy (default: every usable one)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method after the warm-up")
    parser.add_argument("--seconds-per-method", type=float, default=3.0, help="stop repeating after this")
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which no new shape starts")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and estimated times; run nothing")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = [shapes[int(index)] for index in args.shapes.split(",")]
    print(f"bench_gpu: {len(shapes)} shapes; knn_gpu {knn_gpu.__version__}; python {sys.version.split()[0]}")
    for shape in shapes:
        # warm-up + repeats, 4 methods per backend pair; capped by --seconds-per-method
        per_call = estimate_seconds(shape)
        repeats = shape_repeats(shape, args.repeats, args.seconds_per_method)
        print(
            f"  {shape['name']}: ~{per_call * 1e3:.1f} ms per call on an H200 (estimate), 1 + {repeats} calls per method"
        )
    if args.dry_run:
        return 0
    import torch

    backends, notes = gpu_backends(args.backends.split(",") if args.backends else None)
    use_cuda = "torch-cuda" in backends or "cupy" in backends
    if not use_cuda:
        if not args.quick:
            print("no usable GPU (" + "; ".join(notes) + "): run with --quick for the CPU smoke test")
            return 1
        backends = ["torch"]
        print("no usable GPU: timing torch on the CPU (" + "; ".join(notes) + ")")
    if use_cuda and not torch.cuda.is_available():
        print("CuPy sees a GPU but torch does not: the peer needs torch on CUDA")
        return 1
    device = Device(use_cuda, backends)
    print(
        f"device: {device.name}; backends: {', '.join(backends)}" + (f"; not used: {'; '.join(notes)}" if notes else "")
    )
    records: list[dict] = []
    for shape in shapes:
        if args.deadline is not None and time.perf_counter() - started > args.deadline:
            print(f"skipped (past the {args.deadline:.0f} s deadline): {shape['name']}")
            records.append({"gpu": device.name, "shape": shape["name"], "method": "-", "skipped": "deadline"})
            continue
        shape_start = time.perf_counter()
        repeats = shape_repeats(shape, args.repeats, args.seconds_per_method)
        shape_records = run_shape(shape, device, repeats, args.seconds_per_method)
        records += shape_records
        print(markdown_table(shape_records).split("\n", 2)[2].rstrip())
        print(f"  ({time.perf_counter() - shape_start:.1f} s)")
        if args.out:
            write(args.out, records)
        device.release()
    if args.out:
        write(args.out, records)
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if any(r.get("error") for r in records) else 0


def write(folder: Path, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_gpu.json").write_text(json.dumps(records, indent=1))
    timed_records = [r for r in records if "skipped" not in r]
    skipped = [r["shape"] for r in records if "skipped" in r]
    text = markdown_table(timed_records) + "".join(f"\nskipped (deadline): {name}" for name in skipped)
    (folder / "bench_gpu.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
