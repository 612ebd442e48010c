"""CPU torch tensors are searched by NumPy on zero-copy views, and answered as torch tensors.

``knn_gpu.kneighbors`` and ``knn_gpu.radius_neighbors`` hand CPU float
tensors to NumPy's search (threads over batches, single-threaded BLAS) and
wrap the answers back into tensors, and so do the estimators fitted with
``backend=None`` (their fitted rows stay tensors); ``backend="torch"``
forces torch's kernels. These tests pin down what a torch user sees: tensors in, tensors out (CPU, the same dtypes as NumPy's answer), the
same neighbours as the float64 oracle, the caller's tensors untouched; and
where NumPy must not take the tensors (autograd, bfloat16, a
:class:`~knn_gpu.BlockMetric` written for torch), torch itself computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import oracle_kneighbors, unambiguous_rows

import knn_gpu
from knn_gpu import KNN, KNNClassifier
from knn_gpu._lib.backends import as_torch_tensors, numpy_views

torch = pytest.importorskip("torch")


def _data(n_queries: int = 40, n_train: int = 300, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_queries, dim)), rng.standard_normal((n_train, dim))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kneighbors_on_tensors_answers_tensors_like_numpy(dtype):
    queries, train = _data()
    queries, train = queries.astype(dtype), train.astype(dtype)
    tq, tt = torch.from_numpy(queries.copy()), torch.from_numpy(train.copy())
    distances, indices = knn_gpu.kneighbors(tq, tt, 5)
    assert isinstance(distances, torch.Tensor) and isinstance(indices, torch.Tensor)
    assert distances.device.type == "cpu" and indices.device.type == "cpu"
    assert distances.dtype == getattr(torch, dtype) and indices.dtype == torch.int64
    assert tuple(distances.shape) == tuple(indices.shape) == (40, 5)
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 5)
    rows = unambiguous_rows(queries, train, 5, gap=1e-5)
    np.testing.assert_array_equal(indices.numpy()[rows], expected_indices[rows])
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-5, atol=1e-5)
    np_distances, np_indices = knn_gpu.kneighbors(queries, train, 5)
    np.testing.assert_array_equal(indices.numpy(), np_indices)
    np.testing.assert_array_equal(distances.numpy(), np_distances)
    # the caller's tensors are neither modified nor aliased by the answer
    np.testing.assert_array_equal(tq.numpy(), queries)
    np.testing.assert_array_equal(tt.numpy(), train)


def test_tensors_are_viewed_not_copied():
    queries, train = _data()
    tq = torch.from_numpy(queries.astype(np.float32))
    views = numpy_views(tq, tq[:, ::2])
    assert views is not None
    assert np.shares_memory(views[0], queries.astype(np.float32)) is False  # sanity: a different buffer
    assert views[0].__array_interface__["data"][0] == tq.data_ptr()
    assert views[1].strides == (tq.stride(0) * 4, 8)  # the strided slice is viewed as is


def _spy_on_index_builds(monkeypatch) -> list:
    """The type of every training array the engine builds an index from."""
    seen = []
    original = knn_gpu._engine.index.build_index

    def spy(train, *args, **kwargs):
        seen.append(type(train))
        return original(train, *args, **kwargs)

    monkeypatch.setattr(knn_gpu._engine.index, "build_index", spy)
    return seen


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: t.to(torch.bfloat16), id="bfloat16"),
        pytest.param(lambda t: t.requires_grad_(True), id="requires_grad"),
    ],
)
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")
def test_tensors_numpy_must_not_take_stay_with_torch(make, monkeypatch):
    queries, train = _data()
    tq, tt = make(torch.from_numpy(queries.astype(np.float32))), make(torch.from_numpy(train.astype(np.float32)))
    assert numpy_views(tq, tt) is None
    seen = _spy_on_index_builds(monkeypatch)
    distances, indices = knn_gpu.kneighbors(tq, tt, 4)
    assert seen == [torch.Tensor]  # torch searched its own tensors
    assert isinstance(indices, torch.Tensor) and tuple(indices.shape) == (40, 4)
    as_float64 = tq.detach().to(torch.float64).numpy(), tt.detach().to(torch.float64).numpy()
    _, expected_indices = oracle_kneighbors(*as_float64, 4)
    rows = unambiguous_rows(*as_float64, 4, gap=1e-1)
    np.testing.assert_array_equal(indices.numpy()[rows], expected_indices[rows])


def test_integer_tensors_become_float32_tensors_numpy_searches(monkeypatch):
    queries, train = _data()
    tq, tt = torch.from_numpy((queries * 10).astype(np.int32)), torch.from_numpy((train * 10).astype(np.int32))
    seen = _spy_on_index_builds(monkeypatch)
    distances, indices = knn_gpu.kneighbors(tq, tt, 4)
    assert seen == [np.ndarray]
    assert isinstance(distances, torch.Tensor) and distances.dtype == torch.float32
    expected_distances, expected_indices = oracle_kneighbors(tq.numpy().astype(float), tt.numpy().astype(float), 4)
    rows = unambiguous_rows(tq.numpy().astype(float), tt.numpy().astype(float), 4, gap=1e-3)
    np.testing.assert_array_equal(indices.numpy()[rows], expected_indices[rows])
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-6)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_estimators_on_tensors_search_numpy_views_unless_torch_is_asked(backend, monkeypatch):
    queries, train = _data()
    rng = np.random.default_rng(1)
    targets, labels = rng.standard_normal(train.shape[0]), rng.integers(0, 3, train.shape[0])
    tq, tt = torch.from_numpy(queries.astype(np.float32)), torch.from_numpy(train.astype(np.float32))
    seen = _spy_on_index_builds(monkeypatch)
    model = KNN(5, backend=backend).fit(tt, torch.from_numpy(targets))
    classifier = KNNClassifier(5, backend=backend).fit(tt, torch.from_numpy(labels))
    assert seen == [np.ndarray if backend is None else torch.Tensor] * 2
    assert model._index.viewed is (backend is None)
    # what scikit-learn's array-API rule asks: the fitted rows in the caller's namespace, whatever computes
    assert isinstance(model._engine_X, torch.Tensor)
    reference = KNN(5).fit(train.astype(np.float32), targets)
    reference_classifier = KNNClassifier(5).fit(train.astype(np.float32), labels)
    answers = {
        "predict": (model.predict(tq), reference.predict(queries.astype(np.float32))),
        "kneighbors": (model.kneighbors(tq)[1], reference.kneighbors(queries.astype(np.float32))[1]),
        "leave-one-out": (model.kneighbors()[1], reference.kneighbors()[1]),
        "votes": (classifier.predict(tq), reference_classifier.predict(queries.astype(np.float32))),
        "shares": (classifier.predict_proba(tq), reference_classifier.predict_proba(queries.astype(np.float32))),
    }
    for name, (got, want) in answers.items():
        assert isinstance(got, torch.Tensor) and got.device.type == "cpu", name
        assert got.numpy().dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, err_msg=name)


def test_drop_in_regressor_with_distance_weights_on_viewed_tensors():
    sklearn_neighbors = pytest.importorskip("sklearn.neighbors")
    queries, train = _data()
    targets = np.random.default_rng(2).standard_normal((train.shape[0], 2))
    model = knn_gpu.KNeighborsRegressor(n_neighbors=4, weights="distance")
    model.fit(torch.from_numpy(train), torch.from_numpy(targets))
    assert model._index.viewed
    got = model.predict(torch.from_numpy(queries))
    want = sklearn_neighbors.KNeighborsRegressor(n_neighbors=4, weights="distance").fit(train, targets)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want.predict(queries), rtol=1e-10)


def test_drop_in_radius_queries_on_viewed_tensors():
    sklearn_neighbors = pytest.importorskip("sklearn.neighbors")
    queries, train = _data(dim=3)
    model = knn_gpu.NearestNeighbors(radius=0.9).fit(torch.from_numpy(train))
    assert model._index.viewed
    distances, indices = model.radius_neighbors(torch.from_numpy(queries), sort_results=True)
    want_distances, want_indices = (
        sklearn_neighbors.NearestNeighbors(radius=0.9).fit(train).radius_neighbors(queries, sort_results=True)
    )
    assert len(indices) == queries.shape[0]
    for row in range(queries.shape[0]):
        np.testing.assert_array_equal(np.asarray(indices[row]), want_indices[row])
        np.testing.assert_allclose(np.asarray(distances[row]), want_distances[row], rtol=1e-12)


def test_mixed_torch_and_numpy_are_not_viewed():
    queries, train = _data()
    assert numpy_views(torch.from_numpy(queries), train) is None
    assert numpy_views() is None


def test_block_metric_written_for_torch_receives_torch_blocks():
    queries, train = _data(n_queries=10, n_train=50)
    seen = set()

    def squared(q_block, t_block):
        seen.add(type(q_block))
        return torch.cdist(q_block, t_block) ** 2

    tq, tt = torch.from_numpy(queries), torch.from_numpy(train)
    distances, indices = knn_gpu.kneighbors(tq, tt, 3, metric=knn_gpu.BlockMetric(squared))
    assert seen == {torch.Tensor}
    expected_distances, expected_indices = oracle_kneighbors(queries, train, 3)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_allclose(distances.numpy(), expected_distances**2, rtol=1e-10)


@pytest.mark.parametrize("per_query", [False, True], ids=["one radius", "a radius tensor per query"])
@pytest.mark.parametrize("return_distance", [True, False])
def test_radius_on_tensors_answers_tensors_like_numpy(return_distance, per_query):
    queries, train = _data(dim=3)
    tq, tt = torch.from_numpy(queries.astype(np.float32)), torch.from_numpy(train.astype(np.float32))
    radius = torch.full((queries.shape[0],), 0.8, dtype=torch.float32) if per_query else 0.8
    answer = knn_gpu.radius_neighbors(tq, tt, radius, return_distance=return_distance)
    expected = knn_gpu.radius_neighbors(
        queries.astype(np.float32), train.astype(np.float32), 0.8, return_distance=return_distance
    )
    assert isinstance(answer, tuple) and len(answer) == len(expected)
    for got, want in zip(answer, expected):
        assert isinstance(got, torch.Tensor) and got.device.type == "cpu"
        assert got.numpy().dtype == want.dtype
        np.testing.assert_array_equal(got.numpy(), want)
    # the oracle: every pair within the radius, no other
    pairs = np.sqrt(((queries[:, None, :] - train[None, :, :]) ** 2).sum(-1))
    indices, offsets = (answer[1], answer[2]) if return_distance else answer
    assert int(offsets[-1]) == int((pairs <= 0.8).sum())  # no pair sits within float32 rounding of 0.8 here
    for row in range(queries.shape[0]):
        found = np.sort(indices[int(offsets[row]) : int(offsets[row + 1])].numpy())
        np.testing.assert_array_equal(found, np.flatnonzero(pairs[row] <= 0.8))


def test_as_torch_tensors_copies_only_what_torch_cannot_share():
    shared = np.arange(6.0)
    reversed_view = shared[::-1]
    read_only = np.arange(3)
    read_only.flags.writeable = False
    tensors = as_torch_tensors((shared, (reversed_view, read_only), "kept"))
    assert tensors[0].data_ptr() == shared.__array_interface__["data"][0]
    np.testing.assert_array_equal(tensors[1][0].numpy(), reversed_view)
    np.testing.assert_array_equal(tensors[1][1].numpy(), read_only)
    assert tensors[2] == "kept"
