"""Radius search on every backend: the float64 oracle, scikit-learn, memory, and no hidden host syncs.

The oracle is every pairwise distance in float64 (``oracle.oracle_distances``)
and the rule ``distance <= radius``; knn_gpu returns flat
``(distances, indices, offsets)`` with each query's neighbours in ascending
training index (or by (distance, index) with ``sort_results=True``).
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from guards import refusing_host_conversions, traced_peak
from oracle import oracle_distances

import knn_gpu
from knn_gpu import to_object_arrays
from knn_gpu._engine import key_bounds
from knn_gpu._engine import radius as radius_module
from knn_gpu._engine.radius import radius_search_index
from knn_gpu._engine.search import build_index
from knn_gpu._lib.backends import to_host

RADIUS_METRICS = ("euclidean", "sqeuclidean", "cosine")

#: Radii per metric on small-integer data: 0 (duplicates only), values that
#: distances hit exactly (2 = sqrt(4), 1 = orthogonal for cosine; other cosine radii avoid values
#: such as 0.3 = 1 - 7/10 that float64 rounds either way), and one that includes everything.
RADII = {
    "euclidean": (0.0, 1.0, 2.0, 3.5, 1e6),
    "sqeuclidean": (0.0, 1.0, 4.0, 9.0, 1e6),
    "cosine": (1e-9, 0.0517, 0.2345, 1.0, 2.0),
}


def oracle_radius(queries, train, radius, metric="euclidean", sort_results=False):
    """(distances, indices, offsets): every training row with float64 distance <= radius."""
    distances = oracle_distances(queries, train, metric)
    values, indices, offsets = [], [], [0]
    for row in distances:
        found = np.flatnonzero(row <= radius)
        if sort_results:
            found = found[np.argsort(row[found], kind="stable")]
        values.append(row[found])
        indices.append(found)
        offsets.append(offsets[-1] + found.size)
    return np.concatenate(values), np.concatenate(indices), np.asarray(offsets)


def check_result(backend, result, num_queries, dtype):
    """Namespace, device, dtype and shape of the three flat arrays; return them on the host."""
    distances, indices, offsets = result
    offsets = backend.check(offsets, (num_queries + 1,), backend.xp.int64)
    total = int(offsets[-1])
    distances = backend.check(distances, (total,), dtype)
    indices = backend.check(indices, (total,), backend.xp.int64)
    return distances, indices, offsets


def _integer_data(seed: int = 0):
    """Small integers, every training row twice, and queries far away (no neighbours) among them."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(150, 4))
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = np.concatenate([rng.integers(-3, 4, size=(15, 4)), base[:3], np.full((2, 4), 40)]).astype(np.float32)
    return queries, train


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_integer_data_matches_the_oracle_on_every_backend(backend, metric):
    """Points exactly at the radius are in, duplicates both listed, far queries empty, everything at a huge radius."""
    queries, train = _integer_data()
    for radius in RADII[metric]:
        result = knn_gpu.radius_neighbors(backend.asarray(queries), backend.asarray(train), radius, metric=metric)
        distances, indices, offsets = check_result(backend, result, queries.shape[0], backend.xp.float32)
        expected_distances, expected_indices, expected_offsets = oracle_radius(queries, train, radius, metric)
        np.testing.assert_array_equal(offsets, expected_offsets, err_msg=f"radius {radius}")
        np.testing.assert_array_equal(indices, expected_indices, err_msg=f"radius {radius}")
        np.testing.assert_allclose(distances, expected_distances, rtol=1e-6, atol=1e-6)
        numpy_result = knn_gpu.radius_neighbors(queries, train, radius, metric=metric)
        np.testing.assert_array_equal(indices, numpy_result[1])
        if metric != "cosine":
            assert (offsets[-3:] == offsets[-1]).all() if radius < 100 else offsets[-1] == train.shape[0] * len(queries)
    # Exactly at the radius: a neighbour (scikit-learn's <=).
    at_radius = knn_gpu.radius_neighbors(backend.asarray([[0.0, 0.0]]), backend.asarray([[3.0, 4.0], [3.0, 4.1]]), 5.0)
    assert backend.to_numpy(at_radius[1]).tolist() == [0]


@pytest.mark.parametrize(
    ("metric", "power"), [("euclidean", 70), ("euclidean", -110), ("sqeuclidean", 50), ("sqeuclidean", -60)]
)
def test_integer_data_scaled_beyond_float32s_range(backend, metric, power):
    """The integer data times 2**70 (squares overflow float32) or 2**-110 (they underflow; sqeuclidean: as far
    as its distances stay within float32): the keys are ranked scaled, and every row exactly at the radius is
    still in."""
    queries, train = _integer_data()
    factor = 2.0**power
    queries, train = queries * np.float32(factor), train * np.float32(factor)
    for radius in RADII[metric][1:4]:
        scaled = radius * (factor if metric == "euclidean" else factor * factor)
        result = knn_gpu.radius_neighbors(backend.asarray(queries), backend.asarray(train), scaled, metric=metric)
        distances, indices, offsets = check_result(backend, result, queries.shape[0], backend.xp.float32)
        expected_distances, expected_indices, expected_offsets = oracle_radius(queries, train, scaled, metric)
        assert expected_offsets[-1] > 0
        np.testing.assert_array_equal(offsets, expected_offsets, err_msg=f"radius {radius}")
        np.testing.assert_array_equal(indices, expected_indices, err_msg=f"radius {radius}")
        np.testing.assert_allclose(distances, expected_distances.astype(np.float32), rtol=1e-6, atol=0)


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_sort_results_orders_by_distance_then_index(backend, metric):
    queries, train = _integer_data(1)
    radius = RADII[metric][3]
    result = knn_gpu.radius_neighbors(
        backend.asarray(queries), backend.asarray(train), radius, metric=metric, sort_results=True
    )
    distances, indices, offsets = check_result(backend, result, queries.shape[0], backend.xp.float32)
    expected_distances, expected_indices, expected_offsets = oracle_radius(queries, train, radius, metric, True)
    np.testing.assert_array_equal(offsets, expected_offsets)
    if metric != "cosine":  # integer data: exact distances, so ties are exact and go to the lower index
        np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6, atol=1e-6)
    for begin, end in zip(offsets[:-1], offsets[1:]):
        assert (np.diff(distances[begin:end]) >= 0).all()


def test_small_budgets_force_many_batches_and_chunks(backend, monkeypatch):
    """A one-byte budget: one query per batch and one candidate per re-scoring chunk; same answer."""
    queries, train = _integer_data(2)
    reads = []
    monkeypatch.setattr(radius_module, "read_counts", _counting(radius_module.read_counts, reads))
    expected = oracle_radius(queries, train, 2.0)
    for options in ({"memory_budget": 1}, {"batch_size": 3}, {"batch_size": 3, "memory_budget": 4096}):
        reads.clear()
        result = knn_gpu.radius_neighbors(backend.asarray(queries), backend.asarray(train), 2.0, **options)
        distances, indices, offsets = check_result(backend, result, queries.shape[0], backend.xp.float32)
        np.testing.assert_array_equal(offsets, expected[2])
        np.testing.assert_array_equal(indices, expected[1])
        batches = queries.shape[0] if "batch_size" not in options else -(-queries.shape[0] // 3)
        assert len(reads) == batches + 1, (options, len(reads))  # one count per batch, one for the result


def _counting(function, calls):
    def counted(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_far_from_origin_float32_stays_exact(backend, metric):
    """Clustered 1e3 from the origin: the float32 keys lose digits, the margin and the float64 re-scoring do not."""
    rng = np.random.default_rng(4)
    train = (1000.0 + rng.uniform(0, 1, size=(2000, 16))).astype(np.float32)
    queries = (1000.0 + rng.uniform(0, 1, size=(50, 16))).astype(np.float32)
    full = oracle_distances(queries, train, metric)
    radius = float(np.quantile(np.sort(full, axis=1)[:, 10], 0.5))  # about 10 neighbours per query
    result = knn_gpu.radius_neighbors(backend.asarray(queries), backend.asarray(train), radius, metric=metric)
    distances, indices, offsets = check_result(backend, result, 50, backend.xp.float32)
    expected_distances, expected_indices, expected_offsets = oracle_radius(queries, train, radius, metric)
    np.testing.assert_array_equal(offsets, expected_offsets)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_float64_ranked_in_float32_stays_exact(backend, metric):
    """The GPU policy (float64 data ranked in float32) forced on every backend, far from the origin."""
    if not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(5)
    train = 1000.0 + rng.uniform(0, 1, size=(1500, 8))
    queries = 1000.0 + rng.uniform(0, 1, size=(40, 8))
    full = oracle_distances(queries, train, metric)
    radius = float(np.quantile(np.sort(full, axis=1)[:, 10], 0.5))
    xp = backend.xp
    index = build_index(backend.asarray(train), metric, xp=xp, rank_dtype=xp.float32)
    assert index.exact_rows is not None
    result = radius_search_index(index, backend.asarray(queries), radius, batch_rows=16, train=backend.asarray(train))
    distances, indices, offsets = check_result(backend, result, 40, xp.float64)
    expected_distances, expected_indices, expected_offsets = oracle_radius(queries, train, radius, metric)
    np.testing.assert_array_equal(offsets, expected_offsets)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12, atol=1e-15)  # 1 - cos cancels


def test_half_precision_is_searched_and_answered_in_float32(backend):
    xp = backend.xp
    if not hasattr(xp, "float16"):
        pytest.skip("no float16 on this backend")
    queries, train = _integer_data(6)
    result = knn_gpu.radius_neighbors(
        xp.astype(backend.asarray(queries), xp.float16), xp.astype(backend.asarray(train), xp.float16), 2.0
    )
    distances, indices, offsets = check_result(backend, result, queries.shape[0], xp.float32)
    expected = oracle_radius(queries, train, 2.0)
    np.testing.assert_array_equal(offsets, expected[2])
    np.testing.assert_array_equal(indices, expected[1])


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_matches_scikit_learn_brute_on_digits(backend, metric):
    datasets = pytest.importorskip("sklearn.datasets")
    neighbors = pytest.importorskip("sklearn.neighbors")
    X = datasets.load_digits().data
    train, queries = X[:1500], X[1500:]
    model = neighbors.NearestNeighbors(algorithm="brute", metric=metric).fit(train)
    kth, _ = model.kneighbors(queries, 10)
    radius = float(np.median(kth[:, -1]))
    expected_distances, expected_indices = model.radius_neighbors(queries, radius, sort_results=True)
    dtype = backend.xp.float64 if backend.has_float64() else backend.xp.float32
    result = knn_gpu.radius_neighbors(
        backend.asarray(queries), backend.asarray(train), radius, metric=metric, sort_results=True
    )
    check_result(backend, result, queries.shape[0], dtype)
    distances, indices = to_object_arrays(*result)
    assert distances.dtype == object and indices.shape == (queries.shape[0],)
    same = [np.array_equal(np.sort(got), np.sort(want)) for got, want in zip(indices, expected_indices)]
    # scikit-learn's brute force uses the float64 expansion: a distance within 1e-12 of the radius may flip.
    full = oracle_distances(queries, train, metric)
    borderline = np.abs(full - radius).min(axis=1) < 1e-9 * max(radius, 1.0)
    assert all(same[row] or borderline[row] for row in range(len(same)))
    assert np.mean(same) > 0.95
    for row in np.flatnonzero(same):
        np.testing.assert_allclose(distances[row], expected_distances[row], rtol=1e-6, atol=1e-9)


def test_results_stay_in_the_queries_namespace_and_device(backend):
    queries, train = _integer_data(7)
    indices, offsets = knn_gpu.radius_neighbors(
        backend.asarray(queries), backend.asarray(train), 1.0, return_distance=False
    )
    assert array_api_compat.device(indices) == backend.device
    backend.check(offsets, (queries.shape[0] + 1,), backend.xp.int64)
    empty = knn_gpu.radius_neighbors(backend.asarray(np.zeros((0, 4))), backend.asarray(train), 1.0)
    check_result(backend, empty, 0, backend.xp.float64 if backend.has_float64() else backend.xp.float32)


def test_to_object_arrays_gives_scikit_learns_format():
    queries, train = _integer_data(8)
    neighbors = pytest.importorskip("sklearn.neighbors")
    model = neighbors.NearestNeighbors(algorithm="brute").fit(train)
    expected_distances, expected_indices = model.radius_neighbors(queries, 2.0)
    distances, indices = to_object_arrays(*knn_gpu.radius_neighbors(queries, train, 2.0))
    assert distances.dtype == expected_distances.dtype == object
    assert indices.shape == expected_indices.shape
    for got, want in zip(indices, expected_indices):
        np.testing.assert_array_equal(got, np.sort(want))


@pytest.mark.parametrize(
    ("radius", "error", "match"),
    [(-1.0, ValueError, "radius"), (float("nan"), ValueError, "radius"), ("1", TypeError, "radius"),
     (True, TypeError, "radius"), (None, TypeError, "radius"), (np.asarray([[1.0]]), ValueError, "radius"),
     (np.asarray(["1"]), TypeError, "radius"), (np.asarray([True]), TypeError, "radius"),
     ([1.0, -1.0], ValueError, "radius"), (np.asarray([np.nan]), ValueError, "radius")],
)  # fmt: skip
def test_bad_radius_is_refused_before_any_work(radius, error, match):
    with pytest.raises(error, match=match):
        knn_gpu.radius_neighbors(None, None, radius)  # the radius is checked before the data


def test_inner_product_and_bad_flags_are_refused():
    queries, train = _integer_data(9)
    with pytest.raises(ValueError, match="inner_product"):
        knn_gpu.radius_neighbors(queries, train, 1.0, metric="inner_product")
    with pytest.raises(ValueError, match="return_distance"):
        knn_gpu.radius_neighbors(queries, train, 1.0, sort_results=True, return_distance=False)
    with pytest.raises(TypeError, match="sort_results"):
        knn_gpu.radius_neighbors(queries, train, 1.0, sort_results="yes")
    assert np.isinf(np.inf) and knn_gpu.radius_neighbors(queries, train, np.inf)[2][-1] == 300 * len(queries)


#: Bytes per neighbour that a search holds beyond its budget at most: each batch's candidates (query,
#: training index, exact distance, kept flag) until the end, then the compacted parts and their concatenation.
BYTES_PER_NEIGHBOUR = 64


@pytest.mark.parametrize("radius", [4.9, 7.0], ids=["about 10 per query", "about 3500 per query"])
def test_temporaries_stay_within_the_budget(radius):
    """tracemalloc: a search's peak is under the budget plus a few 8-byte values per neighbour (the result's own)."""
    rng = np.random.default_rng(10)
    train = rng.standard_normal((20_000, 32), dtype=np.float32)
    queries = rng.standard_normal((600, 32), dtype=np.float32)
    index = build_index(train, "euclidean", xp=array_api_compat.numpy)
    budget = 8 * 2**20
    (distances, indices, offsets), peak = traced_peak(
        lambda: radius_search_index(index, queries, radius, memory_budget=budget, train=train)
    )
    assert peak <= budget + BYTES_PER_NEIGHBOUR * int(offsets[-1]), (peak / 2**20, int(offsets[-1]))
    expected = oracle_radius(queries[:20], train, radius)
    np.testing.assert_array_equal(indices[: offsets[20]], expected[1])


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_device1_reads_only_the_documented_counts(monkeypatch, metric):
    """On device1 no conversion happens but read_counts's explicit to_device, once per batch and once at the end.

    Data-dependent shapes are switched off: the compaction is a searchsorted of a known size, not a nonzero.
    """
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    queries_host, train = _integer_data(11)
    queries = xp.asarray(queries_host, device=device)
    train_device = xp.asarray(train, device=device)
    reads = []
    crossings = []
    monkeypatch.setattr(radius_module, "read_counts", _counting(radius_module.read_counts, reads))
    real_to_device = array_api_compat.to_device
    monkeypatch.setattr(array_api_compat, "to_device", _counting(real_to_device, crossings))
    guarded_search = radius_module.radius_search_index

    def search(*args, **kwargs):
        with refusing_host_conversions(monkeypatch, xp, only_device=xp.Device("device1")):
            return guarded_search(*args, **kwargs)

    monkeypatch.setattr(radius_module, "radius_search_index", search)
    radius = RADII[metric][2]
    result = knn_gpu.radius_neighbors(queries, train_device, radius, metric=metric, batch_size=6, sort_results=True)
    monkeypatch.undo()
    batches = -(-queries_host.shape[0] // 6)
    assert len(reads) == batches + 1
    # The only device-to-host movements: the counts' and the Euclidean build's one number (read_number:
    # whether the keys need scaling; cosine's unit rows need none).
    assert len(crossings) == len(reads) + (metric != "cosine")
    for array in result:
        assert array_api_compat.device(array) == device
    expected = knn_gpu.radius_neighbors(queries_host, train, radius, metric=metric, sort_results=True)
    for got, want in zip(result, expected):
        np.testing.assert_allclose(to_host(got), want, rtol=1e-6)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_torch_on_fake_cuda_syncs_only_to_read_counts(metric, dtype_name):
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    queries, train = _integer_data(12)
    queries, train = queries.astype(dtype_name), train.astype(dtype_name)
    radius = RADII[metric][3]
    sites = ENGINE_SYNC_SITES
    # Cosine distances of integer rows tie mathematically but round differently per library: index order there.
    sort_results = metric != "cosine"
    expected = knn_gpu.radius_neighbors(queries, train, radius, metric=metric, sort_results=sort_results)
    for device_index in (0, 1):
        with fake_cuda(num_devices=2, allowed_sync_sites=sites) as gpu:
            device = torch.device("cuda", device_index)
            result = knn_gpu.radius_neighbors(
                torch.asarray(queries, device=device),
                torch.asarray(train, device=device),
                radius,
                metric=metric,
                sort_results=sort_results,
                batch_size=8,
            )
            syncs = list(gpu.syncs)
            for array in result:
                assert array.device == device
            assert result[0].dtype == getattr(torch, dtype_name) and result[1].dtype == result[2].dtype == torch.int64
            with allow_sync():
                host = [array.cpu().numpy() for array in result]
        counts = [site for _, site in syncs if site == "knn_gpu._lib.devices.read_counts"]
        assert len(counts) == -(-queries.shape[0] // 8) + 1
        assert {site for _, site in syncs} <= set(sites)
        for got, want in zip(host, expected):
            np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_rows_closer_than_float32_resolution_are_decided_in_float64(backend, metric):
    """Five rows at 1 + j * 1e-10 from the query, ranked in float32 (equal keys there): the radius splits them exactly."""
    if not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(13)
    direction = np.eye(6)[0]
    near = np.stack([direction * (1 + j * 1e-10) for j in (3, 1, 4, 0, 2)])
    train = np.concatenate([rng.uniform(3, 9, size=(400, 6)), near, rng.uniform(3, 9, size=(300, 6))]) + 50.0
    queries = np.zeros((1, 6)) + 50.0
    radius = 1 + 2.5e-10 if metric == "euclidean" else (1 + 2.5e-10) ** 2
    xp = backend.xp
    index = build_index(backend.asarray(train), metric, xp=xp, rank_dtype=xp.float32)
    result = radius_search_index(index, backend.asarray(queries), radius, train=backend.asarray(train))
    distances, indices, offsets = check_result(backend, result, 1, xp.float64)
    np.testing.assert_array_equal(indices, [401, 403, 404])
    np.testing.assert_array_equal(offsets, [0, 3])


@pytest.mark.parametrize("metric", RADIUS_METRICS)
def test_rows_just_inside_and_outside_the_radius(backend, metric):
    """400 rows at 1e-9 (relative) inside or outside the radius, in random directions, ranked in float32.

    The float32 keys err by ~1e-7 of their scale, so without the safety margin
    many rows just inside are lost (checked below by removing it): the margin
    keeps them all as candidates, and the float64 re-scoring splits them exactly.
    """
    if not backend.has_float64():
        pytest.skip("device has no float64")
    rng = np.random.default_rng(14)
    query = 50.0 + rng.uniform(-1, 1, size=(1, 8))
    directions = rng.standard_normal((400, 8))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    if metric == "cosine":
        # Angles instead of lengths: rows at cosine distance 0.2 * (1 -+ 1e-9) from the query.
        radius = 0.2
        unit_query = query[0] / np.linalg.norm(query[0])
        orthogonal = directions - (directions @ unit_query)[:, None] * unit_query
        orthogonal /= np.linalg.norm(orthogonal, axis=1, keepdims=True)
        wanted = radius * (1 + np.where(np.arange(400) % 2 == 0, -1e-9, 1e-9))
        cosines = 1 - wanted
        train = cosines[:, None] * unit_query + np.sqrt(1 - cosines**2)[:, None] * orthogonal
        train *= rng.uniform(1, 5, size=(400, 1))
    else:
        length = 3.0 * (1 + np.where(np.arange(400) % 2 == 0, -1e-9, 1e-9))
        train = query + length[:, None] * directions
        radius = 3.0 if metric == "euclidean" else 9.0
    expected = np.flatnonzero(oracle_distances(query, train, metric)[0] <= radius)
    assert 150 < expected.size < 250 and np.array_equal(expected % 2, np.zeros_like(expected))
    xp = backend.xp
    index = build_index(backend.asarray(train), metric, xp=xp, rank_dtype=xp.float32)
    result = radius_search_index(index, backend.asarray(query), radius, train=backend.asarray(train))
    _, indices, offsets = check_result(backend, result, 1, xp.float64)
    np.testing.assert_array_equal(indices, expected)
    if backend.name == "numpy":  # the margin is what makes this pass
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(key_bounds, "unit_roundoff", lambda dtype, xp: 0.0)  # no margin, no room
            _, lost, _ = radius_search_index(index, query, radius, train=train)
        assert lost.size < expected.size, "the test cannot tell a margin from none"
