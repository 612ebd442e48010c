"""Split ranking (``build_index(rank_split=True)``): bfloat16 pieces, certified, exact on every backend.

The pieces and their products are standard arithmetic, so every backend runs
the code a GPU runs, but for the last step (torch-CUDA casts the pieces to
bfloat16 and multiplies them on tensor cores with a float32 output; checked on
the fake CUDA device with ``torch.mm`` stood in for). Each set is compared with
the float64 oracle of tests/oracle.py; the adversarial sets are those of
tests/test_certified_ranking.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import oracle_inner_products, oracle_kneighbors
from test_certified_ranking import (
    _far_out_set,
    _large_norm_set,
    _near_tie_set,
    _outlier_set,
    _parallel_set,
    _watch_fallback,
)

from knn_gpu._engine import split_ranking
from knn_gpu._engine.radius import radius_search_index
from knn_gpu._engine.search import build_index, search_index
from knn_gpu._engine.split_ranking import (
    ACCUMULATION_UNIT,
    DROPPED,
    query_pieces,
    split_pieces,
    split_product,
    stored_pieces,
)


def _significant_bits(values: np.ndarray) -> int:
    """The most significant bits any of the float64 ``values`` needs."""
    mantissas, _ = np.frexp(values[values != 0])
    bits = 0
    while not np.all(mantissas * 2.0**bits == np.round(mantissas * 2.0**bits)):
        bits += 1
    return bits


@pytest.mark.parametrize("magnitude", [1.0, 1e-30, 1e30])
def test_pieces_have_eight_bits_and_leave_two_to_the_minus_sixteen(backend, magnitude):
    rng = np.random.default_rng(0)
    x = (magnitude * rng.standard_normal((300, 17))).astype(np.float32)
    x[0, :3] = [0.0, 1.0 + 2.0**-10 + 2.0**-20, -(2.0**-126)]
    hi, lo = split_pieces(backend.asarray(x), xp=backend.xp)
    hi, lo = backend.check(hi, x.shape, backend.xp.float32), backend.check(lo, x.shape, backend.xp.float32)
    hi, lo = hi.astype(np.float64), lo.astype(np.float64)
    assert _significant_bits(hi) <= 8 and _significant_bits(lo) <= 8
    rest = np.abs(x.astype(np.float64) - hi - lo)
    assert np.all(rest <= 2.0**-16 * np.abs(x)), rest.max()
    assert hi[0, 1] == 1.0 and lo[0, 1] == 2.0**-10  # the 2**-20 is what is dropped


def test_split_product_is_within_its_bound(backend):
    """Rows of mixed magnitudes: |keys - exact| <= (DROPPED + gamma) sum |a| |b| (gamma with truncation's unit)."""
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((120, 65)) * 10.0 ** rng.integers(-3, 4, size=(120, 1))).astype(np.float32)
    b = (rng.standard_normal((150, 65)) * 10.0 ** rng.integers(-3, 4, size=(1, 65))).astype(np.float32)
    xp = backend.xp
    keys = split_product(query_pieces(backend.asarray(a), xp=xp), stored_pieces(backend.asarray(b), xp=xp), xp=xp)
    keys = backend.check(keys, (120, 150), xp.float32).astype(np.float64)
    exact = a.astype(np.float64) @ b.astype(np.float64).T
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)).T
    terms = 66 * ACCUMULATION_UNIT
    bound = (DROPPED + terms / (1 - terms) + 2 * ACCUMULATION_UNIT) * scale
    assert np.all(np.abs(keys - exact) <= bound)
    # Not vacuous: the split drops ~2**-16 of each term, so here it errs by far more than float32 products.
    plain = (a @ b.T).astype(np.float64)
    assert np.abs(keys - exact).max() > 4 * np.abs(plain - exact).max()


def _search(backend, queries, train, k, metric, **options):
    xp = backend.xp
    index = build_index(backend.asarray(train), metric, xp=xp, rank_split=True, **options)
    assert index.split_rows is not None
    return search_index(index, backend.asarray(queries), k)


def _expected(queries, train, k, metric):
    q64, t64 = queries.astype(np.float64), train.astype(np.float64)
    if metric == "inner_product":
        products, indices = oracle_inner_products(q64, t64, k)
        return -products, indices  # the engine orders by the negated product
    return oracle_kneighbors(q64, t64, k, metric)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine", "inner_product"])
@pytest.mark.parametrize("dim", [8, 64, 300])
def test_random_data_is_the_oracles_without_fallback(backend, metric, dim, monkeypatch):
    rng = np.random.default_rng(dim)
    train = rng.standard_normal((3000, dim)).astype(np.float32)
    queries = rng.standard_normal((60, dim)).astype(np.float32)
    calls = _watch_fallback(monkeypatch)
    distances, indices = _search(backend, queries, train, 10, metric)
    backend.check(indices, (60, 10), backend.xp.int64)
    expected_distances, expected_indices = _expected(queries, train, 10, metric)
    np.testing.assert_array_equal(backend.to_numpy(indices), expected_indices)
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances.astype(np.float32), rtol=1e-6)
    assert calls == [], "the split's bound must not be vacuous on random data"


@pytest.mark.parametrize(
    "case", ["outlier cluster", "nearly parallel (cosine)", "large norms (inner product)", "far out", "tiny"]
)
def test_adversarial_sets_are_the_oracles(backend, case):
    if case == "outlier cluster":
        (queries, train), metric = _outlier_set(), "euclidean"
    elif case == "nearly parallel (cosine)":
        (queries, train), metric = _parallel_set(), "cosine"
        queries, train = queries.astype(np.float32), train.astype(np.float32)
    elif case == "large norms (inner product)":
        (queries, train), metric = _large_norm_set(), "inner_product"
        queries, train = queries.astype(np.float32), train.astype(np.float32)
    else:
        (queries, train), metric = _far_out_set(1e20 if case == "far out" else 1e-30), "euclidean"
    distances, indices = _search(backend, queries, train, 5, metric)
    expected_distances, expected_indices = _expected(queries, train, 5, metric)
    found = backend.to_numpy(indices)
    # Exact ties in real arithmetic may be ordered by float64's rounding: compare the distances there.
    same = (found == expected_indices).all(axis=1)
    assert same.mean() > 0.9
    np.testing.assert_allclose(backend.to_numpy(distances), expected_distances.astype(np.float32), rtol=1e-6, atol=0)


def test_float64_near_ties(backend):
    """float64 rows at distances 1 + i * 1e-10 from the query: the split keys cannot tell them apart."""
    if not backend.has_float64():
        pytest.skip(f"{backend.name} has no float64")
    query, train, radii = _near_tie_set()
    distances, indices = _search(backend, query, train, 7, "euclidean")
    np.testing.assert_array_equal(backend.to_numpy(indices)[0], np.argsort(radii, kind="stable")[:7])
    np.testing.assert_allclose(backend.to_numpy(distances)[0], np.sort(radii)[:7], rtol=1e-13)


def test_radius_search_keeps_rows_at_the_radius(backend):
    """Integer data, every training row twice: rows exactly at the radius are in."""
    rng = np.random.default_rng(5)
    base = rng.integers(-3, 4, size=(150, 4))
    train = np.concatenate([base, base[::-1]]).astype(np.float32)
    queries = rng.integers(-3, 4, size=(20, 4)).astype(np.float32)
    xp = backend.xp
    index = build_index(backend.asarray(train), "euclidean", xp=xp, rank_split=True)
    distances, indices, offsets = radius_search_index(index, backend.asarray(queries), 2.0)
    exact = np.sqrt(((queries[:, None, :].astype(float) - train[None]) ** 2).sum(-1))
    expected = [np.flatnonzero(row <= 2.0) for row in exact]
    offsets, indices = backend.to_numpy(offsets), backend.to_numpy(indices)
    np.testing.assert_array_equal(np.diff(offsets), [len(found) for found in expected])
    for row, found in enumerate(expected):
        np.testing.assert_array_equal(np.sort(indices[offsets[row] : offsets[row + 1]]), found)


def test_half_precision_rows_are_refused(backend):
    if not hasattr(backend.xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")
    train = backend.xp.astype(backend.asarray(np.ones((5, 3))), backend.xp.float16)
    with pytest.raises(ValueError, match="rank_split"):
        build_index(train, "euclidean", xp=backend.xp, rank_split=True)


def test_torch_cuda_multiplies_bfloat16_pieces_with_a_float32_output(monkeypatch):
    """On the fake CUDA device: the pieces are bfloat16 (exact casts), each product a ``torch.mm`` with
    ``out_dtype=float32`` (``torch.mm`` and ``torch.addmm``, stood in for by float32 products of the same
    values, which a CPU can run),
    no hidden host sync in the search, and the answers are the NumPy split search's."""
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    seen = []

    def tensor_core_mm(left, right, *, out_dtype=None):
        seen.append(("mm", left.dtype, right.dtype, out_dtype))
        assert left.dtype == right.dtype == torch.bfloat16 and out_dtype == torch.float32
        return torch.mm(left.to(torch.float32), right.to(torch.float32))

    def tensor_core_addmm(bias, left, right, *, out_dtype=None):
        seen.append(("addmm", left.dtype, right.dtype, out_dtype))
        assert bias.dtype == out_dtype == torch.float32 and left.dtype == right.dtype == torch.bfloat16
        return bias + torch.mm(left.to(torch.float32), right.to(torch.float32))

    rng = np.random.default_rng(6)
    train = rng.standard_normal((700, 12)).astype(np.float32)
    queries = rng.standard_normal((40, 12)).astype(np.float32)
    import array_api_compat.numpy as host_xp

    expected = search_index(build_index(train, "euclidean", xp=host_xp, rank_split=True), queries, 6)
    monkeypatch.setattr(split_ranking, "_tensor_core_mm", tensor_core_mm)
    monkeypatch.setattr(split_ranking, "_tensor_core_addmm", tensor_core_addmm)
    with fake_cuda(num_devices=1, allowed_sync_sites=ENGINE_SYNC_SITES):
        import array_api_compat.torch as xp

        device = torch.device("cuda", 0)
        index = build_index(torch.asarray(train, device=device), "euclidean", xp=xp, rank_split=True)
        assert index.split_rows[0].dtype == torch.bfloat16
        distances, indices = search_index(index, torch.asarray(queries, device=device), 6)
        assert distances.device == device
        with allow_sync():
            found = (distances.cpu().numpy(), indices.cpu().numpy())
    assert {call[0] for call in seen} == {"mm", "addmm"}
    np.testing.assert_array_equal(found[1], expected[1])
    np.testing.assert_allclose(found[0], expected[0], rtol=1e-6)


def test_the_switch_is_checked_and_restored():
    import knn_gpu

    with pytest.raises(ValueError, match="ranking must be one of 'float32', 'bf16x3'; got 'bf16'"):
        knn_gpu.set_config(ranking="bf16")
    with pytest.raises(RuntimeError, match="inside"), knn_gpu.config_context(ranking="bf16x3"):
        assert knn_gpu.get_config() == {"ranking": "bf16x3"}
        raise RuntimeError("inside")
    assert knn_gpu.get_config() == {"ranking": "float32"}


def test_the_switch_leaves_hosts_without_tensor_cores_on_float32(backend):
    """NumPy, array_api_strict, torch on the CPU: the float32 product, which the split cannot beat there."""
    import knn_gpu

    rng = np.random.default_rng(7)
    train, queries = rng.standard_normal((400, 6)), rng.standard_normal((9, 6))
    with knn_gpu.config_context(ranking="bf16x3"):
        model = knn_gpu.KNN(4, backend=None).fit(backend.asarray(train), backend.asarray(np.zeros(400)))
    assert model._index.store.split_rows is None
    _, indices = model.kneighbors(backend.asarray(queries))
    np.testing.assert_array_equal(backend.to_numpy(indices), oracle_kneighbors(queries, train, 4)[1])


@pytest.mark.parametrize("ranking", ["float32", "bf16x3"])
def test_the_switch_picks_tensor_cores_for_a_fitted_model_on_torch_cuda(ranking, monkeypatch):
    """On the fake CUDA device: a KNN fitted under config_context(ranking="bf16x3") ranks by the split
    (float32 otherwise), and answers as NumPy does; the setting is read at fit."""
    torch = pytest.importorskip("torch")
    from fake_cuda import ENGINE_SYNC_SITES, allow_sync, fake_cuda

    import knn_gpu

    def tensor_core_mm(left, right, *, out_dtype=None):
        return torch.mm(left.to(torch.float32), right.to(torch.float32))

    def tensor_core_addmm(bias, left, right, *, out_dtype=None):
        return bias + torch.mm(left.to(torch.float32), right.to(torch.float32))

    monkeypatch.setattr(split_ranking, "_tensor_core_mm", tensor_core_mm)
    monkeypatch.setattr(split_ranking, "_tensor_core_addmm", tensor_core_addmm)
    rng = np.random.default_rng(8)
    train = rng.standard_normal((900, 20)).astype(np.float32)
    queries = rng.standard_normal((30, 20)).astype(np.float32)
    expected_distances, expected_indices = knn_gpu.kneighbors(queries, train, 5)
    with fake_cuda(num_devices=1, allowed_sync_sites=ENGINE_SYNC_SITES):
        device = torch.device("cuda", 0)
        with knn_gpu.config_context(ranking=ranking):
            model = knn_gpu.KNN(5).fit(torch.asarray(train, device=device), torch.zeros(900, device=device))
        assert (model._index.store.split_rows is not None) == (ranking == "bf16x3")
        distances, indices = model.kneighbors(torch.asarray(queries, device=device))
        with allow_sync():
            found = distances.cpu().numpy(), indices.cpu().numpy()
    np.testing.assert_array_equal(found[1], expected_indices)
    np.testing.assert_allclose(found[0], expected_distances, rtol=1e-6)
