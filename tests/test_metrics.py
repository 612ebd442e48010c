"""The metric registry and every metric of scikit-learn's brute force, on every backend.

References are independent of knn_gpu: SciPy's ``cdist`` in float64 for the
metrics it has, plain loops written here for ``nan_euclidean`` and
``haversine``, and scikit-learn's own brute-force estimators. Neighbours
are compared exactly (ties: the lower index, as a stable argsort of the
reference gives), distances to float64 rounding.
"""

from __future__ import annotations

import math
import warnings

import array_api_compat
import array_api_compat.numpy
import numpy as np
import pytest
from guards import refusing_host_conversions, traced_peak
from scipy.spatial.distance import cdist

import knn_gpu
from knn_gpu._engine import index as index_module
from knn_gpu._engine import metrics, search
from knn_gpu._engine.metrics import REGISTRY, BlockMetric, lookup, resolve
from knn_gpu._engine.search import build_index, search_index
from knn_gpu._lib.backends import to_host

sklearn = pytest.importorskip("sklearn")
from sklearn.exceptions import DataConversionWarning  # noqa: E402
from sklearn.metrics import DistanceMetric  # noqa: E402
from sklearn.neighbors import NearestNeighbors as SkNearestNeighbors  # noqa: E402

BOOLEAN = ("jaccard", "dice", "rogerstanimoto", "russellrao", "sokalsneath", "yule")
NEW_METRICS = ("braycurtis", "canberra", "correlation", "hamming", "seuclidean", "mahalanobis", *BOOLEAN)


def _data(metric: str, seed: int = 0, num_train: int = 60, num_queries: int = 9, num_features: int = 5):
    """Training rows and queries suited to ``metric``; integer-valued so that exact ties occur."""
    rng = np.random.default_rng(seed)
    if metric in BOOLEAN or metric == "hamming":
        # Sparse 0/1 rows: many equal distances, so the tie rule is exercised; no all-zero row (0/0 cases).
        train = (rng.random((num_train, num_features)) < 0.4).astype(np.float64)
        queries = (rng.random((num_queries, num_features)) < 0.4).astype(np.float64)
        train[:, 0] = queries[:, 0] = 1.0
        return queries, train
    if metric == "haversine":
        train = np.column_stack([rng.uniform(-1.5, 1.5, num_train), rng.uniform(-3.1, 3.1, num_train)])
        queries = np.column_stack([rng.uniform(-1.5, 1.5, num_queries), rng.uniform(-3.1, 3.1, num_queries)])
        return queries, train
    if metric in ("braycurtis", "canberra"):
        return rng.integers(1, 6, size=(num_queries, num_features)) * 1.0, rng.integers(
            0, 6, size=(num_train, num_features)
        ) * 1.0
    if metric in ("correlation", "seuclidean", "mahalanobis"):
        # Square roots and divisions of sums: equal distances need not round equally, so no ties here.
        return rng.standard_normal((num_queries, num_features)), rng.standard_normal((num_train, num_features))
    train = rng.integers(-3, 4, size=(num_train, num_features)) * 1.0
    queries = rng.integers(-3, 4, size=(num_queries, num_features)) * 1.0
    return queries, train


def _reference_distances(queries, train, metric, params=None):
    """float64 distances by SciPy, or by the plain loops below where SciPy has no such metric."""
    params = dict(params or {})
    queries, train = np.asarray(queries, dtype=np.float64), np.asarray(train, dtype=np.float64)
    if metric == "seuclidean":
        params.setdefault("V", np.var(train, axis=0, ddof=1))
    if metric == "mahalanobis":
        params.setdefault("VI", np.linalg.inv(np.cov(train.T)))
    if metric == "nan_euclidean":
        return _nan_euclidean_loop(queries, train)
    if metric == "haversine":
        return _haversine_loop(queries, train)
    if metric in BOOLEAN:
        queries, train = queries != 0, train != 0
    return cdist(queries, train, metric, **params)


def _nan_euclidean_loop(queries, train):
    """scikit-learn's definition, pair by pair: sqrt(n_features / present * sum over present of d^2)."""
    out = np.empty((queries.shape[0], train.shape[0]))
    for i, query in enumerate(queries):
        for j, row in enumerate(train):
            present = ~np.isnan(query) & ~np.isnan(row)
            squares = sum((query[f] - row[f]) ** 2 for f in range(len(query)) if present[f])
            out[i, j] = math.sqrt(len(query) / present.sum() * squares) if present.any() else math.nan
    return out


def _haversine_loop(queries, train):
    out = np.empty((queries.shape[0], train.shape[0]))
    for i, (lat1, lon1) in enumerate(queries):
        for j, (lat2, lon2) in enumerate(train):
            inner = (
                math.sin((lat1 - lat2) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon1 - lon2) / 2) ** 2
            )
            out[i, j] = 2 * math.asin(math.sqrt(inner))
    return out


def _reference_kneighbors(queries, train, k, metric, params=None):
    distances = _reference_distances(queries, train, metric, params)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataConversionWarning)
        warnings.simplefilter("ignore", knn_gpu._lib.validation.DataConversionWarning)
        return function(*args, **kwargs)


# -- the registry ------------------------------------------------------------------------------------


def test_every_brute_force_metric_of_scikit_learn_is_in_the_registry():
    from sklearn.neighbors import VALID_METRICS

    missing = sorted(set(VALID_METRICS["brute"]) - set(metrics.metric_names()))
    assert missing == []
    for name in metrics.metric_names():
        entry = lookup(name)
        assert entry.ranking in ("product", "direct", "precomputed", "host")
        assert entry.sklearn_name is None or entry.sklearn_name in VALID_METRICS["brute"]


def test_aliases_and_parameters_resolve_in_one_place():
    assert lookup("l1") is lookup("cityblock") is REGISTRY["manhattan"]
    assert resolve("infinity").p == math.inf
    assert resolve("minkowski", None, {"p": 3}).p == 3.0
    assert resolve("seuclidean", None, {"V": [1.0]}).params == {"V": [1.0]}
    assert not lookup("inner_product").distance_weights
    with pytest.raises(ValueError, match=r"not parameters of metric='braycurtis'"):
        resolve("braycurtis", None, {"V": [1.0]})
    with pytest.raises(ValueError, match="metric must be one of"):
        lookup("wminkowski")
    assert lookup(BlockMetric(lambda q, t: q)) is REGISTRY["block_callable"]
    assert lookup(lambda a, b: 0.0) is REGISTRY["callable"]


# -- exact against the float64 reference, on every backend -----------------------------------------------


@pytest.mark.parametrize("metric", [*NEW_METRICS, "haversine"])
def test_kneighbors_matches_the_float64_reference(backend, metric):
    if not backend.has_float64():
        pytest.skip("the exact dtype is float64")
    queries, train = _data(metric)
    k = 7
    distances, indices = _quiet(knn_gpu.kneighbors, backend.asarray(queries), backend.asarray(train), k, metric=metric)
    distances = backend.check(distances, (queries.shape[0], k), backend.xp.float64)
    indices = backend.check(indices, (queries.shape[0], k), backend.xp.int64)
    expected_distances, expected_indices = _reference_kneighbors(queries, train, k, metric)
    np.testing.assert_array_equal(indices, expected_indices)  # ties: the lower index
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("metric", [*NEW_METRICS, "haversine"])
def test_radius_neighbors_matches_the_float64_reference(backend, metric):
    if not backend.has_float64():
        pytest.skip("the exact dtype is float64")
    queries, train = _data(metric, seed=1)
    reference = _reference_distances(queries, train, metric)
    radius = float(np.median(reference))
    distances, indices, offsets = _quiet(
        knn_gpu.radius_neighbors,
        backend.asarray(queries),
        backend.asarray(train),
        radius,
        metric=metric,
        sort_results=True,
    )
    indices, distances, offsets = backend.to_numpy(indices), backend.to_numpy(distances), backend.to_numpy(offsets)
    for row in range(queries.shape[0]):
        found = indices[offsets[row] : offsets[row + 1]]
        # Points within rounding of the radius may go either way; every other one is decided.
        near_edge = np.abs(reference[row] - radius) <= 1e-12 * max(radius, 1.0)
        inside = set(np.flatnonzero(reference[row] <= radius)) - set(np.flatnonzero(near_edge))
        outside = set(np.flatnonzero(reference[row] > radius)) - set(np.flatnonzero(near_edge))
        assert inside <= set(found.tolist()) and not outside & set(found.tolist())
        np.testing.assert_allclose(distances[offsets[row] : offsets[row + 1]], reference[row, found], rtol=1e-12)


@pytest.mark.parametrize("metric", ["seuclidean", "mahalanobis"])
def test_given_parameters_are_used(backend, metric):
    if not backend.has_float64():
        pytest.skip("the exact dtype is float64")
    queries, train = _data(metric, seed=3)
    rng = np.random.default_rng(5)
    if metric == "seuclidean":
        params = {"V": rng.uniform(0.5, 2.0, size=train.shape[1])}
    else:
        root = rng.standard_normal((train.shape[1], train.shape[1]))
        params = {"VI": root @ root.T + np.eye(train.shape[1])}
    given = {name: backend.asarray(value) for name, value in params.items()}
    distances, indices = knn_gpu.kneighbors(
        backend.asarray(queries), backend.asarray(train), 5, metric=metric, metric_params=given
    )
    expected_distances, expected_indices = _reference_kneighbors(queries, train, 5, metric, params)
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances, rtol=1e-12)


def test_nan_euclidean_takes_missing_values(backend):
    if not backend.has_float64():
        pytest.skip("the exact dtype is float64")
    rng = np.random.default_rng(7)
    train = rng.integers(-3, 4, size=(40, 4)).astype(np.float64)
    queries = rng.integers(-3, 4, size=(6, 4)).astype(np.float64)
    train[rng.random(train.shape) < 0.2] = np.nan
    queries[rng.random(queries.shape) < 0.2] = np.nan
    train[:, 0] = queries[:, 0] = 1.0  # every pair shares a present feature
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), 5, metric="nan_euclidean")
    expected_distances, expected_indices = _reference_kneighbors(queries, train, 5, "nan_euclidean")
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances, rtol=1e-12)
    from sklearn.metrics.pairwise import nan_euclidean_distances

    np.testing.assert_allclose(
        np.take_along_axis(nan_euclidean_distances(queries, train), expected_indices, axis=1),
        expected_distances,
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="NaN or infinity"):
        knn_gpu.kneighbors(queries, train, 5, metric="euclidean")
    train[0, 1] = np.inf
    with pytest.raises(ValueError, match="contains infinity"):
        knn_gpu.kneighbors(queries, train, 5, metric="nan_euclidean")


# -- scikit-learn: the drop-ins give its answers, the graphs included ---------------------------------


@pytest.mark.parametrize("metric", [*NEW_METRICS, "haversine", "nan_euclidean"])
def test_drop_in_matches_scikit_learn(metric):
    queries, train = _data(metric, seed=11)
    params = None
    if metric == "seuclidean":
        params = {"V": np.var(train, axis=0, ddof=1)}
    if metric == "mahalanobis":
        params = {"VI": np.linalg.inv(np.cov(train.T))}
    ours = _quiet(knn_gpu.NearestNeighbors(n_neighbors=6, metric=metric, metric_params=params).fit, train)
    theirs = _quiet(
        SkNearestNeighbors(n_neighbors=6, metric=metric, metric_params=params, algorithm="brute").fit, train
    )
    our_distances, our_indices = _quiet(ours.kneighbors, queries)
    their_distances, their_indices = _quiet(theirs.kneighbors, queries)
    np.testing.assert_allclose(our_distances, their_distances, rtol=1e-10, atol=1e-12)
    # scikit-learn's argpartition may order equal distances either way: the sets at each distance agree.
    for row in range(queries.shape[0]):
        assert sorted(zip(np.round(our_distances[row], 10), our_indices[row])) == sorted(
            zip(np.round(their_distances[row], 10), their_indices[row])
        ) or np.array_equal(np.sort(our_distances[row]), np.sort(their_distances[row]))
    ours_graph = _quiet(ours.kneighbors_graph, queries, mode="distance")
    assert ours_graph.shape == (queries.shape[0], train.shape[0]) and ours_graph.nnz == queries.shape[0] * 6
    radius = float(np.median(their_distances))
    our_graph = _quiet(ours.radius_neighbors_graph, queries, radius, mode="distance")
    their_graph = _quiet(theirs.radius_neighbors_graph, queries, radius, mode="distance")
    assert abs(our_graph - their_graph).max() < 1e-10
    assert our_graph.nnz == their_graph.nnz


def test_boolean_metrics_warn_as_scikit_learn_for_non_boolean_data():
    queries, train = _data("jaccard")
    with pytest.warns(DataConversionWarning, match="Data was converted to boolean for metric jaccard"):
        knn_gpu.kneighbors(queries, train, 3, metric="jaccard")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bool_result = knn_gpu.kneighbors(queries != 0, train != 0, 3, metric="jaccard")
    np.testing.assert_array_equal(bool_result[1], _reference_kneighbors(queries, train, 3, "jaccard")[1])


# -- callables --------------------------------------------------------------------------------------


def test_a_python_callable_of_two_rows_runs_on_the_host():
    queries, train = _data("canberra", seed=2)
    calls = []

    def l1(a, b, scale=1.0):
        calls.append(1)
        return scale * float(np.sum(np.abs(a - b)))

    distances, indices = knn_gpu.kneighbors(queries, train, 4, metric=l1, metric_params={"scale": 2.0})
    expected_distances, expected_indices = _reference_kneighbors(queries, train, 4, "cityblock")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, 2.0 * expected_distances, rtol=1e-12)
    assert len(calls) == queries.shape[0] * train.shape[0]
    model = knn_gpu.NearestNeighbors(n_neighbors=4, metric=l1).fit(train)
    np.testing.assert_array_equal(model.kneighbors(queries)[1], expected_indices)


def test_a_distance_metric_object_is_taken():
    queries, train = _data("canberra", seed=4)
    distances, indices = knn_gpu.kneighbors(queries, train, 4, metric=DistanceMetric.get_metric("chebyshev"))
    expected_distances, expected_indices = _reference_kneighbors(queries, train, 4, "chebyshev")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances)


def _block_l1(queries_block, train_block):
    xp = array_api_compat.array_namespace(queries_block)
    return xp.sum(xp.abs(queries_block[:, None, :] - train_block[None, :, :]), axis=2)


def test_a_vectorised_callable_runs_on_the_data_device_without_host_sync(backend, monkeypatch):
    if not backend.has_float64():
        pytest.skip("the exact dtype is float64")
    queries, train = _data("canberra", seed=6, num_train=300, num_queries=40)
    q, t = backend.asarray(queries), backend.asarray(train)
    strict_search = search.search_index
    if backend.name.startswith("array_api_strict"):

        def guarded_search(*args, **kwargs):
            with refusing_host_conversions(monkeypatch, backend.xp):
                return strict_search(*args, **kwargs)

        monkeypatch.setattr(index_module, "search_index", guarded_search)
    distances, indices = knn_gpu.kneighbors(q, t, 5, metric=BlockMetric(_block_l1), batch_size=8, memory_budget=2**16)
    expected_distances, expected_indices = _reference_kneighbors(queries, train, 5, "cityblock")
    np.testing.assert_array_equal(backend.check(indices, (40, 5), backend.xp.int64), expected_indices)
    np.testing.assert_allclose(backend.check(distances, (40, 5), backend.xp.float64), expected_distances, rtol=1e-12)


@pytest.mark.parametrize("metric", NEW_METRICS)
def test_no_host_synchronisation_in_the_batch_loop(monkeypatch, metric):
    """device1 stands for a GPU: every conversion to the host refused inside the search."""
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    queries, train = _data(metric, seed=8, num_train=200, num_queries=30)
    index = _quiet(build_index, xp.asarray(train, device=device), metric, xp=xp)
    with refusing_host_conversions(monkeypatch, xp):
        distances, indices = search_index(
            index, xp.asarray(queries, device=device), 6, batch_rows=7, memory_budget=2**15
        )
    assert distances.device == device
    np.testing.assert_array_equal(to_host(indices), _reference_kneighbors(queries, train, 6, metric)[1])


@pytest.mark.parametrize("method", ["standard", "numpy fast path"])
@pytest.mark.parametrize("metric", ["canberra", "mahalanobis", "nan_euclidean"])
def test_the_memory_budget_counts_each_metrics_temporaries(monkeypatch, metric, method):
    from knn_gpu._engine import direct

    rng = np.random.default_rng(9)
    train, queries = rng.standard_normal((3000, 24)), rng.standard_normal((500, 24))
    index = build_index(train, metric, xp=array_api_compat.numpy)
    if method == "standard":
        monkeypatch.setattr(direct, "block_method", lambda index: "metric")
    budget = 4 * 2**20
    (distances, indices), peak = traced_peak(lambda: search_index(index, queries, 10, memory_budget=budget))
    assert peak - distances.nbytes - indices.nbytes <= budget, peak / 2**20
    np.testing.assert_array_equal(indices[:5], _reference_kneighbors(queries[:5], train, 10, metric)[1])


# -- bad parameters: a clear ValueError before any search --------------------------------------------


@pytest.mark.parametrize(
    ("metric", "params", "features", "match"),
    [
        ("seuclidean", {"V": np.ones(3)}, 4, r"V must have one value per feature, shape \(4,\)"),
        ("seuclidean", {"V": np.array([1.0, 0.0, 1.0, 1.0])}, 4, "finite values > 0"),
        ("mahalanobis", {"VI": np.zeros((4, 4))}, 4, "VI is singular"),
        ("mahalanobis", {"VI": np.eye(3)}, 4, r"VI must be a \(4, 4\) matrix"),
        ("haversine", None, 3, "only valid in 2 dimensions"),
        ("braycurtis", {"V": np.ones(4)}, 4, "not parameters of metric='braycurtis'"),
        (BlockMetric(lambda q, t: q[:, :1] + t[:1, 0]), None, 4, "must return"),
        (BlockMetric(lambda q, t: [[0.0]]), None, 4, "must return an array of the data's namespace"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(monkeypatch, metric, params, features, match):
    rng = np.random.default_rng(10)
    train, queries = rng.standard_normal((20, features)), rng.standard_normal((3, features))

    def no_search(*args, **kwargs):
        raise AssertionError("the search started")

    monkeypatch.setattr(index_module, "search_index", no_search)
    with pytest.raises(ValueError, match=match):
        knn_gpu.kneighbors(queries, train, 2, metric=metric, metric_params=params)
    with pytest.raises(ValueError, match=match):
        knn_gpu.NearestNeighbors(n_neighbors=2, metric=metric, metric_params=params).fit(train).kneighbors(queries)


def test_a_singular_covariance_needs_vi():
    train = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])
    with pytest.raises(ValueError, match="covariance of the training rows is singular"):
        knn_gpu.kneighbors(train, train, 2, metric="mahalanobis")


def test_weights_distance_applies_as_the_registry_says():
    queries, train = _data("canberra")
    y = np.arange(train.shape[0]) % 3
    model = knn_gpu.KNeighborsClassifier(3, metric="canberra", weights="distance").fit(train, y)
    assert model.predict(queries).shape == (queries.shape[0],)
    with pytest.raises(ValueError, match="inner_product"):
        knn_gpu.KNNClassifier(3, metric="inner_product", weights="distance").fit(train, y)


# -- torch on a fake CUDA device: placement, device mixing and hidden host syncs refused ---------------


@pytest.mark.parametrize("metric", [*NEW_METRICS, "haversine", "nan_euclidean", "block"])
def test_on_a_fake_cuda_device_without_hidden_syncs(metric):
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    queries, train = _data("canberra" if metric == "block" else metric, seed=12, num_train=120, num_queries=20)
    params = None
    if metric == "seuclidean":
        params = {"V": np.var(train, axis=0, ddof=1)}  # given on the host: the default is read from the device
    if metric == "mahalanobis":
        params = {"VI": np.linalg.inv(np.cov(train.T))}
    searched = BlockMetric(_block_l1) if metric == "block" else metric
    # Only the validation's finiteness checks may sync (as in tests/test_fake_cuda.py).
    with fake_cuda(num_devices=1, allowed_sync_sites=ENGINE_SYNC_SITES):
        device = torch.device("cuda", 0)
        distances, indices = _quiet(
            knn_gpu.kneighbors,
            torch.asarray(queries, device=device),
            torch.asarray(train, device=device),
            5,
            metric=searched,
            metric_params=params,
            batch_size=6,
        )
        assert distances.device == device and indices.device == device
        with allow_sync():
            host_indices = indices.cpu().numpy()
            host_distances = distances.cpu().numpy()
    expected_distances, expected_indices = _reference_kneighbors(
        queries, train, 5, "cityblock" if metric == "block" else metric, params
    )
    np.testing.assert_array_equal(host_indices, expected_indices)
    np.testing.assert_allclose(host_distances, expected_distances, rtol=1e-12)


def test_out_of_core_takes_the_metrics_without_parameters_and_refuses_the_others():
    queries, train = _data("canberra", seed=13, num_train=80)
    model = knn_gpu.NearestNeighbors(n_neighbors=4, metric="canberra", out_of_core=True, memory_budget=2**12).fit(train)
    np.testing.assert_array_equal(model.kneighbors(queries)[1], _reference_kneighbors(queries, train, 4, "canberra")[1])
    with pytest.raises(ValueError, match="metric='seuclidean' has no out-of-core search"):
        knn_gpu.NearestNeighbors(metric="seuclidean", out_of_core=True).fit(train)


def test_weighted_minkowski_in_the_functions_is_refused_not_ignored():
    queries, train = _data("canberra")
    with pytest.raises(ValueError, match=r"metric_params\['w'\]"):
        knn_gpu.kneighbors(queries, train, 2, metric="minkowski", p=3, metric_params={"w": np.ones(5)})


@pytest.mark.parametrize("metric", [*NEW_METRICS])
def test_numpy_fast_path_and_the_standard_block_function_agree(monkeypatch, metric):
    """SciPy's cdist on NumPy and the standard-only block function: same keys, 0/0 cases (inf) included."""
    pytest.importorskip("scipy")
    from knn_gpu._engine import direct

    queries, train = _data(metric, seed=14)
    train[3] = 0.0  # all-zero and constant rows: the undefined cases
    queries[1] = 0.0
    queries[2] = 1.0
    index = _quiet(build_index, train, metric, xp=array_api_compat.numpy)
    assert direct.block_method(index) == "metric_cdist"
    fast = search_index(index, queries, 8)
    monkeypatch.setattr(direct, "block_method", lambda index: "metric")
    standard = search_index(index, queries, 8)
    np.testing.assert_array_equal(fast[1], standard[1])
    np.testing.assert_allclose(fast[0], standard[0], rtol=1e-12, atol=1e-15)
