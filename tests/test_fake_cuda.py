"""torch-on-CUDA semantics without a GPU: the fake device of ``fake_cuda.py``, then knn_gpu on it.

The first section proves that the harness can fail: device mixing, forgotten
``device=`` and hidden host syncs raise as on a real GPU, and correct
device-aware code passes. The second section runs knn_gpu's public API on
fake ``cuda:0`` (and ``cuda:1``) and checks every result's namespace, device,
dtype and shape, its values against the exact float64 oracle of ``oracle.py``
and against the NumPy backend.
"""

from __future__ import annotations

import threading

import array_api_compat
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import array_api_extra as xpx  # noqa: E402
from fake_cuda import ENGINE_SYNC_SITES, FakeCudaTensor, HiddenHostSync, HostConversionError, allow_sync, fake_cuda  # noqa: E402
from oracle import oracle_distances  # noqa: E402

import knn_gpu  # noqa: E402
from knn_gpu import KNN, KNNClassifier  # noqa: E402
from knn_gpu._engine.metrics import MINKOWSKI_METRICS as DIRECT_METRICS  # noqa: E402
from knn_gpu._engine.metrics import PRODUCT_METRICS as METRICS  # noqa: E402

CUDA0 = torch.device("cuda", 0)
CUDA1 = torch.device("cuda", 1)

#: Host syncs the engine makes on purpose, named by the function that makes them.
#: A sync anywhere else fails the test. Shorten this when the engine stops syncing there.
DELIBERATE_SYNC_SITES = (
    # The finiteness check of each input, the searches' counts and the index build's one number
    # (fake_cuda.ENGINE_SYNC_SITES).
    *ENGINE_SYNC_SITES,
    # metric="precomputed": one bool per distance matrix (no negative distances), before any work.
    "knn_gpu._lib.validation.check_nonnegative_distances",
    # The distinct labels of device labels: the number of classes is data-dependent.
    "knn_gpu._engine.labels.encode_class_labels",
)

#: The engine's contract for half-precision input (knn_gpu._lib.validation.floating_dtype and
#: distance_dtype_for): stored as given, ranked in float32, re-scored in float64 and answered in
#: float32, as FAISS answers (half-precision distances would overflow above 65504).
HALF_RESULT_DTYPES = {"float16": torch.float32, "bfloat16": torch.float32}

#: Metrics that are exact on integer data (so ties between *different* vectors are exact too).
EXACT_ON_INTEGERS = (
    "euclidean",
    "l2",
    "minkowski",  # p = 2 by default: euclidean
    "sqeuclidean",
    "inner_product",
    "manhattan",
    "cityblock",
    "l1",
    "chebyshev",
    "infinity",
)

#: Every metric of a search on vectors: the matrix-product ones and the direct ones
#: ("precomputed" takes distance matrices: its own test below).
SEARCH_METRICS = METRICS + tuple(metric for metric in DIRECT_METRICS if metric != "precomputed")

#: The oracle of tests/oracle.py knows these; others are computed with scikit-learn in float64.
ORACLE_METRICS = SEARCH_METRICS

#: Similarities: the oracle's "distance" is the negated similarity (ascending = most similar first),
#: while knn_gpu returns the similarity itself, largest first.
SIMILARITIES = ("inner_product",)

N_TRAIN, N_QUERIES, N_FEATURES = 500, 60, 8
K_VALUES = (1, 10, 100, N_TRAIN)


@pytest.fixture
def gpu():
    """Two fake CUDA devices; only the engine's deliberate syncs are permitted."""
    with fake_cuda(num_devices=2, allowed_sync_sites=DELIBERATE_SYNC_SITES) as state:
        yield state


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
    assert "test_fake_cuda.py:" in str(error.value)  # the line that synced


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
    flags = torch.zeros(5, dtype=torch.bool, device="cuda")
    flags[rows] = x[rows, 0] == 0  # a boolean *value* at integer positions: no mask, no sync
    assert flags.device == CUDA0


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
        assert torch.accelerator.current_accelerator() == torch.device("cuda")
        with torch.accelerator.device_index(1):
            assert torch.accelerator.current_device_index() == 1
            assert torch.accelerator.get_memory_info() == (200, 1000)
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


# =====================================================================================
# 2. knn_gpu's public API on the fake device
# =====================================================================================
def oracle_distance_matrix(queries: np.ndarray, train: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 distances: tests/oracle.py where it knows the metric, scikit-learn otherwise."""
    queries, train = np.asarray(queries, dtype=np.float64), np.asarray(train, dtype=np.float64)
    if metric in ORACLE_METRICS:
        return oracle_distances(queries, train, metric)
    from sklearn.metrics import pairwise_distances

    try:
        return pairwise_distances(queries, train, metric=metric)
    except ValueError as error:
        pytest.fail(f"no float64 oracle for metric {metric!r}: add one to oracle_distance_matrix ({error})")


def comparable_positions(distances: np.ndarray, train: np.ndarray, k: int, tolerance: float, exact_ties: bool):
    """Mask of neighbour positions (n_queries, k) whose training index every correct search agrees on.

    The full rows of oracle distances are sorted stably (ties to the lower
    index). A position is comparable unless its distance lies within
    ``tolerance`` of a *different* training vector's: exact duplicates tie
    exactly on every backend (and the lower index must come first), while
    different vectors at nearly equal distances may swap with rounding. With
    ``exact_ties`` (integer data and a metric computed exactly) every position
    is comparable.
    """
    rows = distances.shape[0]
    if exact_ties:
        return np.ones((rows, k), dtype=bool)
    order = np.argsort(distances, axis=1, kind="stable")
    ordered = np.take_along_axis(distances, order, axis=1)
    vector_ids = np.unique(train, axis=0, return_inverse=True)[1].reshape(-1)[order]
    close = np.diff(ordered, axis=1) <= tolerance * np.maximum(1.0, np.abs(ordered[:, 1:]))
    group = np.concatenate([np.zeros((rows, 1), dtype=np.int64), np.cumsum(~close, axis=1)], axis=1)
    mixed_pair = close & (np.diff(vector_ids, axis=1) != 0)
    mixed_group = np.zeros(group.shape, dtype=bool)
    row_of = np.broadcast_to(np.arange(rows)[:, None], mixed_pair.shape)
    mixed_group[row_of[mixed_pair], group[:, 1:][mixed_pair]] = True
    return ~np.take_along_axis(mixed_group, group[:, :k], axis=1)


def assert_neighbours(
    distances,
    indices,
    queries,
    train,
    k,
    metric,
    *,
    tolerance,
    value_tolerance=None,
    exact_ties=False,
    min_coverage=0.9,
):
    """Host results of a search against the oracle and against the NumPy backend.

    ``queries`` and ``train`` are the host values the search saw (as NumPy
    arrays). Distances closer than ``tolerance`` (relative) may swap; returned
    distances must match within ``value_tolerance`` (default: ``tolerance``).
    """
    value_tolerance = tolerance if value_tolerance is None else value_tolerance
    numpy_distances, numpy_indices = knn_gpu.kneighbors(queries, train, k, metric=metric)
    if metric in SIMILARITIES:  # compare in the oracle's convention: negated, ascending
        distances, numpy_distances = -distances, -numpy_distances
    full = oracle_distance_matrix(queries, train, metric)
    expected_indices = np.argsort(full, axis=1, kind="stable")[:, :k]
    expected_distances = np.take_along_axis(full, expected_indices, axis=1)
    comparable = comparable_positions(full, train, k, tolerance, exact_ties)
    assert comparable.mean() >= min_coverage, f"only {comparable.mean():.0%} of positions are comparable"
    wrong_rows = np.flatnonzero(((indices != expected_indices) & comparable).any(axis=1))
    assert wrong_rows.size == 0, (
        f"{wrong_rows.size} rows differ from the oracle, first {wrong_rows[0]}: "
        f"{indices[wrong_rows[0], :12]} != {expected_indices[wrong_rows[0], :12]}"
    )
    np.testing.assert_allclose(distances, expected_distances, rtol=value_tolerance, atol=value_tolerance)
    np.testing.assert_array_equal(indices[comparable], numpy_indices[comparable])
    np.testing.assert_allclose(distances, numpy_distances, rtol=value_tolerance, atol=value_tolerance)


def tolerance_of(dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-6


def random_data(seed: int, dtype=np.float32, num_train: int = N_TRAIN, num_queries: int = N_QUERIES):
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((num_train, N_FEATURES)).astype(dtype)
    queries = rng.standard_normal((num_queries, N_FEATURES)).astype(dtype)
    return queries, train


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("k", K_VALUES, ids=[f"k={k}" for k in K_VALUES])
@pytest.mark.parametrize("metric", SEARCH_METRICS)
def test_kneighbors_on_fake_cuda(gpu, metric, k, dtype):
    queries, train = random_data(1, np.float32 if dtype == torch.float32 else np.float64)
    distances, indices = knn_gpu.kneighbors(to_device(queries), to_device(train), k, metric=metric)
    distances = on_device(distances, CUDA0, (N_QUERIES, k), dtype)
    indices = on_device(indices, CUDA0, (N_QUERIES, k), torch.int64)
    assert_neighbours(distances, indices, queries, train, k, metric, tolerance=tolerance_of(dtype))


@pytest.mark.parametrize("k", K_VALUES, ids=[f"k={k}" for k in K_VALUES])
@pytest.mark.parametrize("metric", SEARCH_METRICS)
def test_integer_ties_list_the_lower_index_first(gpu, metric, k):
    """Integer features, every training row at least twice: equal distances must list the lower index first."""
    rng = np.random.default_rng(2)
    base = rng.integers(-3, 4, size=(200, 4))
    train = np.concatenate([base, base, base[:100]])
    queries = np.concatenate([rng.integers(-3, 4, size=(40, 4)), base[:10]])
    distances, indices = knn_gpu.kneighbors(to_device(queries), to_device(train), k, metric=metric)
    default_float = torch.get_default_dtype()  # README: integers -> the namespace's default float
    distances = on_device(distances, CUDA0, (50, k), default_float)
    indices = on_device(indices, CUDA0, (50, k), torch.int64)
    exact = metric in EXACT_ON_INTEGERS
    assert_neighbours(distances, indices, queries, train, k, metric, tolerance=1e-6, exact_ties=exact, min_coverage=0.5)


@pytest.mark.parametrize("shape", ["outlier cluster", "margin too small"])
def test_uncertified_queries_are_answered_on_the_device(gpu, shape, monkeypatch):
    """The certificate's fallbacks on torch-CUDA: the widened search and exact distances, on the query's
    device, with host reads only through read_counts (one per stage); answers equal the NumPy search's."""
    from knn_gpu._engine import search

    rng = np.random.default_rng(8)
    if shape == "outlier cluster":  # the float32 keys cannot separate the cluster: exact distances
        train = 1e-3 * rng.standard_normal((600, 8))
        train[[5, 300]] = 1e4
        queries = 1e-3 * rng.standard_normal((20, 8))
    else:  # two candidates beyond k: the widened search settles the few uncertain queries
        monkeypatch.setattr(search, "EXTRA_CANDIDATES", 1)
        monkeypatch.setattr(search, "FULL_MARGIN_UP_TO", 0)
        train, queries = rng.standard_normal((3000, 256)), rng.standard_normal((200, 256))
    train, queries = train.astype(np.float32), queries.astype(np.float32)
    expected_distances, expected_indices = knn_gpu.kneighbors(queries, train, 10)
    before = len(gpu.syncs)
    distances, indices = knn_gpu.kneighbors(to_device(queries), to_device(train), 10)
    sites = [site for _, site in gpu.syncs[before:]]
    reads = sites.count("knn_gpu._lib.devices.read_counts")
    assert reads >= 2 and set(sites) <= {
        "knn_gpu._lib.devices.read_counts",
        "knn_gpu._lib.validation.check_finite",
        "knn_gpu._lib.devices.read_number",
    }
    assert sites.count("knn_gpu._lib.devices.read_number") == 1  # the build: no scale needed
    np.testing.assert_array_equal(on_device(indices, CUDA0, (queries.shape[0], 10), torch.int64), expected_indices)
    found = on_device(distances, CUDA0, (queries.shape[0], 10), torch.float32)
    np.testing.assert_allclose(found, expected_distances, rtol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "magnitude", "metric"),
    [
        (np.float32, 1e20, "euclidean"),
        (np.float32, 1e-30, "sqeuclidean"),
        (np.float32, 1e-25, "inner_product"),
        (np.float64, 1e100, "euclidean"),  # float64 on a GPU is ranked in float32: far beyond its range
        (np.float64, 1e-100, "euclidean"),
    ],
)
def test_rows_beyond_float32s_range_on_the_device(gpu, dtype, magnitude, metric):
    """The scaled ranking (the addmm's factor scaled, alpha kept): NumPy's answers, two reads at build."""
    rng = np.random.default_rng(12)
    train = (magnitude * rng.standard_normal((800, 8))).astype(dtype)
    queries = (magnitude * rng.standard_normal((30, 8))).astype(dtype)
    expected_distances, expected_indices = knn_gpu.kneighbors(queries, train, 5, metric=metric)
    before = len(gpu.syncs)
    distances, indices = knn_gpu.kneighbors(to_device(queries), to_device(train), 5, metric=metric)
    sites = [site for _, site in gpu.syncs[before:]]
    assert sites.count("knn_gpu._lib.devices.read_number") == 2  # the squared norms, then the magnitude
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    np.testing.assert_array_equal(on_device(indices, CUDA0, (30, 5), torch.int64), expected_indices)
    np.testing.assert_allclose(on_device(distances, CUDA0, (30, 5), torch_dtype), expected_distances, rtol=1e-12)
    q64, t64 = queries.astype(np.float64), train.astype(np.float64)
    oracle = oracle_distances(q64, t64, metric)
    np.testing.assert_array_equal(expected_indices, np.argsort(oracle, axis=1, kind="stable")[:, :5])


def test_batched_search_stays_on_the_device(gpu):
    queries, train = random_data(3)
    distances, indices = knn_gpu.kneighbors(to_device(queries), to_device(train), 5, batch_size=7)
    distances = on_device(distances, CUDA0, (N_QUERIES, 5), torch.float32)
    indices = on_device(indices, CUDA0, (N_QUERIES, 5), torch.int64)
    assert_neighbours(distances, indices, queries, train, 5, "euclidean", tolerance=1e-6)


def test_inputs_on_different_devices_are_refused(gpu):
    queries, train = random_data(4)
    with pytest.raises(ValueError, match="same device"):
        knn_gpu.kneighbors(to_device(queries, CUDA1), to_device(train, CUDA0), 3)


def test_the_current_device_does_not_leak_into_the_search(gpu):
    """Data on cuda:0 searched while cuda:1 is current: nothing may be created on "the current device"."""
    queries, train = random_data(5)
    with torch.cuda.device(1):
        distances, indices = knn_gpu.kneighbors(to_device(queries), to_device(train), 10)
    indices = on_device(indices, CUDA0, (N_QUERIES, 10), torch.int64)
    distances = on_device(distances, CUDA0, (N_QUERIES, 10), torch.float32)
    assert_neighbours(distances, indices, queries, train, 10, "euclidean", tolerance=1e-6)


def test_second_gpu_keeps_everything_on_cuda1(gpu):
    queries, train = random_data(6)
    labels = (train[:, 0] > 0).astype(np.int64) + (train[:, 1] > 0.5)
    distances, indices = knn_gpu.kneighbors(to_device(queries, CUDA1), to_device(train, CUDA1), 10)
    distances = on_device(distances, CUDA1, (N_QUERIES, 10), torch.float32)
    indices = on_device(indices, CUDA1, (N_QUERIES, 10), torch.int64)
    assert_neighbours(distances, indices, queries, train, 10, "euclidean", tolerance=1e-6)
    model = KNNClassifier(7).fit(to_device(train, CUDA1), to_device(labels, CUDA1))
    predicted = on_device(model.predict(to_device(queries, CUDA1)), CUDA1, (N_QUERIES,), torch.int64)
    np.testing.assert_array_equal(predicted, KNNClassifier(7).fit(train, labels).predict(queries))
    for query in gpu.memory_queries:  # free memory, where the engine asks, is that of the data's device
        assert query.device == 1, query
    assert torch.cuda.current_device() == 0  # and the current device is restored


def oracle_weights(distances: np.ndarray, weights: str) -> np.ndarray:
    if weights == "uniform":
        return np.ones_like(distances)
    return 1.0 / distances  # random continuous data: no neighbour at distance 0


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_regressor_on_fake_cuda(gpu, weights):
    queries, train = random_data(7, num_train=400, num_queries=50)
    targets = np.random.default_rng(8).standard_normal(400).astype(np.float32)
    model = KNN(7, weights=weights).fit(to_device(train), to_device(targets))
    predicted = on_device(model.predict(to_device(queries)), CUDA0, (50,), torch.float32)
    np.testing.assert_allclose(predicted, KNN(7, weights=weights).fit(train, targets).predict(queries), rtol=1e-5)
    expected_distances, expected_indices = _oracle_kneighbors(queries, train, 7)
    weight = oracle_weights(expected_distances, weights)
    expected = (weight * targets[expected_indices]).sum(axis=1) / weight.sum(axis=1)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)
    _check_model_kneighbors(model, queries, train)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_classifier_on_fake_cuda(gpu, weights):
    queries, train = random_data(9, num_train=400, num_queries=50)
    labels = (train[:, 0] > 0).astype(np.int64) + (train[:, 1] > 0.5)
    model = KNNClassifier(7, weights=weights).fit(to_device(train), to_device(labels))
    np.testing.assert_array_equal(on_device(model.classes_, CUDA0, (3,), torch.int64), [0, 1, 2])
    proba = on_device(model.predict_proba(to_device(queries)), CUDA0, (50, 3), torch.float32)
    predicted = on_device(model.predict(to_device(queries)), CUDA0, (50,), torch.int64)
    reference = KNNClassifier(7, weights=weights).fit(train, labels)
    np.testing.assert_allclose(proba, reference.predict_proba(queries), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predicted, reference.predict(queries))
    expected_distances, expected_indices = _oracle_kneighbors(queries, train, 7)
    weight = oracle_weights(expected_distances, weights)
    votes = np.stack([(weight * (labels[expected_indices] == c)).sum(axis=1) for c in range(3)], axis=1)
    np.testing.assert_allclose(proba, votes / votes.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predicted, np.argmax(votes, axis=1))  # ties to the smallest label
    _check_model_kneighbors(model, queries, train)


def _oracle_kneighbors(queries, train, k):
    full = oracle_distance_matrix(queries, train, "euclidean")
    indices = np.argsort(full, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(full, indices, axis=1), indices


def _check_model_kneighbors(model, queries, train):
    """``kneighbors(X)`` and ``kneighbors()`` of a model fitted on cuda:0."""
    distances, indices = model.kneighbors(to_device(queries))
    distances = on_device(distances, CUDA0, (queries.shape[0], 7), torch.float32)
    indices = on_device(indices, CUDA0, (queries.shape[0], 7), torch.int64)
    assert_neighbours(distances, indices, queries, train, 7, "euclidean", tolerance=1e-6)
    self_distances, self_indices = model.kneighbors()
    self_distances = on_device(self_distances, CUDA0, (train.shape[0], 7), torch.float32)
    self_indices = on_device(self_indices, CUDA0, (train.shape[0], 7), torch.int64)
    # Continuous data has no duplicates: each point is its own nearest, and is dropped.
    expected_distances, expected_indices = _oracle_kneighbors(train, train, 8)
    np.testing.assert_array_equal(expected_indices[:, 0], np.arange(train.shape[0]))
    np.testing.assert_array_equal(self_indices, expected_indices[:, 1:])
    np.testing.assert_allclose(self_distances, expected_distances[:, 1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("metric", SEARCH_METRICS)
@pytest.mark.parametrize("half", list(HALF_RESULT_DTYPES))
def test_half_precision_input(gpu, half, metric):
    half_dtype = getattr(torch, half)
    queries, train = random_data(10)
    # The values the engine sees: the data rounded to the half type (exact in float32 and float64).
    queries = torch.asarray(queries).to(half_dtype).to(torch.float32).numpy()
    train = torch.asarray(train).to(half_dtype).to(torch.float32).numpy()
    distances, indices = knn_gpu.kneighbors(
        to_device(queries).to(half_dtype), to_device(train).to(half_dtype), 10, metric=metric
    )
    result_dtype = HALF_RESULT_DTYPES[half]
    distances = on_device(distances, CUDA0, (N_QUERIES, 10), result_dtype)
    indices = on_device(indices, CUDA0, (N_QUERIES, 10), torch.int64)
    value_tolerance = 1e-6 if result_dtype == torch.float32 else 1e-2  # a half-precision answer rounds
    assert_neighbours(
        distances.astype(np.float32),
        indices,
        queries,
        train,
        10,
        metric,
        tolerance=1e-6,
        value_tolerance=value_tolerance,
    )
    # A model keeps the training rows in the half type on the device (no float32 copy), and answers in float32.
    targets = np.arange(N_TRAIN, dtype=np.float32) % 5
    model = KNN(10, metric=metric).fit(to_device(train).to(half_dtype), to_device(targets))
    assert model._index.rows.dtype == half_dtype and model._index.rows.device == CUDA0, model._index.rows.dtype
    predicted = on_device(model.predict(to_device(queries).to(half_dtype)), CUDA0, (N_QUERIES,), result_dtype)
    np.testing.assert_allclose(predicted, targets[indices].mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("k", (1, 10, N_TRAIN))
def test_precomputed_on_fake_cuda(gpu, k):
    """Distance matrices from the oracle: the search selects on the device, ties to the lower index."""
    rng = np.random.default_rng(12)
    base = rng.integers(-3, 4, size=(N_TRAIN // 2, 4))
    train = np.concatenate([base, base])
    queries = rng.integers(-3, 4, size=(N_QUERIES, 4))
    train_matrix = oracle_distances(train, train, "manhattan")
    query_rows = oracle_distances(queries, train, "manhattan")
    distances, indices = knn_gpu.kneighbors(to_device(query_rows), to_device(train_matrix), k, metric="precomputed")
    distances = on_device(distances, CUDA0, (N_QUERIES, k), torch.float64)
    indices = on_device(indices, CUDA0, (N_QUERIES, k), torch.int64)
    expected_indices = np.argsort(query_rows, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(distances, np.take_along_axis(query_rows, expected_indices, axis=1))
