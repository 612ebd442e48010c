"""Sparse input, as scikit-learn accepts it: feature matrices in every SciPy format, and precomputed graphs."""

from __future__ import annotations

import warnings

import array_api_compat
import numpy as np
import pytest

scipy_sparse = pytest.importorskip("scipy.sparse")
sk = pytest.importorskip("sklearn.neighbors")
from sklearn.pipeline import make_pipeline  # noqa: E402

import knn_gpu  # noqa: E402
from knn_gpu._lib.sparse_input import densify_features, is_sparse, sparse_library  # noqa: E402

#: Every SciPy sparse format scikit-learn's brute force takes, as matrices, and CSR/COO as sparse arrays.
FORMATS = {
    "csr": scipy_sparse.csr_matrix,
    "csc": scipy_sparse.csc_matrix,
    "coo": scipy_sparse.coo_matrix,
    "lil": scipy_sparse.lil_matrix,
    "dok": scipy_sparse.dok_matrix,
    "bsr": scipy_sparse.bsr_matrix,
    "dia": scipy_sparse.dia_matrix,
    "csr_array": scipy_sparse.csr_array,
    "coo_array": scipy_sparse.coo_array,
}
#: The formats scikit-learn takes for a precomputed graph (the others mishandle explicit zeros).
GRAPH_FORMATS = ("csr", "csc", "coo", "lil", "csr_array")


def _sparse_data(seed=0, rows=60, features=8):
    """Features with most entries 0 (ties broken by tiny noise on the stored ones), labels, targets, queries."""
    rng = np.random.default_rng(seed)
    X = rng.random((rows, features))
    X *= X > 0.6
    Q = rng.random((15, features))
    Q *= Q > 0.6
    y_class = (X.sum(axis=1) > np.median(X.sum(axis=1))).astype(int)
    y_value = X @ rng.random(features)
    return X, Q, y_class, y_value


def _snapshot(matrix):
    """What a caller's sparse matrix holds, to compare after a call."""
    return matrix.format, matrix.copy().toarray(), {key: np.copy(value) for key, value in _buffers(matrix).items()}


def _buffers(matrix):
    names = ("data", "indices", "indptr", "row", "col", "offsets")
    return {name: getattr(matrix, name) for name in names if isinstance(getattr(matrix, name, None), np.ndarray)}


def _assert_unchanged(matrix, snapshot):
    fmt, dense, buffers = snapshot
    assert matrix.format == fmt
    np.testing.assert_array_equal(matrix.toarray(), dense)
    for name, value in _buffers(matrix).items():
        np.testing.assert_array_equal(value, buffers[name])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_feature_matrices_of_every_format_match_dense_and_sklearn(fmt):
    X, Q, y_class, y_value = _sparse_data()
    make = FORMATS[fmt]
    X_sparse, Q_sparse = make(X), make(Q)
    before = (_snapshot(X_sparse), _snapshot(Q_sparse))
    for ours_class, theirs_class, y in [
        (knn_gpu.KNeighborsClassifier, sk.KNeighborsClassifier, y_class),
        (knn_gpu.KNeighborsRegressor, sk.KNeighborsRegressor, y_value),
    ]:
        for weights in ("uniform", "distance"):
            ours = ours_class(5, weights=weights).fit(X_sparse, y)
            dense = ours_class(5, weights=weights).fit(X, y)
            theirs = theirs_class(5, weights=weights).fit(X_sparse, y)
            for queries in (Q_sparse, Q):
                np.testing.assert_allclose(ours.predict(queries), dense.predict(Q), rtol=1e-12)
                np.testing.assert_allclose(ours.predict(queries), theirs.predict(Q_sparse), rtol=1e-12)
            np.testing.assert_allclose(dense.predict(Q_sparse), theirs.predict(Q_sparse), rtol=1e-12)
            if ours_class is knn_gpu.KNeighborsClassifier:
                np.testing.assert_allclose(ours.predict_proba(Q_sparse), theirs.predict_proba(Q_sparse), rtol=1e-12)
    ours = knn_gpu.NearestNeighbors(n_neighbors=4).fit(X_sparse)
    theirs = sk.NearestNeighbors(n_neighbors=4).fit(X_sparse)
    for queries in (Q_sparse, None):
        distances, indices = ours.kneighbors(queries)
        expected_distances, expected_indices = theirs.kneighbors(queries)
        np.testing.assert_allclose(distances, expected_distances, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(indices, expected_indices)
        for mode in ("connectivity", "distance"):
            graph = ours.kneighbors_graph(queries, mode=mode)
            np.testing.assert_allclose(
                graph.toarray(), theirs.kneighbors_graph(queries, mode=mode).toarray(), atol=1e-12
            )
    transformed = knn_gpu.KNeighborsTransformer(n_neighbors=3).fit_transform(X_sparse)
    np.testing.assert_allclose(
        transformed.toarray(), sk.KNeighborsTransformer(n_neighbors=3).fit_transform(X_sparse).toarray(), atol=1e-12
    )
    np.testing.assert_allclose(
        knn_gpu.kneighbors_graph(X_sparse, 3, mode="distance").toarray(),
        sk.kneighbors_graph(X_sparse, 3, mode="distance").toarray(),
        atol=1e-12,
    )
    _assert_unchanged(X_sparse, before[0])
    _assert_unchanged(Q_sparse, before[1])


def test_radius_queries_take_sparse_feature_matrices():
    X, Q, _, _ = _sparse_data()
    ours = knn_gpu.NearestNeighbors(radius=0.6).fit(scipy_sparse.csr_matrix(X))
    theirs = sk.NearestNeighbors(radius=0.6).fit(X)
    graph = ours.radius_neighbors_graph(scipy_sparse.csc_matrix(Q), mode="distance")
    np.testing.assert_allclose(graph.toarray(), theirs.radius_neighbors_graph(Q, mode="distance").toarray(), atol=1e-12)


def test_functional_kneighbors_takes_sparse_feature_matrices():
    X, Q, _, _ = _sparse_data()
    distances, indices = knn_gpu.kneighbors(scipy_sparse.coo_matrix(Q), scipy_sparse.csr_matrix(X), 3)
    expected_distances, expected_indices = knn_gpu.kneighbors(Q, X, 3)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
    np.testing.assert_array_equal(indices, expected_indices)


def test_integer_sparse_features_are_searched_in_floating_point():
    X = scipy_sparse.csr_matrix(np.array([[0, 2], [3, 0], [0, 0]], dtype=np.int64))
    distances, indices = knn_gpu.NearestNeighbors(n_neighbors=1).fit(X).kneighbors(np.array([[0.0, 1.0]]))
    assert distances.dtype == np.float64
    np.testing.assert_allclose(distances, [[1.0]])
    np.testing.assert_array_equal(indices, [[0]])


def test_a_host_sparse_matrix_lands_on_the_model_backend(backend):
    if not backend.has_float64():
        pytest.skip("device has no float64")
    X, Q, y_class, _ = _sparse_data()
    X_sparse = scipy_sparse.csr_matrix(X)
    if backend.name == "array_api_strict-device1":
        # No backend name selects this device: the model computes where its (dense) training rows are.
        model = knn_gpu.KNeighborsClassifier(5).fit(backend.asarray(X), y_class)
    else:
        model = knn_gpu.KNeighborsClassifier(5, backend=backend.option).fit(X_sparse, y_class)
        assert array_api_compat.array_namespace(model._fit_X) is backend.xp
        assert array_api_compat.device(model._fit_X) == backend.device
    expected = sk.KNeighborsClassifier(5).fit(X_sparse, y_class).predict(Q)
    predicted = model.predict(scipy_sparse.csr_matrix(Q))
    # The results come back where the densified queries live: NumPy, as for dense host queries.
    assert isinstance(predicted, np.ndarray)
    np.testing.assert_array_equal(predicted, expected)


def test_torch_sparse_tensors_are_densified():
    torch = pytest.importorskip("torch")
    X, Q, _, _ = _sparse_data()
    expected_distances, expected_indices = knn_gpu.NearestNeighbors(n_neighbors=3).fit(X).kneighbors(Q)
    model = knn_gpu.NearestNeighbors(n_neighbors=3).fit(torch.asarray(X).to_sparse())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        queries = torch.asarray(Q).to_sparse_csr()
    distances, indices = model.kneighbors(queries)
    assert isinstance(indices, torch.Tensor) and indices.layout == torch.strided
    np.testing.assert_allclose(distances.numpy(), expected_distances, rtol=1e-12)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)


class _FakeCupyxMatrix:
    """Stands for a cupyx.scipy.sparse matrix (no GPU here): recognised by its module, densified by toarray."""

    __module__ = "cupyx.scipy.sparse._csr"

    def __init__(self, dense):
        self.dense = dense
        self.shape = dense.shape

    def toarray(self):
        return self.dense.copy()


def test_sparse_libraries_are_told_apart_by_module_without_imports():
    dense = np.arange(6.0).reshape(2, 3)
    fake = _FakeCupyxMatrix(dense)
    assert sparse_library(fake) == "cupyx" and is_sparse(fake)
    np.testing.assert_array_equal(densify_features(fake, "X"), dense)
    assert sparse_library(scipy_sparse.csr_array(dense)) == "scipy"
    assert sparse_library(dense) is None and not is_sparse([[1.0]])


def test_sparse_targets_are_refused():
    X, _, y_class, y_value = _sparse_data()
    with pytest.raises(TypeError, match="y is a sparse matrix"):
        knn_gpu.KNN().fit(X, scipy_sparse.csr_matrix(y_value[:, None]))
    with pytest.raises(TypeError, match="y is a sparse matrix"):
        knn_gpu.KNNClassifier().fit(X, scipy_sparse.csr_matrix(y_class[:, None]))
    for estimator, y in [
        (knn_gpu.KNeighborsClassifier(), y_class),
        (knn_gpu.KNeighborsRegressor(), y_value),
        (knn_gpu.RadiusNeighborsClassifier(), y_class),
        (knn_gpu.RadiusNeighborsRegressor(), y_value),
    ]:
        with pytest.raises(TypeError, match="y is a sparse matrix"):
            estimator.fit(X, scipy_sparse.csr_matrix(y[:, None]))


def test_sparse_features_with_nan_are_refused():
    X = scipy_sparse.csr_matrix(np.array([[np.nan, 0.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        knn_gpu.NearestNeighbors(n_neighbors=1).fit(X)


def test_tree_algorithms_refuse_sparse_queries_after_a_dense_fit_as_sklearn():
    X, Q, y_class, _ = _sparse_data()
    for algorithm in ("kd_tree", "ball_tree"):
        model = knn_gpu.KNeighborsClassifier(3, algorithm=algorithm).fit(X, y_class)
        with pytest.raises(ValueError, match=f"{algorithm} does not work with sparse matrices"):
            model.predict(scipy_sparse.csr_matrix(Q))
        with pytest.warns(UserWarning, match="cannot use tree with sparse input: using brute force"):
            model.fit(scipy_sparse.csr_matrix(X), y_class)
        np.testing.assert_array_equal(model.predict(scipy_sparse.csr_matrix(Q)), model.predict(Q))


# -- precomputed sparse graphs ------------------------------------------------------


def _graphs(n_neighbors, seed=1):
    """Training and query k-neighbour distance graphs (self included in the training graph), and the data."""
    X, Q, y_class, y_value = _sparse_data(seed)
    X = X + np.random.default_rng(seed).normal(0.0, 1e-3, X.shape)  # distinct distances
    transformer = sk.KNeighborsTransformer(n_neighbors=n_neighbors, mode="distance").fit(X)
    return transformer.transform(X), transformer.transform(Q), X, Q, y_class, y_value


@pytest.mark.parametrize("fmt", GRAPH_FORMATS)
def test_precomputed_graphs_match_sklearn(fmt):
    train_graph, query_graph, _, _, y_class, y_value = _graphs(6)
    train_graph, query_graph = FORMATS[fmt](train_graph), FORMATS[fmt](query_graph)
    before = (_snapshot(train_graph), _snapshot(query_graph))
    for ours_class, theirs_class, y in [
        (knn_gpu.KNeighborsClassifier, sk.KNeighborsClassifier, y_class),
        (knn_gpu.KNeighborsRegressor, sk.KNeighborsRegressor, y_value),
    ]:
        ours = ours_class(5, metric="precomputed").fit(train_graph, y)
        theirs = theirs_class(5, metric="precomputed").fit(train_graph, y)
        np.testing.assert_allclose(ours.predict(query_graph), theirs.predict(query_graph), rtol=1e-12)
    ours = knn_gpu.NearestNeighbors(n_neighbors=5, metric="precomputed").fit(train_graph)
    theirs = sk.NearestNeighbors(n_neighbors=5, metric="precomputed").fit(train_graph)
    for queries in (query_graph, None):
        distances, indices = ours.kneighbors(queries)
        expected_distances, expected_indices = theirs.kneighbors(queries)
        assert np.all(np.isfinite(distances))
        np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
        np.testing.assert_array_equal(indices, expected_indices)
    _assert_unchanged(train_graph, before[0])
    _assert_unchanged(query_graph, before[1])


@pytest.mark.parametrize("estimator", ["KNeighborsClassifier", "KNeighborsRegressor"])
def test_pipeline_transformer_then_precomputed_matches_sklearn(estimator):
    _, _, X, Q, y_class, y_value = _graphs(6)
    y = y_class if estimator == "KNeighborsClassifier" else y_value
    ours = make_pipeline(
        knn_gpu.KNeighborsTransformer(n_neighbors=7, mode="distance"),
        getattr(knn_gpu, estimator)(n_neighbors=5, metric="precomputed"),
    ).fit(X, y)
    theirs = make_pipeline(
        sk.KNeighborsTransformer(n_neighbors=7, mode="distance"),
        getattr(sk, estimator)(n_neighbors=5, metric="precomputed"),
    ).fit(X, y)
    np.testing.assert_allclose(ours.predict(Q), theirs.predict(Q), rtol=1e-12)
    np.testing.assert_allclose(ours.predict(Q), getattr(sk, estimator)(n_neighbors=5).fit(X, y).predict(Q), rtol=1e-12)


def test_explicit_zeros_are_distances_and_missing_entries_are_not_neighbours():
    # Row 0 stores an explicit 0 to sample 2 and 5.0 to sample 1; sample 0 itself is missing.
    graph = scipy_sparse.csr_matrix(
        (np.array([5.0, 0.0, 1.0, 2.0, 0.5, 3.0]), np.array([1, 2, 0, 2, 0, 1]), np.array([0, 2, 4, 6])), shape=(3, 3)
    )
    distances, indices = knn_gpu.NearestNeighbors(n_neighbors=2, metric="precomputed").fit(graph).kneighbors(graph)
    np.testing.assert_array_equal(indices, [[2, 1], [0, 2], [0, 1]])
    np.testing.assert_array_equal(distances, [[0.0, 5.0], [1.0, 2.0], [0.5, 3.0]])
    theirs = sk.NearestNeighbors(n_neighbors=2, metric="precomputed").fit(graph).kneighbors(graph)
    np.testing.assert_array_equal(distances, theirs[0])
    np.testing.assert_array_equal(indices, theirs[1])


@pytest.mark.parametrize("radius", [0.5, 2.0, np.inf])
def test_radius_queries_over_a_graph_find_stored_entries_only(radius):
    """Missing entries are no neighbours at any radius, infinity included (they are infinite inside knn_gpu)."""
    graph = scipy_sparse.csr_matrix(
        (np.array([5.0, 0.0, 1.0, 2.0, 0.5, 3.0]), np.array([1, 2, 0, 2, 0, 1]), np.array([0, 2, 4, 6])), shape=(3, 3)
    )
    ours = knn_gpu.NearestNeighbors(metric="precomputed").fit(graph)
    theirs = sk.NearestNeighbors(metric="precomputed").fit(graph)
    for queries in (graph, None):
        distances, indices = ours.radius_neighbors(queries, radius=radius, sort_results=True)
        expected_distances, expected_indices = theirs.radius_neighbors(queries, radius=radius, sort_results=True)
        for row in range(3):
            np.testing.assert_array_equal(indices[row], expected_indices[row])
            np.testing.assert_array_equal(distances[row], expected_distances[row])
    flat_distances, flat_indices, offsets = knn_gpu.radius_neighbors(graph, graph, radius, metric="precomputed")
    assert np.all(np.isfinite(flat_distances))
    assert offsets[-1] == np.count_nonzero(graph.data <= radius)  # stored entries within the radius, plainly


def test_duplicate_coo_entries_are_summed_without_touching_the_callers_matrix():
    graph = scipy_sparse.coo_matrix(
        (np.array([1.0, 2.0, 4.0, 1.0, 1.0]), (np.array([0, 0, 0, 1, 1]), np.array([1, 1, 0, 0, 1]))), shape=(2, 2)
    )
    before = _snapshot(graph)
    distances, indices = knn_gpu.kneighbors(graph, np.zeros((2, 2)), 2, metric="precomputed")
    np.testing.assert_array_equal(distances, [[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_array_equal(indices, [[1, 0], [0, 1]])
    _assert_unchanged(graph, before)
    assert graph.nnz == 5


def test_too_few_stored_neighbours_raise_sklearns_error():
    train_graph, query_graph, _, _, _, _ = _graphs(3)
    message = "5 neighbors per samples are required, but some samples have only 4 neighbors in precomputed graph"
    model = knn_gpu.NearestNeighbors(n_neighbors=5, metric="precomputed").fit(train_graph)
    with pytest.raises(ValueError, match=message):
        model.kneighbors(query_graph)
    with pytest.raises(ValueError, match=message):
        knn_gpu.kneighbors(query_graph, train_graph, 5, metric="precomputed")
    # X=None: each point is found among its own stored neighbours, then dropped, so 4 + 1 are needed.
    with pytest.raises(ValueError, match=message):
        model.kneighbors(None, n_neighbors=4)
    distances, _ = model.kneighbors(None, n_neighbors=3)  # the transformer stores self + 3 others per row
    assert np.all(np.isfinite(distances))
    with pytest.raises(ValueError, match=message):
        sk.NearestNeighbors(n_neighbors=5, metric="precomputed").fit(train_graph).kneighbors(query_graph)


@pytest.mark.parametrize("fmt", ["dok", "bsr", "dia"])
def test_graph_formats_without_reliable_explicit_zeros_are_refused(fmt):
    train_graph, _, _, _, _, _ = _graphs(3)
    with pytest.raises(TypeError, match=f"Sparse matrix in '{fmt}' format is not supported"):
        knn_gpu.NearestNeighbors(n_neighbors=2, metric="precomputed").fit(train_graph.asformat(fmt))


def test_negative_or_non_finite_stored_distances_are_refused():
    graph = scipy_sparse.csr_matrix(np.array([[0.0, -1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="Negative values in data passed to precomputed distance matrix"):
        knn_gpu.NearestNeighbors(n_neighbors=1, metric="precomputed").fit(graph)
    graph = scipy_sparse.csr_matrix(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        knn_gpu.NearestNeighbors(n_neighbors=1, metric="precomputed").fit(graph)
    model = knn_gpu.NearestNeighbors(n_neighbors=1, metric="precomputed").fit(np.array([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="Negative values"):
        model.kneighbors(scipy_sparse.csr_matrix(np.array([[-2.0, 1.0]])))


def test_an_empty_sparse_query_graph_has_no_neighbours_to_lack():
    train_graph, _, _, _, _, _ = _graphs(3)
    model = knn_gpu.NearestNeighbors(n_neighbors=4, metric="precomputed").fit(train_graph)
    distances, indices = model.kneighbors(scipy_sparse.csr_matrix((0, train_graph.shape[1])))
    assert distances.shape == indices.shape == (0, 4)


def test_a_sparse_graph_must_be_square_at_fit():
    with pytest.raises(ValueError, match="must be a square matrix of distances"):
        knn_gpu.NearestNeighbors(n_neighbors=1, metric="precomputed").fit(scipy_sparse.csr_matrix(np.ones((3, 2))))


def test_torch_sparse_precomputed_graph():
    torch = pytest.importorskip("torch")
    train_graph, query_graph, _, _, y_class, _ = _graphs(6)
    theirs = sk.KNeighborsClassifier(5, metric="precomputed").fit(train_graph, y_class).predict(query_graph)
    model = knn_gpu.KNeighborsClassifier(5, metric="precomputed").fit(_torch_coo(torch, train_graph), y_class)
    predicted = model.predict(_torch_coo(torch, query_graph))
    np.testing.assert_array_equal(np.asarray(predicted), theirs)


def _torch_coo(torch, matrix):
    coo = matrix.tocoo()
    indices = torch.asarray(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.asarray(coo.data), tuple(coo.shape), check_invariants=True)
