"""Radius search with the directly computed metrics, and per-query radius arrays on both engines.

The oracle is written plainly here: float64 broadcasting of ``|q - t|``,
the key ``sum |d|^p`` (the distance itself for p = 1 and infinity), the
rule ``key <= radius ** p`` (scikit-learn's brute rule, so that a point
exactly at the radius is in), and the root of the neighbours' keys.
"""

from __future__ import annotations

import math
import threading

import array_api_compat
import array_api_compat.numpy as compat_numpy
import numpy as np
import pytest
from guards import refusing_host_conversions, traced_peak

import knn_gpu
from knn_gpu._engine import radius as radius_module
from knn_gpu._engine import radius_direct
from knn_gpu._engine.radius_direct import radius_search_direct
from knn_gpu._engine.search import build_index
from knn_gpu._engine.streaming import CHUNK_COPIES
from knn_gpu._lib.backends import to_host

#: Minkowski powers searched, and radii per power on small-integer data: 0 (duplicates only), values
#: that integer distances hit exactly (for p = 1, 3 and infinity), and one that yields empty rows
#: for the far queries; the non-integer powers get radii between their (irrational) distances.
POWERS = (0.5, 1.0, 1.5, 3.0, math.inf)
RADII = {
    0.5: (0.0, 4.1, 20.5),
    1.0: (0.0, 1.0, 2.0, 5.0),
    1.5: (0.0, 1.1, 2.7),
    3.0: (0.0, 1.0, 2.0, 3.0),
    math.inf: (0.0, 1.0, 2.0, 3.0),
}


def oracle_keys(queries, train, p):
    """float64 ``sum |q - t|^p`` per pair (p = 1, infinity: the distance), shape (n_queries, n_samples)."""
    differences = np.abs(np.asarray(queries, np.float64)[:, None, :] - np.asarray(train, np.float64)[None, :, :])
    if math.isinf(p):
        return differences.max(axis=2)
    return (differences**p).sum(axis=2)


def oracle_radius_keys(keys, radius, p=1.0, sort_results=False):
    """(distances, indices, offsets) of the pairs with ``key <= radius ** p`` (radius: float or one per row)."""
    radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (keys.shape[0],))
    has_root = p != 1.0 and not math.isinf(p)
    values, indices, offsets = [], [], [0]
    for row, row_radius in zip(keys, radii):
        found = np.flatnonzero(row <= (row_radius**p if has_root else row_radius))
        distances = row[found] ** (1.0 / p) if has_root else row[found]
        if sort_results:  # by key: the root may round equal keys apart (as scikit-learn, which sorts its rdist)
            order = np.argsort(row[found], kind="stable")
            found, distances = found[order], distances[order]
        values.append(distances)
        indices.append(found)
        offsets.append(offsets[-1] + found.size)
    return np.concatenate(values), np.concatenate(indices), np.asarray(offsets)


def _integer_data(seed=0):
    """Small integers, every training row twice, queries among them and two far away (no neighbours)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(120, 4))
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = np.concatenate([rng.integers(-3, 4, size=(12, 4)), base[:3], np.full((2, 4), 40)]).astype(np.float32)
    return queries, train


def check_result(backend, result, num_queries, dtype):
    """Namespace, device, dtype and shape of the three flat arrays; return them on the host."""
    distances, indices, offsets = result
    offsets = backend.check(offsets, (num_queries + 1,), backend.xp.int64)
    total = int(offsets[-1])
    return (
        backend.check(distances, (total,), dtype),
        backend.check(indices, (total,), backend.xp.int64),
        offsets,
    )


def _assert_same(got, expected, rtol=1e-6, ties_exact=True):
    """Same offsets, indices and distances; ``ties_exact=False``: sorted rows may order near-ties either way."""
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_allclose(got[0], expected[0], rtol=rtol, atol=1e-6)
    if ties_exact:
        np.testing.assert_array_equal(got[1], expected[1])
        return
    for begin, end in zip(got[2][:-1], got[2][1:]):
        np.testing.assert_array_equal(np.sort(got[1][begin:end]), np.sort(expected[1][begin:end]))


@pytest.mark.parametrize("p", POWERS)
def test_integer_data_matches_the_oracle_on_every_backend(backend, p):
    """Exact boundaries in, duplicates both listed, far queries empty; sort_results both ways; radius infinity."""
    queries, train = _integer_data()
    index = build_index(backend.asarray(train), "minkowski", xp=backend.xp, p=p)
    keys = oracle_keys(queries, train, p)
    for radius in (*RADII[p], math.inf):
        for sort_results in (False, True):
            result = radius_search_direct(index, backend.asarray(queries), radius, sort_results=sort_results)
            got = check_result(backend, result, queries.shape[0], backend.xp.float32)
            # A non-integer power goes through pow, which torch may round differently per SIMD lane: keys equal
            # on paper can differ in their last bit, so a sorted row may order those near-ties either way.
            ties_exact = not sort_results or p in (1.0, 3.0, math.inf)
            _assert_same(got, oracle_radius_keys(keys, radius, p, sort_results), ties_exact=ties_exact)
            if radius < 100:
                assert got[2][-1] == got[2][-3]  # the far queries have no neighbour
            else:
                assert got[2][-1] == train.shape[0] * queries.shape[0]


def test_exact_boundary_distances_are_neighbours(backend):
    """distance == radius is a neighbour (27 <= 3 ** 3, where 27 ** (1/3) may round either side of 3)."""
    train = backend.asarray(np.array([[3.0, 0.0], [3.0, 3.5], [0.0, 0.0], [0.0, -3.0]]))
    query = backend.asarray(np.array([[0.0, 0.0]]))
    for metric, p in (("minkowski", 3.0), ("manhattan", None), ("chebyshev", None)):
        indices, offsets = knn_gpu.radius_neighbors(query, train, 3.0, metric=metric, p=p, return_distance=False)
        assert backend.to_numpy(indices).tolist() == [0, 2, 3], metric
    indices, _ = knn_gpu.radius_neighbors(query, train, 3.5, metric="chebyshev", return_distance=False)
    assert backend.to_numpy(indices).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("metric", ["manhattan", "l1", "cityblock", "chebyshev", "infinity"])
def test_named_metrics_through_the_functional_call(backend, metric):
    queries, train = _integer_data(1)
    p = 1.0 if metric in ("manhattan", "l1", "cityblock") else math.inf
    expected = oracle_radius_keys(oracle_keys(queries, train, p), 2.0, p, sort_results=True)
    result = knn_gpu.radius_neighbors(
        backend.asarray(queries), backend.asarray(train), 2.0, metric=metric, sort_results=True
    )
    _assert_same(check_result(backend, result, queries.shape[0], backend.xp.float32), expected)
    indices, offsets = knn_gpu.radius_neighbors(
        backend.asarray(queries), backend.asarray(train), 2.0, metric=metric, return_distance=False
    )
    _, expected_indices, expected_offsets = oracle_radius_keys(oracle_keys(queries, train, p), 2.0, p)
    np.testing.assert_array_equal(backend.check(indices, expected_indices.shape, backend.xp.int64), expected_indices)
    np.testing.assert_array_equal(backend.to_numpy(offsets), expected_offsets)


def test_precomputed_selects_the_given_distances(backend):
    """Queries are rows of distances: the neighbours are the entries <= radius, nothing is computed."""
    queries, train = _integer_data(2)
    square = oracle_keys(train, train, 1.0)
    rows = oracle_keys(queries, train, 1.0)
    dtype = backend.xp.float64 if backend.has_float64() else backend.xp.float32
    for radius in (0.0, 2.0, 5.0, math.inf):
        for sort_results in (False, True):
            result = knn_gpu.radius_neighbors(
                backend.asarray(rows), backend.asarray(square), radius, metric="precomputed", sort_results=sort_results
            )
            got = check_result(backend, result, rows.shape[0], dtype)
            _assert_same(got, oracle_radius_keys(rows, radius, 1.0, sort_results))
    with pytest.raises(ValueError, match="square"):
        knn_gpu.radius_neighbors(rows, square[:, :-1], 1.0, metric="precomputed")
    with pytest.raises(ValueError, match="negative"):
        knn_gpu.radius_neighbors(-rows, square, 1.0, metric="precomputed")


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_per_query_radius_arrays_on_both_engines(backend, metric):
    """One radius per query, given in the backend's namespace, as a NumPy array and as a list: the same answer."""
    queries, train = _integer_data(3)
    rng = np.random.default_rng(3)
    radii = rng.choice([0.0, 1.0, 2.0, 3.0, math.inf], size=queries.shape[0])
    if metric == "cosine":
        radii = np.minimum(radii, 2.0) / 10
    dtype = backend.xp.float32
    expected = [
        knn_gpu.radius_neighbors(queries[row : row + 1], train, float(radii[row]), metric=metric)
        for row in range(queries.shape[0])
    ]
    for given in (backend.asarray(radii), radii, radii.tolist()):
        result = knn_gpu.radius_neighbors(
            backend.asarray(queries), backend.asarray(train), given, metric=metric, batch_size=4
        )
        distances, indices, offsets = check_result(backend, result, queries.shape[0], dtype)
        for row, (want_distances, want_indices, want_offsets) in enumerate(expected):
            begin, end = offsets[row], offsets[row + 1]
            assert end - begin == want_offsets[-1], (row, radii[row])
            np.testing.assert_array_equal(indices[begin:end], want_indices)
            np.testing.assert_allclose(distances[begin:end], want_distances, rtol=1e-6, atol=1e-6)


def test_per_query_radius_arrays_are_checked():
    queries, train = _integer_data(4)
    for bad, error in ((np.ones(3), ValueError), (np.ones((queries.shape[0], 1)), ValueError),
                       (np.full(queries.shape[0], -1.0), ValueError), (np.full(queries.shape[0], np.nan), ValueError),
                       (np.array(["a"] * queries.shape[0]), TypeError)):  # fmt: skip
        for metric in ("euclidean", "manhattan"):
            with pytest.raises(error, match="radius"):
                knn_gpu.radius_neighbors(queries, train, bad, metric=metric)
            with pytest.raises(error, match="radius"):
                knn_gpu.NearestNeighbors(metric=metric).fit(train).radius_neighbors(queries, bad)
    # As scikit-learn: the estimators' constructor radius is a float.
    with pytest.raises(ValueError, match="radius"):
        knn_gpu.RadiusNeighborsClassifier(radius=np.ones(3)).fit(train, np.zeros(train.shape[0]))


SKLEARN_CASES = [("minkowski", p) for p in POWERS] + [("manhattan", None), ("chebyshev", None), ("precomputed", None)]


@pytest.mark.parametrize(("metric", "p"), SKLEARN_CASES)
def test_matches_scikit_learn_brute(metric, p):
    """NearestNeighbors(algorithm='brute').radius_neighbors, float data: same neighbours, same distances."""
    neighbors = pytest.importorskip("sklearn.neighbors")
    rng = np.random.default_rng(5)
    train, queries = rng.standard_normal((400, 6)), rng.standard_normal((50, 6))
    params = {"metric": metric} if p is None else {"metric": metric, "p": p}
    if metric == "precomputed":
        train, queries = oracle_keys(train, train, 1.0), oracle_keys(queries, train, 1.0)
    with pytest.warns(UserWarning, match="0 < p < 1") if p == 0.5 else _no_warning():
        reference = neighbors.NearestNeighbors(algorithm="brute", **params).fit(train)
        model = knn_gpu.NearestNeighbors(**params).fit(train)
    radius = float(np.median(reference.kneighbors(queries, 10)[0][:, -1]))
    for sort_results in (False, True):
        want = reference.radius_neighbors(queries, radius, sort_results=sort_results)
        got = model.radius_neighbors(queries, radius, sort_results=sort_results)
        for got_d, got_i, want_d, want_i in zip(*got, *want):
            order = slice(None) if sort_results else np.argsort(want_i)
            np.testing.assert_array_equal(got_i, want_i[order])
            np.testing.assert_allclose(got_d, want_d[order], rtol=1e-12)
    got_indices = model.radius_neighbors(queries, radius, return_distance=False)
    for got_i, want_i in zip(got_indices, reference.radius_neighbors(queries, radius, return_distance=False)):
        np.testing.assert_array_equal(got_i, np.sort(want_i))
    # Leave-one-out (X=None) and the graph.
    want = reference.radius_neighbors_graph(None, radius, mode="distance")
    got = model.radius_neighbors_graph(None, radius, mode="distance")
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-12)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("metric", ["manhattan", "precomputed"])
def test_radius_estimators_match_scikit_learn(metric):
    """RadiusNeighborsClassifier, Regressor and Transformer with a direct metric: scikit-learn's answers."""
    neighbors = pytest.importorskip("sklearn.neighbors")
    rng = np.random.default_rng(6)
    X = rng.standard_normal((200, 4))
    X_test = X[:40] + 0.01 * rng.standard_normal((40, 4))  # every query has a neighbour (no outliers)
    y = (X[:, 0] > 0).astype(float)  # float: scikit-learn's regressor fills a float array
    if metric == "precomputed":
        X, X_test = oracle_keys(X, X, 2.0) ** 0.5, oracle_keys(X_test, X, 2.0) ** 0.5
    options = {"radius": 2.5, "metric": metric}
    for name in ("RadiusNeighborsClassifier", "RadiusNeighborsRegressor"):
        want = getattr(neighbors, name)(algorithm="brute", weights="distance", **options).fit(X, y).predict(X_test)
        got = getattr(knn_gpu, name)(weights="distance", **options).fit(X, y).predict(X_test)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    want = neighbors.RadiusNeighborsTransformer(mode="distance", **options).fit(X).transform(X_test)
    got = knn_gpu.RadiusNeighborsTransformer(mode="distance", **options).fit(X).transform(X_test)
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-12)
    want = neighbors.radius_neighbors_graph(X, 2.5, metric=metric, mode="distance")
    got = knn_gpu.radius_neighbors_graph(X, 2.5, metric=metric, mode="distance")
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-12)


def _counting(function, calls):
    def counted(*args, **kwargs):
        calls.append(args)
        return function(*args, **kwargs)

    return counted


@pytest.mark.parametrize(("metric", "p"), [("manhattan", None), ("minkowski", 3.0), ("precomputed", None)])
def test_many_batches_read_once_each(backend, monkeypatch, metric, p):
    """A one-byte budget (one query per batch) and batch_size=3: same answer, one count read per batch.

    Every candidate of the direct engine is a neighbour: nothing is compacted, so no count is read at the end.
    """
    queries, train = _integer_data(7)
    if metric == "precomputed":
        queries, train = oracle_keys(queries, train, 1.0), oracle_keys(train, train, 1.0)
    reads = []
    counted = _counting(radius_module.read_counts, reads)
    monkeypatch.setattr(radius_module, "read_counts", counted)
    monkeypatch.setattr(radius_direct, "read_counts", counted)
    expected = knn_gpu.radius_neighbors(queries, train, 2.0, metric=metric, p=p)
    for options in ({"memory_budget": 1}, {"batch_size": 3}, {"batch_size": 3, "memory_budget": 4096}):
        reads.clear()
        result = knn_gpu.radius_neighbors(
            backend.asarray(queries), backend.asarray(train), 2.0, metric=metric, p=p, **options
        )
        dtype = backend.xp.float32 if metric != "precomputed" or not backend.has_float64() else backend.xp.float64
        _assert_same(check_result(backend, result, queries.shape[0], dtype), expected)
        batches = queries.shape[0] if "batch_size" not in options else -(-queries.shape[0] // 3)
        assert len(reads) == batches, (options, len(reads))


@pytest.mark.parametrize(("metric", "p"), [("manhattan", None), ("minkowski", 3.0), ("minkowski", math.inf)])
def test_device1_reads_only_the_documented_counts(monkeypatch, metric, p):
    """On device1 nothing is converted to the host but read_counts's explicit copies: one per batch."""
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    queries_host, train = _integer_data(8)
    queries = xp.asarray(queries_host, device=device)
    train_device = xp.asarray(train, device=device)
    radii_host = np.linspace(0.0, 3.0, queries_host.shape[0])
    radii = xp.asarray(radii_host, device=device)
    reads, crossings = [], []
    counted = _counting(radius_module.read_counts, reads)
    monkeypatch.setattr(radius_module, "read_counts", counted)
    monkeypatch.setattr(radius_direct, "read_counts", counted)
    monkeypatch.setattr(array_api_compat, "to_device", _counting(array_api_compat.to_device, crossings))
    guarded_search = radius_direct.radius_search_direct

    def search(*args, **kwargs):
        with refusing_host_conversions(monkeypatch, xp, only_device=device):
            return guarded_search(*args, **kwargs)

    monkeypatch.setattr(radius_direct, "radius_search_direct", search)
    results = []
    for radius in (2.0, radii):
        reads.clear()
        crossings.clear()
        results.append(
            knn_gpu.radius_neighbors(queries, train_device, radius, metric=metric, p=p, batch_size=6, sort_results=True)
        )
        # The radius array's check reads one boolean (validation, before the search): not a to_device.
        assert len(reads) == -(-queries_host.shape[0] // 6)
        assert len(crossings) == len(reads)  # the only device-to-host movements are the counts'
    monkeypatch.undo()
    for result, radius in zip(results, (2.0, radii_host)):
        for array in result:
            assert array_api_compat.device(array) == device
        expected = knn_gpu.radius_neighbors(queries_host, train, radius, metric=metric, p=p, sort_results=True)
        for got, want in zip(result, expected):
            np.testing.assert_allclose(to_host(got), want, rtol=1e-6)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_torch_on_fake_cuda_syncs_only_to_read_counts(dtype_name):
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    queries, train = _integer_data(9)
    queries, train = queries.astype(dtype_name), train.astype(dtype_name)
    sites = ENGINE_SYNC_SITES
    expected = knn_gpu.radius_neighbors(queries, train, 3.0, metric="minkowski", p=3, sort_results=True)
    with fake_cuda(num_devices=2, allowed_sync_sites=sites) as gpu:
        device = torch.device("cuda", 1)
        result = knn_gpu.radius_neighbors(
            torch.asarray(queries, device=device),
            torch.asarray(train, device=device),
            3.0,
            metric="minkowski",
            p=3,
            sort_results=True,
            batch_size=8,
        )
        syncs = list(gpu.syncs)
        assert all(array.device == device for array in result)
        with allow_sync():
            host = [array.cpu().numpy() for array in result]
    counts = [site for _, site in syncs if site == "knn_gpu._lib.devices.read_counts"]
    assert len(counts) == -(-queries.shape[0] // 8)
    assert {site for _, site in syncs} <= set(sites)
    for got, want in zip(host, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)


#: Bytes per neighbour a search holds beyond its budget at most (each batch's neighbours until the end:
#: query, index, distance, kept flag; then the compacted parts, their concatenation and the result).
BYTES_PER_NEIGHBOUR = 64


@pytest.mark.parametrize(("metric", "p"), [("manhattan", None), ("minkowski", 3.0), ("minkowski", 1.5)])
@pytest.mark.parametrize("quantile", [0.001, 0.2], ids=["about 20 per query", "about 4000 per query"])
def test_temporaries_stay_within_the_budget(metric, p, quantile):
    """tracemalloc: a search's peak is under the budget plus a few 8-byte values per neighbour."""
    rng = np.random.default_rng(10)
    train = rng.standard_normal((20_000, 32), dtype=np.float32)
    queries = rng.standard_normal((300, 32), dtype=np.float32)
    index = build_index(train, metric, xp=compat_numpy, p=p)
    power = index.p
    keys = oracle_keys(queries[:10], train, power)
    radius = float(np.quantile(keys, quantile)) ** (1 / power if power != 1.0 else 1.0)
    budget = 8 * 2**20
    radius_search_direct(index, queries[:1], radius)  # lazy imports (SciPy's cdist) are not the search's memory
    (distances, indices, offsets), peak = traced_peak(
        lambda: radius_search_direct(index, queries, radius, memory_budget=budget)
    )
    assert peak <= budget + BYTES_PER_NEIGHBOUR * int(offsets[-1]), (peak / 2**20, int(offsets[-1]))
    expected = oracle_radius_keys(keys, radius, power)
    np.testing.assert_array_equal(indices[: offsets[10]], expected[1])
    np.testing.assert_array_equal(offsets[:11], expected[2])


@pytest.mark.parametrize(("metric", "p"), [("euclidean", None), ("manhattan", None), ("minkowski", 3.0)])
def test_out_of_core_models_answer_as_in_memory_ones(backend, monkeypatch, metric, p):
    """out_of_core=True: the rows stream in chunks; same neighbours, in the same order, as the in-memory model.

    Each chunk's search reads its batches' counts (the product engine one more, for its compaction), nothing else.
    """
    from knn_gpu._engine.streaming import chunk_rows_for

    queries, train = _integer_data(11)
    budget = 2 * CHUNK_COPIES * (train.shape[1] + 1) * 4 * 70  # chunks of 70 rows: 4 chunks of the 240 rows
    chunks = -(-train.shape[0] // chunk_rows_for(train.shape[1], 4, budget))
    assert chunks == 4
    params = {"metric": metric} if p is None else {"metric": metric, "p": p}
    in_memory = knn_gpu.NearestNeighbors(**params).fit(train)
    streamed = knn_gpu.NearestNeighbors(**params, out_of_core=True, memory_budget=budget, batch_size=6)
    streamed.fit(backend.asarray(train))
    reads = []
    counted = _counting(radius_module.read_counts, reads)
    monkeypatch.setattr(radius_module, "read_counts", counted)
    monkeypatch.setattr(radius_direct, "read_counts", counted)
    radii = np.linspace(0.0, 3.0, queries.shape[0])
    for radius in (2.0, radii, backend.asarray(radii)):
        for sort_results in (False, True):
            reads.clear()
            got = streamed.radius_neighbors(backend.asarray(queries), radius, sort_results=sort_results)
            batches = -(-queries.shape[0] // 6)
            assert len(reads) == chunks * (batches + (metric == "euclidean"))
            host_radius = radius if isinstance(radius, float) else to_host(radius)
            want = in_memory.radius_neighbors(queries, host_radius, sort_results=sort_results)
            for got_d, got_i, want_d, want_i in zip(*got, *want):
                np.testing.assert_array_equal(backend.check(got_i, want_i.shape, backend.xp.int64), want_i)
                np.testing.assert_allclose(backend.check(got_d, want_d.shape, backend.xp.float32), want_d, rtol=1e-6)
    graph = streamed.radius_neighbors_graph(backend.asarray(queries), 2.0, mode="distance")
    np.testing.assert_allclose(
        graph.toarray(), in_memory.radius_neighbors_graph(queries, 2.0, mode="distance").toarray()
    )
    with pytest.raises(ValueError, match="need the training rows in memory"):
        streamed.radius_neighbors()


def test_out_of_core_precomputed_radius_is_refused():
    square = oracle_keys(np.eye(5), np.eye(5), 1.0)
    model = knn_gpu.NearestNeighbors(metric="precomputed", out_of_core=True).fit(square)
    with pytest.raises(ValueError, match="precomputed"):
        model.radius_neighbors(square, 1.0)


@pytest.mark.parametrize("p", [1.0, 3.0])
def test_numpy_batches_on_several_threads_give_the_single_thread_answer(monkeypatch, p):
    """The NumPy search runs its batches on a thread pool (as the k-search): same result, in query order."""
    queries, train = _integer_data()
    index = build_index(compat_numpy.asarray(train), "minkowski", xp=compat_numpy, p=p)
    threads = []
    real_batch = radius_direct._radius_batch

    def recording_batch(*args, **kwargs):
        threads.append(threading.get_ident())
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(radius_direct, "_radius_batch", recording_batch)
    monkeypatch.setattr(radius_direct, "direct_workers", lambda index, num_queries, n_jobs: 2)  # as imported there
    for sort_results in (False, True):
        threads.clear()
        result = radius_search_direct(index, queries, 3.0, sort_results=sort_results, batch_rows=2)
        expected = oracle_radius_keys(oracle_keys(queries, train, p), 3.0, p, sort_results=sort_results)
        _assert_same(result, expected)
        # Every batch searched once, on the pool's threads (not the caller's).
        assert len(threads) == -(-queries.shape[0] // 2)
        assert threading.main_thread().ident not in threads
