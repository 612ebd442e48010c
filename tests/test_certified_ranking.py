"""The k-search certifies its candidates, and answers exactly where it cannot.

The ranking keys are float32 products (float16/bfloat16 data: float32; float64
data on a GPU: float32), so on some data they cannot separate the neighbours:
a tight cluster whose mean an outlier drags away, nearly parallel rows under
cosine, rows of large norm with nearly equal inner products, float64 data
tied below float32's precision. Before the certificate the answers there were
silently wrong (the outlier set: every query of 50). Each set below is checked
against the float64 oracle of tests/oracle.py on every backend, and the
fallback (``search.exact_neighbors``) is watched: it must run on these sets
and never on benign data, so a certificate that always passes or always fails
is caught.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import oracle_distances, oracle_inner_products, oracle_kneighbors, unambiguous_rows

import knn_gpu
from knn_gpu import KNN, KNNClassifier
from knn_gpu._engine import search
from knn_gpu._engine.search import build_index, search_index


def _watch_fallback(monkeypatch, stage: str = "answer_uncertified") -> list[int]:
    """Queries handed to a fallback stage, per call: ``answer_uncertified`` (the widened search, then
    exact distances for what it leaves) or ``exact_neighbors`` (exact distances to every row)."""
    calls = []
    original = getattr(search, stage)

    def watched(index, queries, k, *rest):
        calls.append(int(queries.shape[0]))
        return original(index, queries, k, *rest)

    monkeypatch.setattr(search, stage, watched)
    return calls


def _outlier_set(dtype=np.float32, spread=1e-3, far=1e4, seed=0):
    """A tight cluster at the origin and two far outliers: the shift (the rounded mean) is far from the cluster."""
    rng = np.random.default_rng(seed)
    train = spread * rng.standard_normal((1500, 16))
    train[[3, 700]] = far
    queries = spread * rng.standard_normal((50, 16))
    return queries.astype(dtype), train.astype(dtype)


def _parallel_set(seed=1):
    """Rows nearly parallel to one direction: cosine distances ~1e-8, below float32's resolution of the keys."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(16)
    train = base + 1e-4 * rng.standard_normal((1200, 16))
    queries = base + 1e-4 * rng.standard_normal((40, 16))
    return queries, train


def _large_norm_set(seed=2):
    """Rows of norm ~1e3 whose inner products with a query differ by ~1e-3: float32 keys tie."""
    rng = np.random.default_rng(seed)
    base = 1e3 * rng.standard_normal(16) / 4
    train = base + 1e-3 * rng.standard_normal((1200, 16))
    queries = rng.standard_normal((40, 16))
    return queries, train


def _assert_oracle(backend, distances, indices, queries, train, k, metric, gap):
    """Indices equal the oracle's wherever the k-th and (k+1)-th oracle distances are ``gap`` apart."""
    expected_distances, expected_indices = oracle_kneighbors(queries, train, k, metric)
    rows = unambiguous_rows(queries, train, k, metric, gap=gap)
    assert rows.mean() > 0.5, "the set is too tied to tell right from wrong"
    np.testing.assert_array_equal(backend.to_numpy(indices)[rows], expected_indices[rows])
    found = backend.to_numpy(distances).astype(np.float64)
    np.testing.assert_allclose(found, expected_distances, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_an_outlier_dragging_the_shift_is_answered_exactly(backend, metric, monkeypatch):
    queries, train = _outlier_set()
    calls = _watch_fallback(monkeypatch)
    exact_calls = _watch_fallback(monkeypatch, "exact_neighbors")
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), 5, metric=metric)
    backend.check(indices, (50, 5), backend.xp.int64)
    backend.check(distances, (50, 5), backend.xp.float32)
    q64, t64 = queries.astype(np.float64), train.astype(np.float64)
    _assert_oracle(backend, distances, indices, q64, t64, 5, metric, gap=1e-9)
    assert sum(calls) > 0, "the float32 keys cannot separate this cluster: the fallback must have run"
    assert 0 < sum(exact_calls) <= sum(calls), "eight times the candidates cannot either: exact distances"


def test_half_precision_outlier_set(backend, monkeypatch):
    if not hasattr(backend.xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")
    queries, train = _outlier_set(np.float16, spread=1e-2, far=3e3)
    calls = _watch_fallback(monkeypatch)
    q, t = backend.xp.asarray(backend.asarray(queries), dtype=backend.xp.float16), backend.asarray(train)
    t = backend.xp.astype(t, backend.xp.float16)
    distances, indices = knn_gpu.kneighbors(q, t, 5)
    backend.check(indices, (50, 5), backend.xp.int64)
    _assert_oracle(backend, distances, indices, queries.astype(float), train.astype(float), 5, "euclidean", gap=1e-4)
    assert sum(calls) > 0


def test_nearly_parallel_rows_under_cosine(backend, monkeypatch):
    queries, train = _parallel_set()
    if not backend.has_float64():
        pytest.skip(f"{backend.name} has no float64: the set's distances are below float32's resolution")
    calls = _watch_fallback(monkeypatch)
    distances, indices = knn_gpu.kneighbors(
        backend.asarray(queries.astype(np.float32)), backend.asarray(train.astype(np.float32)), 4, metric="cosine"
    )
    q32, t32 = queries.astype(np.float32).astype(float), train.astype(np.float32).astype(float)
    expected = oracle_distances(q32, t32, "cosine")
    rows = unambiguous_rows(q32, t32, 4, "cosine", gap=1e-12)
    assert rows.mean() > 0.5
    np.testing.assert_array_equal(
        backend.to_numpy(indices)[rows], np.argsort(expected, axis=1, kind="stable")[rows, :4]
    )
    assert sum(calls) > 0


def test_large_norms_under_inner_product(backend, monkeypatch):
    queries, train = _large_norm_set()
    calls = _watch_fallback(monkeypatch)
    q, t = backend.asarray(queries.astype(np.float32)), backend.asarray(train.astype(np.float32))
    products, indices = knn_gpu.kneighbors(q, t, 4, metric="inner_product")
    q32, t32 = queries.astype(np.float32).astype(float), train.astype(np.float32).astype(float)
    rows = unambiguous_rows(q32, t32, 4, "inner_product", gap=1e-7)
    assert rows.mean() > 0.5
    _, expected_indices = oracle_kneighbors(q32, t32, 4, "inner_product")
    np.testing.assert_array_equal(backend.to_numpy(indices)[rows], expected_indices[rows])
    np.testing.assert_allclose(backend.to_numpy(products), np.sort(q32 @ t32.T, axis=1)[:, ::-1][:, :4], rtol=1e-6)
    assert sum(calls) > 0


def _near_tie_set(seed=3):
    """``(query, train, radii)``: 600 float64 rows at distances 1 + i * 1e-10 from one query, shuffled."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((600, 8))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = 1 + 1e-10 * rng.permutation(600)
    query = rng.standard_normal((1, 8))
    return query, query + radii[:, None] * directions, radii


def test_float64_ranked_in_float32_near_ties(backend, monkeypatch):
    """The float64 path (float32 keys): rows at distances 1 + i * 1e-10 from the query, shuffled."""
    if not backend.has_float64():
        pytest.skip(f"{backend.name} has no float64")
    query, train, radii = _near_tie_set()
    calls = _watch_fallback(monkeypatch)
    xp = backend.xp
    index = build_index(backend.asarray(train), "euclidean", xp=xp, rank_dtype=xp.float32)
    distances, indices = search_index(index, backend.asarray(query), 7)
    np.testing.assert_array_equal(backend.to_numpy(indices)[0], np.argsort(radii, kind="stable")[:7])
    np.testing.assert_allclose(backend.to_numpy(distances)[0], np.sort(radii)[:7], rtol=1e-13)
    assert calls == [1]


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product"])
def test_benign_data_never_falls_back(backend, metric, monkeypatch):
    """Random data: every query certified (the bound is not vacuous), answers the oracle's."""
    rng = np.random.default_rng(4)
    train = rng.standard_normal((3000, 24)).astype(np.float32)
    queries = rng.standard_normal((100, 24)).astype(np.float32)
    calls = _watch_fallback(monkeypatch)
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), 10, metric=metric)
    assert calls == []
    q, t = queries.astype(float), train.astype(float)
    rows = unambiguous_rows(q, t, 10, metric, gap=1e-6)
    np.testing.assert_array_equal(backend.to_numpy(indices)[rows], oracle_kneighbors(q, t, 10, metric)[1][rows])


def test_uncertified_queries_keep_their_places_across_batches(monkeypatch):
    """Certified and uncertified queries interleaved, in batches of 3: each answer lands on its own row."""
    cluster_queries, cluster = _outlier_set()
    rng = np.random.default_rng(5)
    spread = 100 + rng.standard_normal((500, 16))  # well separated at float32's precision: certified
    train = np.concatenate([cluster, spread]).astype(np.float32)
    queries = np.empty((60, 16), dtype=np.float32)
    queries[::6] = 100 + rng.standard_normal((10, 16))
    queries[np.arange(60) % 6 != 0] = cluster_queries
    calls = _watch_fallback(monkeypatch)
    distances, indices = knn_gpu.kneighbors(queries, train, 5, batch_size=3)
    assert 50 <= sum(calls) < 60, "the cluster's queries fall back, most of the spread group's do not"
    q64, t64 = queries.astype(float), train.astype(float)
    rows = unambiguous_rows(q64, t64, 5)
    np.testing.assert_array_equal(indices[rows], oracle_kneighbors(q64, t64, 5)[1][rows])


def test_estimators_and_out_of_core_searches_are_exact_on_the_outlier_set(monkeypatch):
    queries, train = _outlier_set()
    targets = np.arange(train.shape[0], dtype=np.float64) % 7
    labels = np.arange(train.shape[0]) % 3
    q64, t64 = queries.astype(float), train.astype(float)
    _, expected = oracle_kneighbors(q64, t64, 5)
    rows = unambiguous_rows(q64, t64, 5)
    calls = _watch_fallback(monkeypatch)
    predicted = KNN(5).fit(train, targets).predict(queries)
    np.testing.assert_allclose(predicted[rows], targets[expected].mean(axis=1)[rows], rtol=1e-6)
    proba = KNNClassifier(5).fit(train, labels).predict_proba(queries)
    votes = np.stack([(labels[expected] == c).sum(axis=1) for c in range(3)], axis=1) / 5
    np.testing.assert_allclose(proba[rows], votes[rows])
    _, streamed = knn_gpu.kneighbors(queries, train, 5, out_of_core=True, memory_budget=2**16)
    np.testing.assert_array_equal(streamed[rows], expected[rows])
    assert len(calls) >= 3


def test_exact_neighbors_is_the_oracle_with_ties_to_the_lower_index(backend):
    """The fallback alone: integer data with many exact ties, every metric of the product plan."""
    rng = np.random.default_rng(6)
    train = rng.integers(-3, 4, size=(300, 5)).astype(np.float32)
    queries = rng.integers(-3, 4, size=(12, 5)).astype(np.float32)
    for metric in ("euclidean", "sqeuclidean", "inner_product"):
        rows = backend.asarray(train)
        index = build_index(rows, metric, xp=backend.xp)
        expected_distances, expected_indices = oracle_kneighbors(queries.astype(float), train.astype(float), 9, metric)
        found = search.exact_neighbors(index, backend.asarray(queries), 9, 4096)
        np.testing.assert_array_equal(backend.to_numpy(found[1]), expected_indices)
        np.testing.assert_allclose(backend.to_numpy(found[0]), expected_distances, rtol=1e-12)


def _random_hard_set(rng):
    """Data the float32 keys often cannot separate: any offset up to 1e4, spreads down to 1e-4, outliers, ties."""
    dim, num_samples = int(rng.integers(1, 40)), int(rng.integers(50, 3000))
    k = int(rng.integers(1, min(num_samples, 60)))
    scale, offset = 10.0 ** rng.uniform(-4, 3), 10.0 ** rng.uniform(-2, 4) * rng.standard_normal(dim)
    train = offset + scale * rng.standard_normal((num_samples, dim))
    if rng.random() < 0.3:
        train[rng.integers(0, num_samples, 3)] += 10.0 ** rng.uniform(1, 5)  # outliers
    if rng.random() < 0.3:
        train = np.round(train)  # integers: exact ties
    queries = offset + scale * rng.standard_normal((30, dim))
    if rng.random() < 0.5:
        queries[:10] = train[rng.integers(0, num_samples, 10)]
    metric = str(rng.choice(["euclidean", "sqeuclidean", "cosine", "inner_product"]))
    return queries, train, k, metric


def test_random_hard_sets_match_the_oracle():
    """60 random hard sets, float32 and float64: the oracle's neighbours wherever its k-th is not tied.

    Before the certificate, 3 of these 120 searches answered wrong neighbours (trials 8, 41 and 56:
    sqeuclidean and euclidean in float32); 10 of 300 over the first 150 trials.
    """
    rng = np.random.default_rng(123)
    for trial in range(60):
        queries, train, k, metric = _random_hard_set(rng)
        for dtype in (np.float32, np.float64):
            q, t = queries.astype(dtype), train.astype(dtype)
            _, indices = knn_gpu.kneighbors(q, t, k, metric=metric)
            q64, t64 = q.astype(np.float64), t.astype(np.float64)
            expected_distances, expected = oracle_kneighbors(q64, t64, k, metric)
            rows = unambiguous_rows(q64, t64, k, metric, gap=1e-12)
            matrix = oracle_distances(q64, t64, metric)
            for row in np.flatnonzero(rows):  # the same set, in order up to the last bit of a distance
                assert set(indices[row]) == set(expected[row]), (trial, metric, dtype, row)
                found = matrix[row][indices[row]]
                np.testing.assert_allclose(found, expected_distances[row], rtol=1e-12, atol=1e-12)


def test_a_margin_too_small_costs_fallbacks_never_wrong_answers(monkeypatch):
    """One candidate beyond k: some queries cannot be certified; eight times the candidates settles them."""
    monkeypatch.setattr(search, "EXTRA_CANDIDATES", 1)
    monkeypatch.setattr(search, "FULL_MARGIN_UP_TO", 0)
    assert search.candidate_count(10, 5000, 64) == 11
    rng = np.random.default_rng(7)
    train = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((300, 64)).astype(np.float32)
    widened = _watch_fallback(monkeypatch)
    exact = _watch_fallback(monkeypatch, "exact_neighbors")
    distances, indices = knn_gpu.kneighbors(queries, train, 10)
    assert sum(widened) > 0 and exact == [], (widened, exact)
    q, t = queries.astype(float), train.astype(float)
    expected_distances, expected = oracle_kneighbors(q, t, 10)
    rows = unambiguous_rows(q, t, 10)
    np.testing.assert_array_equal(indices[rows], expected[rows])
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6)


RANGE_CASES = [
    ("euclidean", 1e20),  # squared norms ~1e41: overflowed float32 (NaN keys) before the scale
    ("euclidean", 1e-30),  # squared norms ~1e-59: underflowed to zero (about half the answers wrong)
    ("sqeuclidean", 1e-25),
    ("cosine", 1e-30),
    ("inner_product", 1e-25),
]


def _far_out_set(magnitude, dtype=np.float32, seed=9):
    rng = np.random.default_rng(seed)
    train = magnitude * rng.standard_normal((2000, 16))
    queries = magnitude * rng.standard_normal((30, 16))
    return queries.astype(dtype), train.astype(dtype)


def _expected(queries, train, k, metric):
    """The float64 oracle's (public distances, indices): inner products largest first."""
    q64, t64 = queries.astype(np.float64), train.astype(np.float64)
    if metric == "inner_product":
        return oracle_inner_products(q64, t64, k)
    return oracle_kneighbors(q64, t64, k, metric)


@pytest.mark.parametrize(("metric", "magnitude"), RANGE_CASES)
def test_rows_beyond_float32s_range_are_ranked_scaled(backend, metric, magnitude, monkeypatch):
    """Random rows of norm ~1e20 or ~1e-30: the oracle's answers, and no fallback (the scaled keys separate them)."""
    queries, train = _far_out_set(magnitude)
    calls = _watch_fallback(monkeypatch)
    distances, indices = knn_gpu.kneighbors(backend.asarray(queries), backend.asarray(train), 5, metric=metric)
    backend.check(indices, (30, 5), backend.xp.int64)
    backend.check(distances, (30, 5), backend.xp.float32)
    expected_distances, expected_indices = _expected(queries, train, 5, metric)
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances.astype(np.float32), rtol=1e-6, atol=0)
    assert calls == []
    index = build_index(backend.asarray(train), metric, xp=backend.xp)
    assert index.rank_scale == (1.0 if metric == "cosine" else 2.0 ** -np.frexp(float(np.abs(train).max()))[1])


def test_rows_in_float32s_range_are_not_scaled(backend):
    queries, train = _far_out_set(1e6)
    assert build_index(backend.asarray(train), "euclidean", xp=backend.xp).rank_scale == 1.0


@pytest.mark.parametrize("magnitude", [1e100, 1e-100])
def test_float64_rows_beyond_float32s_range_ranked_in_float32(backend, magnitude, monkeypatch):
    """The GPU's float64 path: float64 rows far beyond float32's range are ranked in float32, scaled."""
    if not backend.has_float64():
        pytest.skip(f"{backend.name} has no float64")
    queries, train = _far_out_set(magnitude, np.float64)
    calls = _watch_fallback(monkeypatch)
    xp = backend.xp
    index = build_index(backend.asarray(train), "euclidean", xp=xp, rank_dtype=xp.float32)
    assert index.rank_dtype == xp.float32 and index.rank_scale != 1.0
    distances, indices = search_index(index, backend.asarray(queries), 5)
    backend.check(indices, (30, 5), xp.int64)
    backend.check(distances, (30, 5), xp.float64)
    expected_distances, expected_indices = _expected(queries, train, 5, "euclidean")
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances, rtol=1e-13)
    assert calls == []


@pytest.mark.parametrize("magnitude", [1e25, 1e-25])
def test_bfloat16_rows_beyond_float32s_range(backend, magnitude, monkeypatch):
    """bfloat16 has float32's range: its float32 keys are scaled the same way (torch only)."""
    if not hasattr(backend.xp, "bfloat16"):
        pytest.skip(f"{backend.name} has no bfloat16")
    queries, train = _far_out_set(magnitude)
    xp = backend.xp
    q, t = xp.astype(backend.asarray(queries), xp.bfloat16), xp.astype(backend.asarray(train), xp.bfloat16)
    calls = _watch_fallback(monkeypatch)
    distances, indices = knn_gpu.kneighbors(q, t, 5)
    backend.check(indices, (30, 5), xp.int64)
    host_queries = backend.to_numpy(xp.astype(q, xp.float32))
    host_train = backend.to_numpy(xp.astype(t, xp.float32))
    expected_distances, expected_indices = _expected(host_queries, host_train, 5, "euclidean")
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(xp.astype(distances, xp.float32)), expected_distances, rtol=1e-2)
    assert calls == []
