"""CPU torch tensors are searched by NumPy on zero-copy views, and answered as torch tensors.

``knn_gpu.kneighbors`` and ``knn_gpu.radius_neighbors`` hand CPU float
tensors to NumPy's search (threads over batches, single-threaded BLAS) and
wrap the answers back into tensors. These tests pin down what a torch user
sees: tensors in, tensors out (CPU, the same dtypes as NumPy's answer), the
same neighbours as the float64 oracle, the caller's tensors untouched; and
where NumPy must not take the tensors (autograd, bfloat16, integers, a
:class:`~knn_gpu.BlockMetric` written for torch), torch itself computes.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import oracle_kneighbors, unambiguous_rows

import knn_gpu
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


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: t.to(torch.bfloat16), id="bfloat16"),
        pytest.param(lambda t: t.requires_grad_(True), id="requires_grad"),
        pytest.param(lambda t: (t * 10).to(torch.int32), id="int32"),
    ],
)
def test_tensors_numpy_must_not_take_stay_with_torch(make, monkeypatch):
    queries, train = _data()
    tq, tt = make(torch.from_numpy(queries.astype(np.float32))), make(torch.from_numpy(train.astype(np.float32)))
    assert numpy_views(tq, tt) is None
    seen = []
    original = knn_gpu._engine.index.build_neighbors_index

    def spy(train, *args, **kwargs):
        seen.append(type(train))
        return original(train, *args, **kwargs)

    monkeypatch.setattr(knn_gpu._api.neighbors, "build_neighbors_index", spy)
    distances, indices = knn_gpu.kneighbors(tq, tt, 4)
    assert seen == [torch.Tensor]  # torch searched its own tensors
    assert isinstance(indices, torch.Tensor) and tuple(indices.shape) == (40, 4)
    as_float64 = tq.detach().to(torch.float64).numpy(), tt.detach().to(torch.float64).numpy()
    _, expected_indices = oracle_kneighbors(*as_float64, 4)
    rows = unambiguous_rows(*as_float64, 4, gap=1e-1)
    np.testing.assert_array_equal(indices.numpy()[rows], expected_indices[rows])


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
