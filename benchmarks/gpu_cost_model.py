"""A model of GPU cost, measured on the CPU: every kernel a torch-CUDA search launches, priced on an H200 roofline.

How it works
------------
The search runs on the fake CUDA device of ``tests/fake_cuda.py`` with
``storage="meta"``: tensors report ``cuda:0`` (so knn_gpu takes its GPU
paths: float32 ranking of float64 data, device batch sizes from
``torch.cuda.mem_get_info``, no host selection) but hold shapes and dtypes
only, so a search of 10,000 queries against 1,000,000 rows is traced in
about a second with no memory. A :class:`torch.utils._python_dispatch.TorchDispatchMode`
(:class:`CostRecorder`) sees every ATen op below the Python layer, with its
tensors, and prices it. Nothing in the search may depend on the data's
values without a host read, and every host read (``aten._local_scalar_dense``:
``bool()``, ``.item()``, ...) is counted as a host synchronisation and
answered ``True`` (the only such read in a search is the finiteness check
of the inputs, which real data passes).

The trace is exact for the shapes given: no extrapolation. What is checked
instead (:func:`validate`, printed) is that the meta trace of a mid-size
search is *identical*, op by op (name, shapes, dtypes) and so in price, to
the trace of the same search on real random data on the fake device
(``storage="cpu"``): the shape-only run launches what the real one does.

Pricing (per ATen op; an "op" is one kernel unless noted)
---------------------------------------------------------
``max(kernels x launch, bytes / memory bandwidth, FLOPs / peak)``, plus
per host synchronisation a fixed round trip, plus host <-> device copies at
the host link's rate. Figures (:class:`Roofline`), from NVIDIA's H200
datasheet (H200 SXM 141 GB: memory bandwidth 4.8 TB/s; FP64 34 TFLOP/s,
FP64 tensor core 67; FP32 67; TF32 tensor core 989, BF16/FP16 tensor core
1,979, both *with sparsity*, so 494 and 989 dense), derated to what
well-tuned kernels reach (~75 %):

=================================  =============
launch latency per kernel           5 us
memory bandwidth                    3.5 TB/s
FP32 (CUDA cores, torch's default)  50 TFLOP/s
TF32 tensor cores                   400 TFLOP/s
BF16 / FP16 tensor cores            800 TFLOP/s
FP64 (tensor cores, DGEMM)          50 TFLOP/s
host synchronisation                20 us (drain + read back + relaunch)
host -> device, pageable memory     20 GB/s + 10 us
host -> device, pinned memory       50 GB/s + 10 us (PCIe Gen5 x16)
=================================  =============

Bytes: each tensor read (a broadcast input counts its distinct elements
only; a gather's source counts the elements gathered) and each output
written. FLOPs: ``2 M N K`` for the matrix products (``mm``, ``bmm``,
``addmm``, ...); elementwise arithmetic is memory-bound and priced by its
bytes. Views, ``empty`` and reshapes are free. Two ops are known to read
their input several times on CUDA: ``topk`` (radix selection: one pass per
8-bit digit of the key, then a gather pass, one kernel each; a sort of the
k results when ``sorted=True``) and ``sort`` (one kernel in shared memory up
to 4,096 elements per row, else one radix pass (kernel) per 8-bit digit,
keys and int64 indices read and written each time). Kernels run one after another on one stream; the
modeled time is their sum (no overlap of independent kernels).

Host (Python) time is not in the GPU model; it is shown beside it. It is
the wall time of the traced call less the tracing harness's own cost per
torch call (calibrated on ``x + 1``) plus torch's cost per call on the
CPU: an estimate of what the host spends issuing the call, NumPy work
included (a block layout of 1M rows built in NumPy counts in full), never
less than the torch calls times torch's cost per call. It is noisy on a
shared machine; the number of torch calls per call, also shown, is not.

The peer (:func:`peer_kneighbors`) is what a user writes by hand: the
``||q||^2 - 2 q.t + ||t||^2`` expansion with one ``q @ t.T`` and
``torch.topk``, batched to the same memory budget. The floor is one GEMM of
the queries against the training rows at the FP32 peak (no distance block
written): no exact search can be faster on CUDA cores.

Run ``python benchmarks/gpu_cost_model.py`` (about a minute); ``--json PATH``
chooses the output (default ``benchmarks/gpu_cost_model.json``),
``--shapes small`` runs a quick set (the test uses it). ``--measured PATH``
reads the same shapes timed on a real GPU (:func:`load_measured`) and
prints model and measurement side by side: the calibration of the model
when a GPU is lent. The peer fitted (training norms kept) is what a
measured ``peer_s`` is compared with.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT / "tests"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import fake_cuda  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten, tree_map  # noqa: E402

import knn_gpu  # noqa: E402

__all__ = ["Roofline", "H200", "OpCost", "CostRecorder", "trace", "peer_kneighbors", "floor_seconds", "main"]


@dataclass(frozen=True)
class Roofline:
    """What one GPU does per second (see the module notes for the sources)."""

    name: str = "NVIDIA H200 SXM 141 GB (model)"
    launch_s: float = 5e-6
    memory_bytes_per_s: float = 3.5e12
    fp32_flops: float = 50e12
    tf32_flops: float = 400e12
    half_flops: float = 800e12
    fp64_flops: float = 50e12
    sync_s: float = 20e-6
    pageable_bytes_per_s: float = 20e9
    pinned_bytes_per_s: float = 50e9
    copy_latency_s: float = 10e-6
    total_memory: int = 143_771_000_000  # what torch.cuda.mem_get_info reports as total on an H200
    context_bytes: int = 600 * 2**20  # taken by the CUDA context before the search

    def matmul_flops(self, dtype: torch.dtype, *, tf32: bool = False) -> float:
        """Peak FLOP/s of a matrix product in ``dtype``."""
        if dtype in (torch.float16, torch.bfloat16):
            return self.half_flops
        if dtype == torch.float64:
            return self.fp64_flops
        return self.tf32_flops if tf32 else self.fp32_flops


H200 = Roofline()

#: Ops that launch nothing: views, reshapes and allocation.
FREE_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "_reshape_alias",
        "slice",
        "select",
        "unsqueeze",
        "squeeze",
        "expand",
        "permute",
        "t",
        "transpose",
        "alias",
        "as_strided",
        "detach",
        "split",
        "split_with_sizes",
        "unbind",
        "lift_fresh",
        "empty",
        "empty_like",
        "empty_strided",
        "empty_permuted",
        "new_empty",
        "new_empty_strided",
        "diagonal",
        "unfold",
        "view_as_real",
        "_neg_view",
        "_conj",
        "resolve_neg",
        "resolve_conj",
    }
)

#: Matrix products: FLOPs 2 M N K.
MATMUL_OPS = frozenset({"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "mv", "addmv", "dot", "vdot"})

#: Ops whose first tensor argument is only read where an index points.
GATHER_OPS = frozenset({"index_select", "gather", "index", "take", "take_along_dim", "embedding"})

#: Ops that read device data on the host (each a synchronisation).
SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"})


@dataclass
class OpCost:
    """One ATen op of a trace, priced."""

    op: str
    kind: str  # "kernel", "sync", "h2d", "d2h"
    kernels: int
    bytes: int
    flops: int
    seconds: float
    signature: str  # shapes and dtypes of the tensors in and out
    from_host: bool = False  # every tensor read is host data (a copy of it to the device, on a GPU)

    def row(self) -> dict:
        return asdict(self)


@dataclass
class Trace:
    """The priced ops of one traced call."""

    ops: list[OpCost] = field(default_factory=list)
    torch_calls: int = 0
    wall_s: float = 0.0
    result: Any = None  # what the traced call returned
    dispatch_s: float = 0.0  # wall time spent in the recorder: the ops run on meta/CPU, and their pricing

    @property
    def kernels(self) -> int:
        return sum(op.kernels for op in self.ops)

    @property
    def bytes(self) -> int:
        return sum(op.bytes for op in self.ops)

    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.ops)

    @property
    def seconds(self) -> float:
        return sum(op.seconds for op in self.ops)

    @property
    def syncs(self) -> int:
        return sum(op.kind in ("sync", "d2h") for op in self.ops)

    @property
    def copies(self) -> int:
        return sum(op.kind == "h2d" for op in self.ops)

    def by_op(self, top: int = 8) -> list[tuple[str, int, float]]:
        """``(op, kernels, seconds)`` of the costliest op names."""
        kernels: Counter = Counter()
        seconds: Counter = Counter()
        for op in self.ops:
            kernels[op.op] += op.kernels
            seconds[op.op] += op.seconds
        return [(name, kernels[name], seconds[name]) for name, _ in seconds.most_common(top)]

    def summary(self) -> dict:
        return {
            "kernels": self.kernels,
            "bytes": self.bytes,
            "flops": self.flops,
            "modeled_s": self.seconds,
            "syncs": self.syncs,
            "host_copies": self.copies,
            "torch_calls": self.torch_calls,
        }


def _on_device(tensor: torch.Tensor) -> bool:
    return tensor.is_meta or isinstance(tensor, fake_cuda.FakeCudaTensor)


def _distinct_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the elements a kernel reads from ``tensor``: broadcast (stride 0) axes count once."""
    elements = 1
    for size, stride in zip(tensor.shape, tensor.stride()):
        if stride != 0:
            elements *= size
    return elements * tensor.element_size()


def _signature(tensors_in: list[torch.Tensor], tensors_out: list[torch.Tensor]) -> str:
    def one(tensor: torch.Tensor) -> str:
        return f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}"

    return ",".join(map(one, tensors_in)) + " -> " + ",".join(map(one, tensors_out))


def _matmul_flops(name: str, tensors: list[torch.Tensor], out: torch.Tensor) -> int:
    """2 M N K for a product whose result is ``out``."""
    if name in ("addmm", "baddbmm", "addbmm", "addmv"):
        tensors = tensors[1:]
    inner = tensors[0].shape[-1] if tensors else 1
    return 2 * out.numel() * inner


def price(
    func: Any, args: tuple, kwargs: dict, out: Any, roofline: Roofline = H200, *, tf32: bool = False
) -> OpCost | None:
    """The cost of one ATen op, or None for a view/allocation."""
    name = func.overloadpacket.__name__
    if name in FREE_OPS:
        return None
    tensors_in = [leaf for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, torch.Tensor)]
    tensors_out = [leaf for leaf in tree_flatten(out)[0] if isinstance(leaf, torch.Tensor)]
    signature = _signature(tensors_in, tensors_out)
    out_bytes = sum(tensor.numel() * tensor.element_size() for tensor in tensors_out)
    host_in = [tensor for tensor in tensors_in if not _on_device(tensor) and tensor.ndim > 0]
    device_in = [tensor for tensor in tensors_in if _on_device(tensor)]
    if name in SYNC_OPS:
        read = sum(tensor.numel() * tensor.element_size() for tensor in device_in)
        seconds = roofline.sync_s + max(roofline.launch_s, read / roofline.memory_bytes_per_s)
        return OpCost(name, "sync", 1, read, 0, seconds, signature)
    if host_in and any(_on_device(tensor) for tensor in tensors_out):
        copied = sum(tensor.numel() * tensor.element_size() for tensor in host_in)
        rate = roofline.pinned_bytes_per_s if all(t.is_pinned() for t in host_in) else roofline.pageable_bytes_per_s
        return OpCost(name, "h2d", 0, copied, 0, roofline.copy_latency_s + copied / rate, signature)
    if device_in and tensors_out and not any(_on_device(tensor) for tensor in tensors_out):
        copied = sum(tensor.numel() * tensor.element_size() for tensor in device_in)
        seconds = roofline.sync_s + roofline.copy_latency_s + copied / roofline.pageable_bytes_per_s
        return OpCost(name, "d2h", 0, copied, 0, seconds, signature)
    flops = 0
    kernels = 1
    peak = roofline.fp32_flops
    if name in GATHER_OPS and tensors_in:
        read = sum(_distinct_bytes(tensor) for tensor in tensors_in[1:]) + out_bytes
    else:
        read = sum(_distinct_bytes(tensor) for tensor in tensors_in)
    moved = read + out_bytes
    if name in MATMUL_OPS and tensors_out:
        flops = _matmul_flops(name, tensors_in, tensors_out[0])
        # The inputs' dtype sets the tensor-core rate (bfloat16 pieces with a float32 output: split ranking).
        operand = tensors_in[-1].dtype if tensors_in else tensors_out[0].dtype
        peak = roofline.matmul_flops(operand, tf32=tf32)
    elif name == "topk" and tensors_in:
        source = tensors_in[0]
        digit_passes = source.element_size()  # one pass per 8-bit digit
        kernels = digit_passes + 1
        moved = (digit_passes + 1) * _distinct_bytes(source) + out_bytes
        k = tensors_out[0].shape[-1] if tensors_out else 1
        wants_sorted = args[4] if len(args) > 4 else kwargs.get("sorted", True)
        if wants_sorted and k > 1:
            kernels += 1
            moved += 2 * out_bytes
    elif name == "sort" and tensors_in:
        source = tensors_in[0]
        row = source.shape[-1] if source.ndim else 1
        passes = 1 if row <= 4096 else source.element_size()
        kernels = passes
        moved = passes * 2 * (_distinct_bytes(source) + source.numel() * 8)
    seconds = max(kernels * roofline.launch_s, moved / roofline.memory_bytes_per_s, flops / peak)
    return OpCost(name, "kernel", kernels, moved, flops, seconds, signature)


class CostRecorder(TorchDispatchMode):
    """Records and prices every ATen op run under it (see :func:`price`).

    Ops are run on plain tensors (the fake device's subclass removed: meta
    kernels written in Python read ``.device``); host reads of device data
    are answered ``True`` when the data is meta (no values to read), and
    copies of meta data to the host with zeros.
    """

    def __init__(self, roofline: Roofline = H200, *, tf32: bool = False) -> None:
        super().__init__()
        self.roofline = roofline
        self.tf32 = tf32
        self.trace = Trace()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        try:
            return self._record(func, args, kwargs or {})
        finally:
            self.trace.dispatch_s += time.perf_counter() - start

    def _record(self, func, args, kwargs):
        read = [leaf for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, torch.Tensor) and leaf.ndim]
        from_host = bool(read) and not any(_on_device(tensor) for tensor in read)
        with torch._C.DisableTorchFunctionSubclass():
            args, kwargs = tree_map(_plain, (args, kwargs))
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" and args[0].is_meta:
            out = True
        elif name == "_to_copy" and args[0].is_meta and str(kwargs.get("device", "meta")) == "cpu":
            # A read of meta data, answered with the common case: a count (the k-search's uncertified
            # queries) zero, a floating number (the build's largest squared norm) one, within the range
            # that needs no scaling.
            dtype = kwargs.get("dtype") or args[0].dtype
            out = (torch.ones if dtype.is_floating_point else torch.zeros)(args[0].shape, dtype=dtype)
        else:
            out = func(*args, **kwargs)
        cost = price(func, args, kwargs, out, self.roofline, tf32=self.tf32)
        if cost is not None:
            cost.from_host = from_host
            self.trace.ops.append(cost)
        return out


def _plain(value: Any) -> Any:
    return value.as_subclass(torch.Tensor) if isinstance(value, fake_cuda.FakeCudaTensor) else value


#: The engine's deliberate host syncs (tests/fake_cuda.py's list): the finiteness check of the inputs,
#: the k-search's one count per search (its uncertified queries) and the index build's one number.
ALLOWED_SYNC_SITES = fake_cuda.ENGINE_SYNC_SITES


def device_context(roofline: Roofline = H200, *, storage: str = "meta"):
    """One fake H200: ``cuda:0`` with the H200's memory, data on ``storage``."""
    return fake_cuda.fake_cuda(
        num_devices=1,
        free_bytes=roofline.total_memory - roofline.context_bytes,
        total_bytes=roofline.total_memory,
        allowed_sync_sites=ALLOWED_SYNC_SITES,
        storage=storage,
    )


def trace(gpu: fake_cuda.FakeGpu, call: Callable[[], Any], roofline: Roofline = H200, *, tf32: bool = False) -> Trace:
    """Run ``call`` (inside an active :func:`device_context`) under a :class:`CostRecorder`."""
    recorder = CostRecorder(roofline, tf32=tf32)
    calls_before = gpu.torch_calls
    start = time.perf_counter()
    with recorder:
        recorder.trace.result = call()
    recorder.trace.wall_s = time.perf_counter() - start
    recorder.trace.torch_calls = gpu.torch_calls - calls_before

    return recorder.trace


# -- the peer: what a user writes by hand --------------------------------------------------
def peer_batch_rows(num_train: int, memory_budget: int) -> int:
    """Queries per batch of the peer: its distance block, the product and top-k's workspace fit the budget."""
    return max(1, memory_budget // (3 * 4 * num_train))


def peer_kneighbors(
    queries: torch.Tensor, train: torch.Tensor, k: int, *, batch_rows: int, train_sq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k-NN by the expansion ``||q||^2 - 2 q.t + ||t||^2`` and ``torch.topk``, in batches (float32).

    ``train_sq`` (the squared norms of the training rows) is what a fitted
    peer keeps; without it they are computed per call.
    """
    if train_sq is None:
        train_sq = (train * train).sum(dim=1)
    distances, indices = [], []
    for start in range(0, queries.shape[0], batch_rows):
        batch = queries[start : start + batch_rows]
        # ||t||^2 - 2 q.t in one GEMM (the norms a bias of cuBLASLt's epilogue); ||q||^2 changes no order.
        block = torch.addmm(train_sq, batch, train.T, alpha=-2.0)
        values, columns = torch.topk(block, k, dim=1, largest=False)
        batch_sq = (batch * batch).sum(dim=1, keepdim=True)
        distances.append((values + batch_sq).clamp_min(0).sqrt())
        indices.append(columns)
    if len(distances) == 1:
        return distances[0], indices[0]
    return torch.cat(distances), torch.cat(indices)


def floor_seconds(num_queries: int, num_train: int, dim: int, roofline: Roofline = H200) -> float:
    """One GEMM of the queries against the training rows at the FP32 peak (no distance block written)."""
    flops = 2 * num_queries * num_train * dim
    read = 4 * (num_queries + num_train) * dim
    return max(roofline.launch_s, flops / roofline.fp32_flops, read / roofline.memory_bytes_per_s)


# -- host time -------------------------------------------------------------------------------
def _per_call_seconds(call: Callable[[], Any], repeats: int = 2000) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def plain_call_seconds() -> float:
    """torch's own cost per call on a tiny CPU tensor, outside every mode (on a GPU: the launch's host side)."""
    value = torch.ones(4)
    return _per_call_seconds(lambda: value + 1)


def harness_call_seconds() -> float:
    """The tracing harness's own cost per torch call, outside the recorded ops (call inside :func:`device_context`)."""
    device_value = torch.empty(4, device="cuda")
    repeats = 2000
    recorder = CostRecorder()
    with recorder:
        device_value + 1
        recorder.trace.dispatch_s = 0.0
        start = time.perf_counter()
        for _ in range(repeats):
            device_value + 1
        elapsed = time.perf_counter() - start
    return (elapsed - recorder.trace.dispatch_s) / repeats


def host_seconds(traced: Trace, harness: float, plain: float) -> float:
    """Host time of a traced call: its wall time less the tracing's (the recorder's time, the harness's
    cost per torch call), plus torch's own cost per call."""
    return max(traced.torch_calls * plain, traced.wall_s - traced.dispatch_s - traced.torch_calls * (harness - plain))


# -- the shapes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    num_queries: int
    num_train: int
    dim: int
    k: int

    @property
    def label(self) -> str:
        return f"{_count(self.num_queries)} x {_count(self.num_train)} x {self.dim}, k = {self.k}"


def _count(value: int) -> str:
    if value >= 1_000_000 and value % 1_000_000 == 0:
        return f"{value // 1_000_000}M"
    if value >= 1000 and value % 1000 == 0:
        return f"{value // 1000}k"
    return str(value)


#: The shapes of benchmarks/gpu_check.sh (issue 17, item 3), and 10k x 200k x 768.
SHAPES = {
    "issue": [
        Shape(10_000, 1_000_000, 128, 10),
        Shape(10_000, 1_000_000, 128, 100),
        Shape(10_000, 1_000_000, 128, 1000),
        Shape(10_000, 200_000, 768, 10),
        Shape(2000, 200_000, 768, 100),
        Shape(100, 1_000_000, 128, 10),
        Shape(10, 1_000_000, 128, 10),
    ],
    "small": [Shape(200, 5000, 16, 10), Shape(10, 5000, 16, 10)],
}

#: The mid-size search whose meta trace is compared with a real-data trace.
VALIDATION_SHAPE = {"issue": Shape(500, 60_000, 64, 10), "small": Shape(50, 3000, 8, 5)}


def model_shape(gpu: fake_cuda.FakeGpu, shape: Shape, costs: tuple[float, float], roofline: Roofline = H200) -> dict:
    """Trace knn_gpu (functional and fitted), the peer (per call and fitted) at ``shape``; price the floor."""
    train = torch.empty((shape.num_train, shape.dim), device="cuda")
    queries = torch.empty((shape.num_queries, shape.dim), device="cuda")
    targets = torch.empty(shape.num_train, device="cuda")
    functional = _fastest(lambda: trace(gpu, lambda: knn_gpu.kneighbors(queries, train, shape.k), roofline))
    model = knn_gpu.KNN(num_neighbors=shape.k)
    trace(gpu, lambda: model.fit(train, targets), roofline)  # meta data: its host reads need the recorder
    fitted = _fastest(lambda: trace(gpu, lambda: model.kneighbors(queries), roofline))
    budget = (roofline.total_memory - roofline.context_bytes) // 2
    rows = peer_batch_rows(shape.num_train, budget)
    peer = _fastest(lambda: trace(gpu, lambda: peer_kneighbors(queries, train, shape.k, batch_rows=rows), roofline))
    train_sq = trace(gpu, lambda: (train * train).sum(dim=1), roofline).result
    peer_fitted = trace(
        gpu, lambda: peer_kneighbors(queries, train, shape.k, batch_rows=rows, train_sq=train_sq), roofline
    )
    # Tensor-core ranking (knn_gpu/_engine/split_ranking.py): the same fitted model, built under the switch.
    split_model = knn_gpu.KNN(num_neighbors=shape.k)
    with knn_gpu.config_context(ranking="bf16x3"):
        trace(gpu, lambda: split_model.fit(train, targets), roofline)
    split = _fastest(lambda: trace(gpu, lambda: split_model.kneighbors(queries), roofline))
    floor = floor_seconds(shape.num_queries, shape.num_train, shape.dim, roofline)
    harness, plain = costs
    result = {"shape": asdict(shape), "label": shape.label, "floor_s": floor, "peer_batch_rows": rows}
    for name, traced in (
        ("functional", functional),
        ("fitted", fitted),
        ("fitted_split", split),
        ("peer", peer),
        ("peer_fitted", peer_fitted),
    ):
        result[name] = {**traced.summary(), "host_s": host_seconds(traced, harness, plain)}
        result[name]["top_ops"] = traced.by_op()
    result["ratio_functional"] = functional.seconds / peer.seconds
    result["ratio_fitted"] = fitted.seconds / peer_fitted.seconds
    result["ratio_split"] = split.seconds / peer_fitted.seconds
    return result


def _fastest(run: Callable[[], Trace], repeats: int = 5) -> Trace:
    """The trace with the least host time of ``repeats`` runs (host time is noisy on a shared machine)."""
    return min((run() for _ in range(repeats)), key=lambda traced: traced.wall_s - traced.dispatch_s)


def validate(shape: Shape, roofline: Roofline = H200) -> dict:
    """Trace ``shape`` on meta and on real random data (fake device on the CPU): the ops must be identical."""
    traces = {}
    for storage in ("cpu", "meta"):
        with device_context(roofline, storage=storage) as gpu:
            generator = torch.Generator().manual_seed(0)
            train = torch.randn((shape.num_train, shape.dim), generator=generator).to("cuda")
            queries = torch.randn((shape.num_queries, shape.dim), generator=generator).to("cuda")
            traces[storage] = trace(
                gpu, lambda queries=queries, train=train: knn_gpu.kneighbors(queries, train, shape.k), roofline
            )
    real, meta = traces["cpu"], traces["meta"]
    # Host data put on the device is an H2D copy on meta, the fake device's clone of a host tensor on "cpu".
    # Device data read back (the k-search's count) is a D2H copy on meta; on "cpu" the fake device's host
    # copy is made out of sight of the recorder (tests/fake_cuda.py's _host_copy), so it is left out here.
    real_ops = [("<to device>" if op.op == "clone" and op.from_host else op.op, op.signature) for op in real.ops]
    meta_ops = [("<to device>" if op.kind == "h2d" else op.op, op.signature) for op in meta.ops if op.kind != "d2h"]
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(real_ops, meta_ops)) if a != b), None if len(real_ops) == len(meta_ops) else 0
    )
    return {
        "shape": asdict(shape),
        "label": shape.label,
        "real_kernels": real.kernels,
        "meta_kernels": meta.kernels,
        "real_modeled_s": real.seconds,
        "meta_modeled_s": meta.seconds,
        "identical": real_ops == meta_ops,
        "host_copies": meta.copies,
        "first_difference": None
        if first_difference is None
        else {
            "real": real_ops[first_difference : first_difference + 1],
            "meta": meta_ops[first_difference : first_difference + 1],
        },
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def markdown_table(results: list[dict]) -> str:
    """The results as a Markdown table, with the worst ratio and the geometric means below."""
    lines = [
        "| shape | kernels (functional / fitted / peer) | GB moved (knn_gpu / peer) | modeled ms: functional | fitted | peer | peer fitted | GEMM floor | functional / peer | fitted / peer fitted | syncs | torch calls (functional / fitted / peer) | host ms (functional / fitted / peer) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f, d, p, pf = r["functional"], r["fitted"], r["peer"], r["peer_fitted"]
        lines.append(
            f"| {r['label']} | {f['kernels']} / {d['kernels']} / {p['kernels']} "
            f"| {f['bytes'] / 1e9:.3g} / {p['bytes'] / 1e9:.3g} "
            f"| {_ms(f['modeled_s'])} | {_ms(d['modeled_s'])} | {_ms(p['modeled_s'])} | {_ms(pf['modeled_s'])} "
            f"| {_ms(r['floor_s'])} | {r['ratio_functional']:.2f} | {r['ratio_fitted']:.2f} "
            f"| {f['syncs']} / {d['syncs']} | {f['torch_calls']} / {d['torch_calls']} / {pf['torch_calls']} "
            f"| {_ms(f['host_s'])} / {_ms(d['host_s'])} / {_ms(p['host_s'])} |"
        )
    lines.append("")
    lines.append(
        'Tensor-core ranking (`knn_gpu.config_context(ranking="bf16x3")`: bfloat16 pieces, certified), fitted:'
    )
    lines.append("")
    lines.append(
        "| shape | kernels | modeled ms | fitted (float32) ms | peer fitted ms | split / peer fitted | peer fitted / split |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        sp, d, pf = r["fitted_split"], r["fitted"], r["peer_fitted"]
        lines.append(
            f"| {r['label']} | {sp['kernels']} | {_ms(sp['modeled_s'])} | {_ms(d['modeled_s'])} "
            f"| {_ms(pf['modeled_s'])} | {r['ratio_split']:.2f} | {1 / r['ratio_split']:.2f} |"
        )
    summary = ratio_summary(results)
    lines.append("")
    lines.append(
        f"Worst ratio: functional {summary['worst_functional']:.2f}, fitted {summary['worst_fitted']:.2f}; "
        f"geometric mean: functional {summary['geomean_functional']:.2f}, fitted {summary['geomean_fitted']:.2f} "
        "(knn_gpu / peer, < 1 is faster)."
    )
    return "\n".join(lines)


def ratio_summary(results: list[dict]) -> dict:
    functional = [r["ratio_functional"] for r in results]
    fitted = [r["ratio_fitted"] for r in results]
    split = [r["ratio_split"] for r in results]
    return {
        "worst_functional": max(functional),
        "worst_fitted": max(fitted),
        "geomean_functional": math.exp(sum(map(math.log, functional)) / len(functional)),
        "geomean_fitted": math.exp(sum(map(math.log, fitted)) / len(fitted)),
        "worst_split": max(split),
        "geomean_split": math.exp(sum(map(math.log, split)) / len(split)),
    }


#: Names a measured record may give its shape and its timings (seconds) under.
_SHAPE_KEYS = {
    "num_queries": ("num_queries", "n_query", "n_queries", "queries"),
    "num_train": ("num_train", "n_train", "train"),
    "dim": ("dim", "d", "n_features", "features"),
    "k": ("k", "num_neighbors"),
}
_TIME_KEYS = {
    "functional": ("functional_s", "knn_gpu_functional_s", "kneighbors_s"),
    "fitted": ("fitted_s", "knn_gpu_fitted_s", "knn_gpu_s", "KNN.kneighbors_s"),
    "fitted_split": ("fitted_split_s", "bf16x3_s"),
    "peer": ("peer_s", "torch_peer_s"),
    "floor": ("floor_s", "gemm_floor_s", "gemm_s"),
}


def _bench_gpu_time(record: dict) -> dict[str, float]:
    """A ``benchmarks/bench_gpu.py`` record (``method``, ``backend``, ``seconds_min``) as ``{part: seconds}``.

    The model traces torch on CUDA, so only torch records count; out-of-core
    records and failed methods are left out.
    """
    method, seconds = record.get("method"), record.get("seconds_min")
    if not isinstance(method, str) or not isinstance(seconds, (int, float)) or record.get("error"):
        return {}
    if record.get("out_of_core") or not str(record.get("backend", "")).startswith("torch"):
        return {}
    if method in ("peer", "floor"):
        return {method: float(seconds)}
    if method.startswith("knn_gpu fitted bf16x3"):
        return {"fitted_split": float(seconds)}
    if method.startswith("knn_gpu fitted"):
        return {"fitted": float(seconds)}
    if method.startswith("knn_gpu"):
        return {"functional": float(seconds)}
    return {}


def load_measured(path: Path) -> dict[tuple[int, int, int, int], dict[str, float]]:
    """Seconds measured on a real GPU, by ``(num_queries, num_train, dim, k)``.

    Reads a JSON list of records (or an object holding one under
    ``"records"`` or ``"results"``), each naming its shape (``num_queries``
    or ``n_query``, ``num_train`` or ``n_train``, ``dim``, ``k``; or all of
    them in a ``"shape"`` object) and any of the timings ``functional_s``,
    ``fitted_s``, ``peer_s``, ``floor_s`` (or the ``knn_gpu_``-prefixed
    names). Records of ``benchmarks/bench_gpu.py`` (``method`` and
    ``seconds_min``, torch only) are read too. Records without a known shape
    or timing are skipped.
    """
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("records", data.get("results", []))
    measured: dict[tuple[int, int, int, int], dict[str, float]] = {}
    for record in data if isinstance(data, list) else []:
        if not isinstance(record, dict):
            continue
        fields = {**record, **(record.get("shape") if isinstance(record.get("shape"), dict) else {})}
        shape = []
        for names in _SHAPE_KEYS.values():
            value = next((fields[name] for name in names if isinstance(fields.get(name), (int, float))), None)
            shape.append(None if value is None else int(value))
        times = {
            part: float(fields[name])
            for part, names in _TIME_KEYS.items()
            for name in names
            if isinstance(fields.get(name), (int, float))
        }
        times.update(_bench_gpu_time(fields))
        if None not in shape and times:
            measured.setdefault(tuple(shape), {}).update(times)
    return measured


def calibration_table(results: list[dict], measured: dict[tuple[int, int, int, int], dict[str, float]]) -> str:
    """Model beside measurement, per shape and part: measured / modeled (> 1: the GPU is slower than modeled)."""
    lines = ["| shape | part | modeled ms | measured ms | measured / modeled |", "|---|---|---|---|---|"]
    model_keys = {"functional": "functional", "fitted": "fitted", "fitted_split": "fitted_split", "peer": "peer_fitted"}
    for result in results:
        shape = result["shape"]
        times = measured.get((shape["num_queries"], shape["num_train"], shape["dim"], shape["k"]), {})
        for part, seconds in sorted(times.items()):
            modeled = result["floor_s"] if part == "floor" else result[model_keys[part]]["modeled_s"]
            lines.append(f"| {result['label']} | {part} | {_ms(modeled)} | {_ms(seconds)} | {seconds / modeled:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="issue")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("gpu_cost_model.json"))
    parser.add_argument(
        "--measured",
        type=Path,
        help="JSON of the same shapes timed on a real GPU (see load_measured): printed beside the model",
    )
    args = parser.parse_args(argv)
    plain = plain_call_seconds()
    validation = validate(VALIDATION_SHAPE[args.shapes])
    print(
        f"validation: {validation['label']}: meta trace {'==' if validation['identical'] else '!='} real-data trace "
        f"({validation['meta_kernels']} / {validation['real_kernels']} kernels, {validation['host_copies']} copies of host data, "
        f"{_ms(validation['meta_modeled_s'])} / {_ms(validation['real_modeled_s'])} ms modeled; tolerance: identical ops)"
    )
    results = []
    with device_context() as gpu:
        costs = (harness_call_seconds(), plain)
        for shape in SHAPES[args.shapes]:
            results.append(model_shape(gpu, shape, costs))
            print(f"  traced {shape.label}", file=sys.stderr)
    table = markdown_table(results)
    print(f"\n{H200.name}, float32, torch on the fake CUDA device (storage='meta')\n")
    print(table)
    calibration = None
    if args.measured is not None:
        calibration = calibration_table(results, load_measured(args.measured))
        print(f"\nModel beside the measurement ({args.measured}):\n")
        print(calibration)
    report = {
        "roofline": asdict(H200),
        "calibration": calibration,
        "torch": torch.__version__,
        "validation": validation,
        "host_cost_per_torch_call_s": {"harness": costs[0], "plain": costs[1]},
        "results": results,
        "summary": ratio_summary(results),
        "table": table,
    }
    args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
