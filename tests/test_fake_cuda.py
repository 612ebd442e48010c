"""torch-on-CUDA semantics without a GPU: the fake device of ``fake_cuda.py``, then knn_gpu on it.

This first part proves that the harness can fail: device mixing, forgotten
``device=`` and hidden host syncs raise as on a real GPU, and correct
device-aware code passes.
"""

from __future__ import annotations

import threading

import array_api_compat
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import array_api_extra as xpx  # noqa: E402
from fake_cuda import FakeCudaTensor, HiddenHostSync, HostConversionError, allow_sync, fake_cuda  # noqa: E402

CUDA0 = torch.device("cuda", 0)
CUDA1 = torch.device("cuda", 1)


@pytest.fixture
def strict_gpu():
    """Two fake CUDA devices; every host sync outside allow_sync() raises."""
    with fake_cuda(num_devices=2) as state:
        yield state


def on_device(array, device, shape, dtype) -> np.ndarray:
    """Assert namespace, device, shape and dtype of a result; return a host copy."""
    assert array_api_compat.is_torch_array(array), type(array)
    assert array_api_compat.device(array) == device, (array_api_compat.device(array), device)
    assert array.device.type == "cuda"
    assert tuple(array.shape) == shape, (tuple(array.shape), shape)
    assert array.dtype == dtype, (array.dtype, dtype)
    with allow_sync():
        host = array.cpu()
    return (host.to(torch.float32) if host.dtype == torch.bfloat16 else host).numpy()  # NumPy has no bfloat16


def to_device(host: np.ndarray, device=CUDA0):
    return torch.asarray(host, device=device)


# =====================================================================================
# 1. The harness can fail
# =====================================================================================
def test_a_marked_tensor_reports_its_fake_device(strict_gpu):
    x = torch.zeros(3, device="cuda")
    assert x.device == CUDA0 and x.device.type == "cuda" and x.is_cuda
    assert array_api_compat.device(x) == CUDA0
    assert torch.cuda.is_available() and torch.cuda.device_count() == 2


CREATORS = {
    "tensor": lambda d: torch.tensor([1.0, 2.0], device=d),
    "asarray": lambda d: torch.asarray(np.ones(2), device=d),
    "as_tensor": lambda d: torch.as_tensor(np.ones(2), device=d),
    "zeros": lambda d: torch.zeros(2, device=d),
    "ones": lambda d: torch.ones(2, device=d),
    "empty": lambda d: torch.empty(2, device=d),
    "full": lambda d: torch.full((2,), 3.0, device=d),
    "arange": lambda d: torch.arange(2, device=d),
    "linspace": lambda d: torch.linspace(0, 1, 2, device=d),
    "eye": lambda d: torch.eye(2, device=d),
    "zeros_like": lambda d: torch.zeros_like(torch.ones(2), device=d),
    "empty_strided": lambda d: torch.empty_strided((2,), (1,), device=d),
    "rand": lambda d: torch.rand(2, device=d),
    "randn": lambda d: torch.randn(2, device=d),
    "randint": lambda d: torch.randint(0, 5, (2,), device=d),
    "Tensor.to": lambda d: torch.ones(2).to(d),
    "Tensor.to(dtype)": lambda d: torch.ones(2).to(d, torch.float64),
    "Tensor.cuda": lambda d: torch.ones(2).cuda(d),
    "Tensor.to(other)": lambda d: torch.ones(2).to(torch.zeros(1, device=d)),
    "new_zeros": lambda d: torch.zeros(1, device=d).new_zeros(2),
}


@pytest.mark.parametrize("device", ["cuda:1", torch.device("cuda", 1), 1], ids=["str", "torch.device", "int"])
@pytest.mark.parametrize("creator", list(CREATORS), ids=list(CREATORS))
def test_creation_functions_and_conversions_are_marked(strict_gpu, creator, device):
    assert CREATORS[creator](device).device == CUDA1


def test_device_cuda_without_index_is_the_current_device(strict_gpu):
    assert torch.ones(1, device="cuda").device == CUDA0
    with torch.cuda.device(1):
        assert torch.ones(1, device="cuda").device == CUDA1
        assert torch.ones(1).cuda().device == CUDA1
    assert torch.ones(1, device=torch.device("cuda")).device == CUDA0
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.ones(1, device="cuda:2")


OPERATIONS = {
    "view": lambda x: x.reshape(-1)[2:5],
    "transpose": lambda x: x.T,
    "getitem int": lambda x: x[1],
    "getitem index tensor": lambda x: x[torch.tensor([2, 0], device=x.device)],
    "unbind": lambda x: torch.unbind(x)[0],
    "sum": lambda x: torch.sum(x, dim=1),
    "min": lambda x: x.min(),
    "matmul": lambda x: x @ x.T,
    "sort": lambda x: torch.sort(x, dim=1).indices,
    "argsort": lambda x: torch.argsort(x, dim=1, stable=True),
    "topk": lambda x: torch.topk(x, 2, dim=1).values,
    "kthvalue": lambda x: torch.kthvalue(x, 2, dim=1).values,
    "take": lambda x: torch.take(x, torch.tensor([0, 4], device=x.device)),
    "take_along_dim": lambda x: torch.take_along_dim(x, torch.argsort(x, dim=1), dim=1),
    "cumsum": lambda x: torch.cumsum(x, dim=1),
    "searchsorted": lambda x: torch.searchsorted(x.reshape(-1), x),
    "where": lambda x: torch.where(x > 2, x, 0.0),
    "cat": lambda x: torch.cat([x, x]),
    "astype": lambda x: x.to(torch.float64),
    "iteration": lambda x: next(iter(x)),
}


@pytest.mark.parametrize("operation", list(OPERATIONS), ids=list(OPERATIONS))
def test_results_of_operations_keep_the_device(strict_gpu, operation):
    x = torch.arange(12.0, device="cuda:1").reshape(3, 4)
    result = OPERATIONS[operation](x)
    assert isinstance(result, FakeCudaTensor) and result.device == CUDA1


def test_mixing_with_a_cpu_tensor_raises(strict_gpu):
    x = torch.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device.*cuda:0 and cpu"):
        x + torch.ones(3)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        torch.cat([x, torch.ones(3)])
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        x[torch.tensor([0, 1])]  # stricter than torch, which copies CPU index tensors over
    # CPU scalars and Python scalars mix with device tensors, as on CUDA.
    assert (x + torch.tensor(2.0)).device == CUDA0
    assert (x * 2).device == CUDA0


def test_mixing_two_fake_devices_raises(strict_gpu):
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device.*cuda:0 and cuda:1"):
        torch.ones(3, device="cuda:0") + torch.ones(3, device="cuda:1")


def test_a_forgotten_device_argument_is_caught(strict_gpu):
    x = torch.arange(3, device="cuda")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        _ = torch.arange(3) < x
    assert (torch.arange(3, device=array_api_compat.device(x)) < x).device == CUDA0


def test_the_known_partition_hazard_is_caught(strict_gpu):
    """array_api_extra.partition's torch branch builds arange() without device= (fine on CPU torch).

    If this stops raising, array_api_extra has fixed it: update this test.
    """
    values = torch.asarray(np.random.default_rng(0).standard_normal((4, 30)))
    assert xpx.partition(values, 3).device.type == "cpu"  # invisible on a CPU run
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        xpx.partition(values.to("cuda"), 3)


def _set_masked(x):
    x[x > 0] = 0.0


HOST_SYNCS = {
    "bool": (lambda x: bool(x.any()), "bool()"),
    "float": (lambda x: float(x.sum()), "float()"),
    "int": (lambda x: int(x[0]), "int()"),
    "index": (lambda x: [10, 11, 12][x[0].to(torch.int64)], "__index__"),
    "item": (lambda x: x.max().item(), ".item()"),
    "tolist": (lambda x: x.tolist(), ".tolist()"),
    "cpu": (lambda x: x.cpu(), "Tensor.cpu"),
    "to cpu": (lambda x: x.to("cpu"), "Tensor.to"),
    "asarray to cpu": (lambda x: torch.asarray(x, device="cpu"), "asarray"),
    "boolean mask": (lambda x: x[x > 0], "boolean-mask indexing"),
    "boolean mask assignment": (_set_masked, "boolean-mask indexing"),
    "nonzero": (lambda x: torch.nonzero(x), "nonzero"),
    "where(condition)": (lambda x: torch.where(x > 0), "torch.where"),
    "masked_select": (lambda x: torch.masked_select(x, x > 0), "masked_select"),
    "unique": (lambda x: torch.unique(x), "unique"),
    "Tensor.unique": (lambda x: x.unique(), "unique"),
    "f-string": (lambda x: f"{x[0]:.2f}", "format"),
}


@pytest.mark.parametrize("sync", list(HOST_SYNCS), ids=list(HOST_SYNCS))
def test_host_syncs_raise_and_name_the_operation(strict_gpu, sync):
    operation, name = HOST_SYNCS[sync]
    x = torch.asarray([0.0, 1.0, 2.0], device="cuda")
    with pytest.raises(HiddenHostSync, match="hidden host sync") as error:
        operation(x)
    assert name in str(error.value)


@pytest.mark.parametrize("convert", [lambda x: x.numpy(), np.asarray], ids=["numpy", "np.asarray"])
def test_host_libraries_cannot_read_device_memory(strict_gpu, convert):
    x = torch.ones(2, device="cuda")
    with pytest.raises(HostConversionError, match="hidden host sync"):
        convert(x)
    with allow_sync(), pytest.raises(TypeError, match="cpu"):  # real torch refuses these for CUDA tensors
        convert(x)


def test_allow_sync_permits_fetching_results(strict_gpu):
    x = torch.arange(4.0, device="cuda") * 2
    with allow_sync():
        host = x.cpu().numpy()
        assert bool(x.any())
    np.testing.assert_array_equal(host, [0.0, 2.0, 4.0, 6.0])
    assert [operation for operation, _ in strict_gpu.syncs] == [
        "Tensor.cpu from cuda:0 to cpu",
        "bool() on a tensor on cuda:0",
    ]
    with pytest.raises(HiddenHostSync):
        x.cpu()


def _deliberate_sync(x):
    return bool(x.any())


def _calls_a_syncing_helper(x):
    return _hidden_sync(x)


def _hidden_sync(x):
    return float(x.sum())


def test_only_the_named_function_may_sync():
    sites = (f"{__name__}._deliberate_sync", f"{__name__}._calls_a_syncing_helper")
    with fake_cuda(allowed_sync_sites=sites) as gpu:
        x = torch.ones(2, device="cuda")
        assert _deliberate_sync(x)
        assert gpu.syncs == [("bool() on a tensor on cuda:0", f"{__name__}._deliberate_sync")]
        with pytest.raises(HiddenHostSync, match="_hidden_sync"):
            _calls_a_syncing_helper(x)  # the sync happens in a function that is not named


def test_integer_index_tensors_on_the_same_device_are_fine(strict_gpu):
    x = torch.arange(10.0, device="cuda").reshape(5, 2)
    rows = torch.tensor([4, 0], device="cuda")
    assert x[rows].device == CUDA0
    x[rows] = 0.0
    with allow_sync():
        assert x.cpu()[:, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 0.0]


def test_a_correct_device_aware_computation_passes(strict_gpu):
    """Array API code that passes device= everywhere and avoids masks runs, and stays on the device."""
    rng = np.random.default_rng(0)
    host_queries, host_train = rng.standard_normal((5, 3)), rng.standard_normal((40, 3))
    queries, train = to_device(host_queries), to_device(host_train)
    xp = array_api_compat.array_namespace(queries, train)
    device = array_api_compat.device(train)
    squared = xp.sum(train * train, axis=1)[None, :] - 2 * (queries @ xp.matrix_transpose(train))
    order = xp.argsort(squared, axis=1, stable=True)[:, :4]
    nearest = xp.take_along_axis(squared, order, axis=1)
    ranks = xp.cumulative_sum(xp.ones_like(order), axis=1) - 1
    positions = xp.searchsorted(xp.arange(4, dtype=xp.int64, device=device), ranks[0, :])
    clipped = xp.where(nearest > 0, nearest, xp.zeros_like(nearest))
    for result in (order, nearest, ranks, positions, clipped):
        assert array_api_compat.device(result) == CUDA0
    expected = np.argsort(((host_queries[:, None, :] - host_train[None]) ** 2).sum(axis=2), axis=1)[:, :4]
    np.testing.assert_array_equal(on_device(order, CUDA0, (5, 4), torch.int64), expected)


def test_conversions_copy_as_a_transfer_does(strict_gpu):
    host = torch.zeros(3)
    on_gpu = host.to("cuda:1")
    host += 1  # the device copy does not alias the host tensor
    with allow_sync():
        assert on_gpu.cpu().tolist() == [0.0, 0.0, 0.0]
    assert on_gpu.to("cuda:1") is on_gpu and on_gpu.cuda(1) is on_gpu
    assert on_gpu.to("cuda:0").device == CUDA0


def test_torch_cuda_is_faked_recorded_and_restored():
    available_before = torch.cuda.is_available()
    with fake_cuda(num_devices=2, free_bytes=[100, 200], total_bytes=1000) as gpu:
        assert torch.cuda.is_available() and torch.cuda.device_count() == 2
        assert torch.cuda.current_device() == 0
        with torch.cuda.device(1):
            assert torch.cuda.current_device() == 1
            assert torch.cuda.mem_get_info() == (200, 1000)
        with torch.cuda.device(torch.ones(1, device="cuda:1").device):
            assert torch.cuda.current_device() == 1
        assert torch.cuda.current_device() == 0
        assert torch.cuda.mem_get_info() == (100, 1000)
        assert torch.cuda.mem_get_info("cuda:1") == (200, 1000)
        torch.cuda.synchronize()
        assert "Fake" in torch.cuda.get_device_name(1)
        assert torch.cuda.get_device_properties(0).total_memory == 1000
        assert [(query.current_device, query.device) for query in gpu.memory_queries] == [(1, 1), (0, 0), (0, 1)]
        assert "synchronize" in [call.name for call in gpu.calls]
    assert torch.cuda.is_available() == available_before
    assert torch.ones(1).device.type == "cpu"


def test_marked_tensors_are_checked_in_worker_threads(strict_gpu):
    """Torch function modes are thread-local; the tensor subclass carries the checks into threads."""
    x = torch.ones(3, device="cuda")
    errors = []

    def work():
        for operation in (lambda: x + torch.ones(3), lambda: bool(x.any())):
            try:
                operation()
            except RuntimeError as error:
                errors.append(type(error).__name__)
        errors.append(str((x * 2).device))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == ["RuntimeError", "HiddenHostSync", "cuda:0"]
