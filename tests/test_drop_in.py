"""The scikit-learn drop-in classes against scikit-learn itself, on every backend."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse
from guards import refusing_host_conversions
from sklearn import datasets
from sklearn import neighbors as sk
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import knn_gpu
from knn_gpu import (
    KNeighborsClassifier,
    KNeighborsRegressor,
    KNeighborsTransformer,
    KNNClassifier,
    NearestNeighbors,
    kneighbors_graph,
)
from knn_gpu._lib.backends import to_host

LOADERS = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "digits": datasets.load_digits,
}


def _data(loader, standardise):
    """A data set with its exact ties broken (so every correct method agrees), raw or standardised."""
    X, y = loader(return_X_y=True)
    X = X.astype(np.float64)
    if standardise:
        X = StandardScaler().fit_transform(X)
    X = X + np.random.default_rng(0).normal(0.0, 1e-6 * (np.abs(X).max() or 1.0), X.shape)
    return X[::2], y[::2], X[1::2], y[1::2]


def _need_float64(backend):
    if not backend.has_float64():
        pytest.skip("device has no float64")


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", ["minkowski", "cosine"])
@pytest.mark.parametrize("standardise", [False, True], ids=["raw", "standardised"])
@pytest.mark.parametrize("dataset", list(LOADERS))
def test_classifier_and_neighbors_match_sklearn(backend, dataset, standardise, metric, weights):
    _need_float64(backend)
    train, y_train, queries, y_test = _data(LOADERS[dataset], standardise)
    ours = KNeighborsClassifier(5, weights=weights, metric=metric).fit(backend.asarray(train), backend.asarray(y_train))
    theirs = sk.KNeighborsClassifier(5, weights=weights, metric=metric).fit(train, y_train)
    on_backend = backend.asarray(queries)
    predicted = backend.check(ours.predict(on_backend), (queries.shape[0],))
    np.testing.assert_array_equal(predicted, theirs.predict(queries))
    n_classes = theirs.classes_.shape[0]
    proba = backend.check(ours.predict_proba(on_backend), (queries.shape[0], n_classes), backend.xp.float64)
    np.testing.assert_allclose(proba, theirs.predict_proba(queries), atol=1e-12)
    assert ours.score(on_backend, backend.asarray(y_test)) == pytest.approx(theirs.score(queries, y_test))
    distances, indices = ours.kneighbors(on_backend, 6)
    sk_distances, sk_indices = theirs.kneighbors(queries, 6)
    np.testing.assert_array_equal(backend.check(indices, (queries.shape[0], 6), backend.xp.int64), sk_indices)
    np.testing.assert_allclose(backend.check(distances, (queries.shape[0], 6)), sk_distances, rtol=1e-9, atol=1e-9)
    unsupervised = NearestNeighbors(n_neighbors=4, metric=metric).fit(backend.asarray(train))
    np.testing.assert_array_equal(
        backend.to_numpy(unsupervised.kneighbors(return_distance=False)),
        sk.NearestNeighbors(n_neighbors=4, metric=metric).fit(train).kneighbors(return_distance=False),
    )


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", ["minkowski", "cosine"])
@pytest.mark.parametrize("standardise", [False, True], ids=["raw", "standardised"])
def test_regressor_matches_sklearn_on_diabetes(backend, standardise, metric, weights):
    _need_float64(backend)
    train, y_train, queries, y_test = _data(datasets.load_diabetes, standardise)
    ours = KNeighborsRegressor(7, weights=weights, metric=metric).fit(backend.asarray(train), backend.asarray(y_train))
    theirs = sk.KNeighborsRegressor(7, weights=weights, metric=metric).fit(train, y_train)
    predicted = backend.check(ours.predict(backend.asarray(queries)), (queries.shape[0],), backend.xp.float64)
    np.testing.assert_allclose(predicted, theirs.predict(queries), rtol=1e-9)
    assert ours.score(backend.asarray(queries), backend.asarray(y_test)) == pytest.approx(
        theirs.score(queries, y_test), rel=1e-9
    )
    np.testing.assert_allclose(backend.to_numpy(ours.predict(None)), theirs.predict(None), rtol=1e-9)


@pytest.mark.parametrize("estimator", ["KNeighborsClassifier", "KNeighborsRegressor"])
def test_leave_one_out_predict_and_score(estimator):
    X, y = datasets.make_blobs(n_samples=40, centers=3, n_features=2, random_state=0)
    ours = getattr(knn_gpu, estimator)(n_neighbors=5).fit(X, y)
    theirs = getattr(sk, estimator)(n_neighbors=5).fit(X, y)
    np.testing.assert_allclose(ours.predict(None), theirs.predict(None))
    assert ours.score(None, y) == pytest.approx(theirs.score(None, y))
    weight = np.linspace(0.5, 2.0, 40)
    assert ours.score(X, y, sample_weight=weight) == pytest.approx(theirs.score(X, y, sample_weight=weight))


def test_multioutput_classifier_matches_sklearn():
    X, y = datasets.make_blobs(n_samples=60, centers=3, n_features=3, random_state=1)
    Y = np.stack([y, (X[:, 0] > 0).astype(int), np.where(y == 1, "a", "b")], axis=1)
    ours = KNeighborsClassifier(4, weights="distance").fit(X, Y)
    theirs = sk.KNeighborsClassifier(4, weights="distance").fit(X, Y)
    assert ours.outputs_2d_ and theirs.outputs_2d_
    np.testing.assert_array_equal(ours.predict(X[:10]), theirs.predict(X[:10]))
    for mine, reference in zip(ours.predict_proba(X[:10]), theirs.predict_proba(X[:10])):
        np.testing.assert_allclose(mine, reference)
    for mine, reference in zip(ours.classes_, theirs.classes_):
        np.testing.assert_array_equal(mine, reference)


@pytest.mark.parametrize("mode", ["connectivity", "distance"])
def test_graphs_match_sklearn(mode):
    X = datasets.load_iris(return_X_y=True)[0]
    X = X + np.random.default_rng(0).normal(0.0, 1e-6, X.shape)
    pairs = [
        (kneighbors_graph(X, 4, mode=mode), sk.kneighbors_graph(X, 4, mode=mode)),
        (kneighbors_graph(X, 4, mode=mode, include_self=True), sk.kneighbors_graph(X, 4, mode=mode, include_self=True)),
        (NearestNeighbors().fit(X).kneighbors_graph(X[:7], 3, mode), sk.NearestNeighbors().fit(X).kneighbors_graph(X[:7], 3, mode)),
        (KNeighborsTransformer(mode=mode).fit_transform(X), sk.KNeighborsTransformer(mode=mode).fit_transform(X)),
    ]  # fmt: skip
    for ours, theirs in pairs:
        assert type(ours) is scipy.sparse.csr_matrix and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours.indptr, theirs.indptr)
        np.testing.assert_array_equal(ours.indices, theirs.indices)
        np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-9)
    transformer = KNeighborsTransformer(n_neighbors=3).fit(X)
    np.testing.assert_array_equal(
        transformer.get_feature_names_out(), sk.KNeighborsTransformer(n_neighbors=3).fit(X).get_feature_names_out()
    )


def test_graph_of_other_namespaces_is_a_host_scipy_matrix(backend):
    """torch and array_api_strict results are copied to the host (documented); CuPy's graph stays on the GPU."""
    X = np.random.default_rng(1).standard_normal((30, 3)).astype(np.float32)
    graph = NearestNeighbors(n_neighbors=3).fit(backend.asarray(X)).kneighbors_graph(mode="distance")
    if backend.name == "cupy":
        import cupyx.scipy.sparse

        assert isinstance(graph, cupyx.scipy.sparse.csr_matrix)
        graph = graph.get()
    assert isinstance(graph, scipy.sparse.csr_matrix) and graph.shape == (30, 30) and graph.nnz == 90
    np.testing.assert_allclose(
        graph.toarray(), NearestNeighbors(n_neighbors=3).fit(X).kneighbors_graph(mode="distance").toarray()
    )


def test_graph_without_scipy_names_the_missing_extra(monkeypatch):
    model = NearestNeighbors(n_neighbors=2).fit(np.eye(3))
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)
    with pytest.raises(ImportError, match=r"needs SciPy for its sparse result: pip install 'knn-gpu\[sparse\]'"):
        model.kneighbors_graph()


def test_parameters_defaults_and_fitted_attributes():
    for name in ("NearestNeighbors", "KNeighborsClassifier", "KNeighborsRegressor", "KNeighborsTransformer"):
        ours, theirs = getattr(knn_gpu, name)().get_params(), getattr(sk, name)().get_params()
        extras = {"backend": None, "batch_size": None, "memory_budget": None, "out_of_core": None}
        assert ours == {**theirs, **extras}, name
    X = np.arange(12.0).reshape(6, 2)
    model = KNeighborsClassifier(algorithm="kd_tree", leaf_size=5).fit(X, [0, 1] * 3)
    assert model._fit_method == "brute" and model.n_samples_fit_ == 6 and model.n_features_in_ == 2
    assert model.effective_metric_ == "euclidean" and model.effective_metric_params_ == {}
    assert model.outputs_2d_ is False
    assert NearestNeighbors(metric="cosine").fit(X).effective_metric_ == "cosine"
    assert NearestNeighbors().radius == 1.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        # Every brute-force metric of scikit-learn is supported (tests/test_metrics.py); these are refused:
        ({"metric": "wminkowski"}, "The .metric. parameter of KNeighborsClassifier must be"),
        ({"metric": "sokalmichener"}, "metric must be one of"),  # in scikit-learn's constraint, not in its brute force
        ({"metric": "hamming", "metric_params": {"V": [1.0]}}, r"metric_params \['V'\] are not parameters"),
        ({"metric": "seuclidean", "algorithm": "kd_tree"}, "Metric 'seuclidean' not valid"),
        ({"metric": lambda a, b: 0.0, "algorithm": "kd_tree"}, "kd_tree does not support callable metric"),
        ({"p": 0.5, "algorithm": "kd_tree"}, 'algorithm="kd_tree" does not support 0 < p < 1'),
        ({"algorithm": "annoy"}, "The 'algorithm' parameter of KNeighborsClassifier must be"),
        ({"n_neighbors": 0}, "The 'n_neighbors' parameter of KNeighborsClassifier must be"),
        ({"leaf_size": 0}, "The 'leaf_size' parameter"),
        ({"p": -1}, "The 'p' parameter"),
        ({"weights": "far"}, "The 'weights' parameter of KNeighborsClassifier must be"),  # scikit-learn's constraint
    ],
)
def test_bad_parameters_raise_at_fit(params, message):
    with pytest.raises(ValueError, match=message):
        KNeighborsClassifier(**params).fit(np.eye(3), [0, 1, 1])


@pytest.mark.parametrize(
    "params",
    [{"metric": "manhattan"}, {"p": 1}, {"metric_params": {"p": 3}}, {"metric": "chebyshev"}, {"p": 1.5}],
)
def test_directly_computed_metrics_equal_scikit_learn(params):
    """The engine's direct metrics behind scikit-learn's names: neighbours, distances and votes as scikit-learn's."""
    from sklearn.neighbors import KNeighborsClassifier as SklearnClassifier

    X, y = datasets.load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ours = KNeighborsClassifier(5, **params).fit(X, y)
    theirs = SklearnClassifier(5, algorithm="brute", **params).fit(X, y)
    distances, indices = ours.kneighbors(X[:40])
    expected_distances, expected_indices = theirs.kneighbors(X[:40])
    # Chebyshev has exact ties; knn_gpu lists them lower index first, scikit-learn in no set order.
    order = np.lexsort((expected_indices, np.round(expected_distances, 12)), axis=1)
    np.testing.assert_array_equal(indices, np.take_along_axis(expected_indices, order, axis=1))
    np.testing.assert_allclose(distances, np.take_along_axis(expected_distances, order, axis=1), rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_minkowski_below_one_warns_as_scikit_learn_and_answers_the_same():
    from sklearn.neighbors import NearestNeighbors as SklearnNeighbors

    X = np.random.default_rng(3).standard_normal((60, 4))
    with pytest.warns(UserWarning, match="Mind that for 0 < p < 1"):
        distances, indices = NearestNeighbors(n_neighbors=4, p=0.5).fit(X).kneighbors(X[:10])
    with pytest.warns(UserWarning, match="Mind that for 0 < p < 1"):
        expected = SklearnNeighbors(n_neighbors=4, p=0.5, algorithm="brute").fit(X).kneighbors(X[:10])
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_allclose(distances, expected[0], rtol=1e-10)


def test_radius_search_takes_directly_computed_metrics():
    """Formerly a ValueError: manhattan radius queries now give scikit-learn's neighbours."""
    from sklearn.neighbors import NearestNeighbors as SklearnNeighbors

    X = np.random.default_rng(4).standard_normal((30, 3))
    distances, indices = NearestNeighbors(metric="manhattan").fit(X).radius_neighbors(X[:2], radius=1.5)
    expected = SklearnNeighbors(metric="manhattan", algorithm="brute").fit(X).radius_neighbors(X[:2], radius=1.5)
    for got, want, got_distances, want_distances in zip(indices, expected[1], distances, expected[0]):
        order = np.argsort(want)
        np.testing.assert_array_equal(got, want[order])
        np.testing.assert_allclose(got_distances, want_distances[order], rtol=1e-12)


def test_query_time_errors():
    X = np.arange(10.0).reshape(5, 2)
    model = KNeighborsClassifier(n_neighbors=8).fit(X, [0, 1, 0, 1, 0])  # accepted at fit, as scikit-learn
    with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit, but n_neighbors = 8"):
        model.predict(X)
    with pytest.raises(ValueError, match="Expected n_neighbors < n_samples_fit"):
        model.kneighbors(n_neighbors=5)
    with pytest.raises(ValueError, match="Expected n_neighbors > 0. Got 0"):
        model.kneighbors(X, 0)
    with pytest.raises(TypeError, match="n_neighbors does not take"):
        model.kneighbors(X, 2.5)
    with pytest.raises(ValueError, match='Unsupported mode, must be one of "connectivity"'):
        NearestNeighbors(n_neighbors=2).fit(X).kneighbors_graph(X, mode="blah")
    with pytest.raises(ValueError, match="return_distance must be True if sort_results is True"):
        NearestNeighbors(n_neighbors=2).fit(X).radius_neighbors(X, return_distance=False, sort_results=True)


def test_dask_training_data_is_refused_with_the_alternative():
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match="does not take Dask arrays yet; use knn_gpu.KNN or KNNClassifier"):
        KNeighborsClassifier(3).fit(da.from_array(np.eye(4)), [0, 1, 0, 1])


def test_all_zero_callable_weights_raise():
    model = KNeighborsClassifier(n_neighbors=3, weights=lambda d: (d <= 0.5).astype(float))
    model.fit([[0, 1], [1, 2], [2, 3], [3, 4]], [0, 0, 1, 1])
    for method in (model.predict, model.predict_proba):
        with pytest.raises(ValueError, match="All neighbors of some sample is getting zero weights"):
            method([[1.1, 1.1]])


def test_not_fitted_error_is_sklearns():
    for model in (NearestNeighbors(), KNeighborsClassifier(), KNeighborsRegressor(), KNeighborsTransformer()):
        with pytest.raises(SklearnNotFittedError):
            check_is_fitted(model)
        with pytest.raises(knn_gpu.NotFittedError):
            model.kneighbors(np.eye(2))


@pytest.mark.parametrize("estimator", [KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors, KNNClassifier])
def test_dataframe_feature_names(estimator):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((30, 3)), columns=["a", "b", "c"])
    model = estimator(3).fit(frame, np.arange(30) % 3) if estimator is not NearestNeighbors else estimator().fit(frame)
    query = model.kneighbors if estimator is NearestNeighbors else model.predict
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        query(frame[["b", "a", "c"]])
    with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- d"):
        query(frame.rename(columns={"c": "d"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        query(frame.to_numpy())
    model.fit(frame.to_numpy(), np.arange(30) % 3)
    with pytest.warns(UserWarning, match="X has feature names, but .* was fitted without feature names"):
        query(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        query(frame.to_numpy())


def test_nullable_columns_and_labels_as_scikit_learn():
    pd = pytest.importorskip("pandas")
    X, y = datasets.load_iris(return_X_y=True, as_frame=True)
    nullable = X.astype("Float64")
    nullable["petal width (cm)"] = (X["petal width (cm)"] * 10).round().astype("Int64")
    names = pd.Series(np.asarray(["setosa", "versicolor", "virginica"])[y])
    for labels in (names, names.astype("category"), names.astype("string"), y.astype("Int64")):
        ours = KNeighborsClassifier().fit(nullable, labels)
        theirs = sk.KNeighborsClassifier().fit(nullable, labels)
        np.testing.assert_array_equal(ours.predict(nullable), theirs.predict(nullable))
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    regressor = KNeighborsRegressor().fit(nullable, y.astype("Float64"))
    np.testing.assert_allclose(regressor.predict(nullable), sk.KNeighborsRegressor().fit(nullable, y).predict(nullable))


# check_estimator checks skipped deliberately, check name -> reason (none today).
SKIPPED_CHECKS: dict[str, str] = {}


@pytest.mark.parametrize(
    "estimator",
    [NearestNeighbors(), KNeighborsClassifier(), KNeighborsRegressor(), KNeighborsTransformer()],
    ids=lambda estimator: type(estimator).__name__,
)
def test_check_estimator(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, expected_failed_checks=SKIPPED_CHECKS, on_fail=None)
    failures = [r for r in results if r["status"] == "failed"]
    assert not failures, [(r["check_name"], str(r["exception"])[:300]) for r in failures]


@pytest.mark.parametrize("script", ["migrate.py", "sparse.py"])
def test_guide_drop_in_examples_run(script):
    from pathlib import Path

    pytest.importorskip("scipy")  # both examples build a sparse graph
    if script == "migrate.py":
        pytest.importorskip("pandas")
    page = (Path(__file__).parent.parent / "docs" / "guide" / "migrating.md").read_text()
    start = page.index(f"# {script}")
    code = page[start : page.index("```", start)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        exec(compile(code, script, "exec"), {})


@pytest.mark.parametrize("weights", ["distance", "callable"])
def test_no_host_synchronisation_inside_the_batches(monkeypatch, weights):
    """On array_api_strict's device1, the drop-in reductions (and the all-zero-weights flag) run without a host sync."""

    from knn_gpu._engine import index, search

    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    rng = np.random.default_rng(7)
    train_host, queries_host = rng.standard_normal((300, 4)), rng.standard_normal((30, 4))
    labels_host = rng.integers(0, 3, size=300)
    train, queries = xp.asarray(train_host, device=device), xp.asarray(queries_host, device=device)
    strict_search = search.search_index

    def guarded_search(*args, **kwargs):
        with refusing_host_conversions(monkeypatch, xp):
            return strict_search(*args, **kwargs)

    monkeypatch.setattr(index, "search_index", guarded_search)  # the front door: every estimator search
    chosen = (lambda d: 1 / (1 + d)) if weights == "callable" else weights
    classifier = KNeighborsClassifier(5, weights=chosen, batch_size=8).fit(
        train, xp.asarray(labels_host, device=device)
    )
    regressor = KNeighborsRegressor(5, weights=chosen, batch_size=8).fit(
        train, xp.asarray(labels_host * 1.0, device=device)
    )
    reference = sk.KNeighborsClassifier(5, weights=lambda d: 1 / (1 + d)).fit(train_host, labels_host)
    predicted = classifier.predict(queries)
    assert predicted.device == device
    np.testing.assert_array_equal(
        to_host(predicted),
        reference.predict(queries_host) if weights == "callable" else classifier.predict(queries_host),
    )
    assert regressor.predict(queries).device == device


# -- scikit-learn's array API conventions (SCIPY_ARRAY_API=1, array_api_dispatch=True) ------------------------


@pytest.fixture(scope="module")
def array_api_run():
    """``tests/array_api_dispatch_run.py``'s JSON: check_estimator and the namespace rule under array_api_dispatch.

    A fresh interpreter: SciPy reads SCIPY_ARRAY_API once, at its first import,
    and this process imported it long ago.
    """
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).parent.parent
    env = {**os.environ, "SCIPY_ARRAY_API": "1", "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    result = subprocess.run(
        [sys.executable, str(root / "tests" / "array_api_dispatch_run.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _cupy_without_gpu(result) -> bool:
    """A check that failed inside CuPy because this machine has CuPy but no usable GPU (the environment, not us)."""
    from knn_gpu._lib.backends import cupy_gpu_status

    return (
        result["check"] in ("check_array_api_input", "check_array_api_mixed_inputs")
        and (result["exception_module"] or "").startswith(("cupy", "cupy_backends"))
        and not cupy_gpu_status()[0]
    )


ALL_CLASSES = [
    "NearestNeighbors",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KNeighborsTransformer",
    "RadiusNeighborsClassifier",
    "RadiusNeighborsRegressor",
    "RadiusNeighborsTransformer",
    "KNN",
    "KNNClassifier",
]


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_check_estimator_under_scipy_array_api(array_api_run, name):
    """Every check passes or is skipped by scikit-learn, but two allowed kinds, each with its reason.

    CuPy installed without a usable GPU fails scikit-learn's CuPy runs inside
    CuPy; the seed classes' documented convenience (queries in any
    namespace) is ``check_array_api_same_namespace``'s expected failure.
    """
    results = array_api_run["checks"][name]
    unexpected = [r for r in results if r["status"] == "failed" and not _cupy_without_gpu(r)]
    assert not unexpected, unexpected
    expected_failures = {r["check"] for r in results if r["status"] == "xfail"}
    assert expected_failures == ({"check_array_api_same_namespace"} if name in ("KNN", "KNNClassifier") else set())
    ran = {r["check"] for r in results if r["status"] == "passed"}
    if name not in ("KNN", "KNNClassifier"):
        assert "check_array_api_input" in ran
        # No more checks skipped than scikit-learn skips for its own class of the same name, but its array API
        # checks (never run for scikit-learn's class), skipped only for devices and libraries absent here.
        skipped = [r for r in results if r["status"] == "skipped"]
        array_api = [r for r in skipped if r["check"].startswith("check_array_api")]
        assert len(skipped) - len(array_api) <= array_api_run["sklearn_skips"][name]
        absent = ("requires cuda", "XPU", "MPS", "is not installed", "no usable GPU")
        assert all(any(reason in r["message"] for reason in absent) for r in array_api), array_api
    if name not in ("KNN", "KNNClassifier", "NearestNeighbors", "KNeighborsTransformer", "RadiusNeighborsTransformer"):
        assert "check_array_api_same_namespace" in ran


def test_transformers_do_not_declare_array_api_support():
    """Their graph is SciPy (or cupyx) CSR, not an array of the namespace of X: scikit-learn's tag says so."""
    from sklearn.utils import get_tags

    assert not get_tags(KNeighborsTransformer()).array_api_support
    assert not get_tags(knn_gpu.RadiusNeighborsTransformer()).array_api_support
    assert get_tags(KNeighborsClassifier()).array_api_support
    assert get_tags(knn_gpu.RadiusNeighborsRegressor()).array_api_support


@pytest.mark.parametrize(
    ("scenario", "method"),
    [
        ("strict_fit_numpy_predict", "KNeighborsClassifier.predict()"),
        ("strict_fit_list_predict", "KNeighborsClassifier.predict()"),
        ("strict_fit_device1_kneighbors", "NearestNeighbors.kneighbors()"),
        ("strict_fit_numpy_radius_neighbors_graph", "NearestNeighbors.radius_neighbors_graph()"),
        ("numpy_fit_strict_kneighbors", "NearestNeighbors.kneighbors()"),
        ("numpy_fit_torch_backend_torch_predict", "KNeighborsRegressor.predict()"),
    ],
)
def test_drop_ins_refuse_another_namespace_or_device_under_dispatch(array_api_run, scenario, method):
    """scikit-learn's check_same_namespace rule, with the method, both namespaces and devices, and the fix."""
    if scenario not in array_api_run["scenarios"]:
        pytest.skip("torch is not installed")
    message = array_api_run["scenarios"][scenario].get("raised", "")
    assert "must use the same namespace and the same device" in message, array_api_run["scenarios"][scenario]
    assert method in message
    assert "Move X to" in message


@pytest.mark.parametrize(
    ("scenario", "namespace"),
    [
        ("strict_fit_strict_predict", "array_api_strict"),
        ("numpy_fit_list_kneighbors", "numpy"),
        # backend="torch" computes on torch; the namespace of fit is still the caller's NumPy.
        ("numpy_fit_torch_backend_numpy_predict", "numpy"),
        # The seed classes' documented convenience: results in the namespace of X, whatever fit got.
        ("seed_strict_fit_numpy_predict", "numpy"),
        # Without array_api_dispatch, queries in any namespace are moved to the model (knn_gpu's behaviour).
        ("no_dispatch_numpy_fit_strict_predict", "array_api_strict"),
    ],
)
def test_queries_that_the_namespace_rule_lets_through(array_api_run, scenario, namespace):
    if scenario not in array_api_run["scenarios"]:
        pytest.skip("torch is not installed")
    assert array_api_run["scenarios"][scenario] == {"namespace": namespace}


@pytest.mark.parametrize(
    ("metric", "metric_params"),
    [
        ("minkowski", {"V": np.ones(3)}),
        ("minkowski", {"p": 3, "w": np.ones(3), "V": 1}),
        ("euclidean", {"w": np.ones(3)}),
    ],
)
def test_metric_params_other_than_p_and_w_are_refused(metric, metric_params):
    """Ignoring them would answer another metric's neighbours; 'w' is weighted Minkowski's only (tests/test_weighted_minkowski.py)."""
    X = np.random.default_rng(0).random((10, 3))
    with pytest.raises(ValueError, match=r"metric_params \[.*\] are not parameters of metric="):
        NearestNeighbors(n_neighbors=2, metric=metric, metric_params=metric_params).fit(X)


@pytest.mark.parametrize("estimator_class", [KNeighborsClassifier, KNeighborsRegressor])
def test_precomputed_cross_validation_slices_the_training_columns(estimator_class):
    """The pairwise tag for metric='precomputed': cross-validation gives D[train][:, train], as scikit-learn's."""
    from sklearn.metrics import pairwise_distances
    from sklearn.model_selection import cross_val_score
    from sklearn.utils import get_tags

    rng = np.random.RandomState(0)
    X, y = rng.rand(20, 2), rng.randint(3, size=20)
    assert get_tags(estimator_class(metric="precomputed")).input_tags.pairwise
    assert not get_tags(estimator_class()).input_tags.pairwise
    on_features = cross_val_score(estimator_class(), X, y)
    on_distances = cross_val_score(estimator_class(metric="precomputed"), pairwise_distances(X), y, error_score="raise")
    np.testing.assert_array_equal(on_distances, on_features)


def test_leave_one_out_with_more_duplicates_than_k_masks_the_first_duplicate():
    """scikit-learn's kneighbors(X=None): a point hidden by its duplicates drops the first of its k + 1, not the last."""
    model = NearestNeighbors(n_neighbors=1).fit(np.ones((3, 1)))
    distances, indices = model.kneighbors()
    np.testing.assert_array_equal(indices, [[1], [0], [1]])
    np.testing.assert_array_equal(distances, np.zeros((3, 1)))
    np.testing.assert_array_equal(model.kneighbors_graph(mode="distance").indices, [1, 0, 1])
    reference = sk.NearestNeighbors(n_neighbors=1, algorithm="brute").fit(np.ones((3, 1)))
    np.testing.assert_array_equal(indices, reference.kneighbors()[1])


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("estimator", ["KNeighborsClassifier", "RadiusNeighborsClassifier"])
def test_drop_in_probabilities_are_float64_for_float32_data(backend, estimator, weights):
    """scikit-learn's predict_proba is float64 whatever X's dtype; the seed KNNClassifier keeps float32 in, float32 out."""
    rng = np.random.default_rng(7)
    train = rng.random((60, 3)).astype(np.float32)
    queries = rng.random((11, 3)).astype(np.float32)
    labels = (train[:, 0] * 3).astype(np.int64)
    params = {"n_neighbors": 5} if estimator == "KNeighborsClassifier" else {"radius": 0.6}
    ours = getattr(knn_gpu, estimator)(weights=weights, **params).fit(backend.asarray(train), backend.asarray(labels))
    theirs = getattr(sk, estimator)(weights=weights, **params).fit(train, labels)
    expected_dtype = backend.xp.float64 if backend.has_float64() else backend.xp.float32
    proba = backend.check(ours.predict_proba(backend.asarray(queries)), (11, 3), expected_dtype)
    expected = theirs.predict_proba(queries)
    assert expected.dtype == np.float64
    if weights == "uniform":
        np.testing.assert_array_equal(proba, expected)  # k / n_neighbors exactly, as scikit-learn's 2/3
    else:
        np.testing.assert_allclose(proba, expected, rtol=1e-6)  # 1 / d of float32 distances
    leave_one_out = ours.predict_proba(None)
    assert leave_one_out.dtype == expected_dtype and leave_one_out.shape == (60, 3)
    two_outputs = np.stack([labels, labels[::-1]], axis=1)
    for column in ours.fit(backend.asarray(train), backend.asarray(two_outputs)).predict_proba(
        backend.asarray(queries)
    ):
        backend.check(column, (11, 3), expected_dtype)
    seed = KNNClassifier(5, weights=weights).fit(backend.asarray(train), backend.asarray(labels))
    backend.check(seed.predict_proba(backend.asarray(queries)), (11, 3), backend.xp.float32)


@pytest.mark.parametrize("estimator", ["KNeighborsClassifier", "RadiusNeighborsClassifier"])
def test_drop_in_probabilities_on_a_device_without_float64_are_float32(estimator):
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("no_float64")
    rng = np.random.default_rng(8)
    train, labels = rng.random((40, 2)).astype(np.float32), rng.integers(0, 3, 40)
    params = {"n_neighbors": 4} if estimator == "KNeighborsClassifier" else {"radius": 0.7}
    model = getattr(knn_gpu, estimator)(**params).fit(
        xp.asarray(train, device=device), xp.asarray(labels, device=device)
    )
    proba = model.predict_proba(xp.asarray(train[:7], device=device))
    assert proba.dtype == xp.float32 and proba.device == device and proba.shape == (7, 3)
    expected = getattr(sk, estimator)(**params).fit(train, labels).predict_proba(train[:7])
    np.testing.assert_allclose(np.asarray(to_host(proba)), expected, rtol=1e-6)
