"""The scikit-learn-named classes are scikit-learn-native: its bases, its machinery, its answers (issue 18).

Each test compares knn_gpu's class with scikit-learn's class of the same name
run on the same data (scikit-learn is the reference, never knn_gpu itself).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
import sklearn.neighbors as sk  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin, clone  # noqa: E402

import knn_gpu  # noqa: E402
from knn_gpu import (  # noqa: E402
    KNN,
    KNeighborsClassifier,
    KNeighborsRegressor,
    KNeighborsTransformer,
    KNNClassifier,
    NearestNeighbors,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
    RadiusNeighborsTransformer,
    kneighbors_graph,
    radius_neighbors_graph,
)

DROP_INS = [
    NearestNeighbors,
    KNeighborsClassifier,
    KNeighborsRegressor,
    KNeighborsTransformer,
    RadiusNeighborsClassifier,
    RadiusNeighborsRegressor,
    RadiusNeighborsTransformer,
]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = (X[:, 0] + 0.3 * rng.standard_normal(60) > 0).astype(np.int64)
    return X, y, rng.uniform(0.5, 2.0, 60)


# -- built on scikit-learn's own bases ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", DROP_INS, ids=lambda cls: cls.__name__)
def test_drop_ins_subclass_scikit_learns_bases_as_its_classes_do(cls):
    theirs = getattr(sk, cls.__name__)
    assert issubclass(cls, BaseEstimator)
    for mixin in (
        ClassifierMixin,
        RegressorMixin,
        TransformerMixin,
        sk._base.KNeighborsMixin,
        sk._base.RadiusNeighborsMixin,
    ):
        assert issubclass(cls, mixin) == issubclass(theirs, mixin), mixin
    # The HTML repr, get_params and clone are scikit-learn's.
    model = cls(n_jobs=2)
    assert "<style>" in model._repr_html_()
    assert clone(model).get_params() == model.get_params()
    assert set(model.get_params()) >= set(theirs().get_params())


@pytest.mark.parametrize("cls", [RadiusNeighborsClassifier, RadiusNeighborsRegressor, RadiusNeighborsTransformer])
def test_radius_classes_have_no_k_methods(cls):
    """As scikit-learn's: not inherited and hidden, simply absent."""
    for name in ("kneighbors", "kneighbors_graph"):
        assert not hasattr(cls, name)
        assert hasattr(getattr(sk, cls.__name__), name) is False


def test_parameters_are_checked_by_scikit_learns_constraints():
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = np.zeros((4, 2)), [0, 1, 0, 1]
    for model in (KNeighborsClassifier(n_neighbors=0), KNeighborsClassifier(algorithm="tree"), NearestNeighbors(p=0)):
        with pytest.raises(InvalidParameterError) as ours:
            model.fit(X, y)
        theirs_cls = getattr(sk, type(model).__name__)
        shared = {name: value for name, value in model.get_params().items() if name in theirs_cls().get_params()}
        with pytest.raises(InvalidParameterError) as theirs:
            theirs_cls(**shared).fit(X, y)
        assert str(ours.value) == str(theirs.value)


# -- metadata routing and set_output: the two migrations ---------------------------------------------


def _routed_grid_search(module, X, y, w):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(
        StandardScaler().set_fit_request(sample_weight=False),
        module.KNeighborsClassifier().set_score_request(sample_weight=True),
    )
    search = GridSearchCV(pipeline, {"kneighborsclassifier__n_neighbors": [1, 3, 5, 9]}, cv=3)
    return search.fit(X, y, sample_weight=w)


def test_metadata_routing_grid_search_matches_scikit_learn(data):
    X, y, w = data
    with sklearn.config_context(enable_metadata_routing=True):
        ours = _routed_grid_search(knn_gpu, X, y, w)
        theirs = _routed_grid_search(sk, X, y, w)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"])
    # The weights reached score: unweighted, the scores differ.
    with sklearn.config_context(enable_metadata_routing=True):
        request = KNeighborsClassifier().set_score_request(sample_weight=True).get_metadata_routing()
    assert request.score.requests == {"sample_weight": True}


def _precomputed_pipeline(module, X, y):
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(
        module.KNeighborsTransformer(mode="distance"), module.KNeighborsClassifier(metric="precomputed")
    ).set_output(transform="default")
    return pipeline.fit(X, y)


def test_set_output_pipeline_matches_scikit_learn(data):
    X, y, _ = data
    ours, theirs = _precomputed_pipeline(knn_gpu, X, y), _precomputed_pipeline(sk, X, y)
    np.testing.assert_array_equal(ours.predict(X[:20]), theirs.predict(X[:20]))
    np.testing.assert_allclose(ours.predict_proba(X[:20]), theirs.predict_proba(X[:20]))


@pytest.mark.parametrize("cls", [KNeighborsTransformer, RadiusNeighborsTransformer], ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_set_output_on_the_transformers_as_scikit_learn(data, cls, kind):
    """A sparse graph is no DataFrame: scikit-learn's own error, from scikit-learn's set_output."""
    pytest.importorskip(kind)
    X = data[0]
    with pytest.raises(ValueError) as ours:
        cls().set_output(transform=kind).fit_transform(X)
    with pytest.raises(ValueError) as theirs:
        getattr(sk, cls.__name__)().set_output(transform=kind).fit_transform(X)
    assert str(ours.value) == str(theirs.value)
    names = cls().fit(X).get_feature_names_out()
    np.testing.assert_array_equal(names, getattr(sk, cls.__name__)().fit(X).get_feature_names_out())


# -- DataFrames: feature names of pandas and polars, checked as scikit-learn checks them ----------------------


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_feature_names_of_dataframes_as_scikit_learn(data, library):
    frames = pytest.importorskip(library)
    X, y, _ = data
    frame = frames.DataFrame({name: X[:, i] for i, name in enumerate("abcd")})
    ours, theirs = KNeighborsClassifier(3).fit(frame, y), sk.KNeighborsClassifier(3).fit(frame, y)
    np.testing.assert_array_equal(ours.feature_names_in_, theirs.feature_names_in_)
    np.testing.assert_array_equal(ours.predict(frame), theirs.predict(frame))
    reordered = frame.select(["b", "a", "c", "d"]) if library == "polars" else frame[["b", "a", "c", "d"]]
    fewer = frame.select(["a", "b", "c"]) if library == "polars" else frame[["a", "b", "c"]]
    for bad in (reordered, fewer):
        with pytest.raises(ValueError) as mine:
            ours.predict(bad)
        with pytest.raises(ValueError) as reference:
            theirs.predict(bad)
        assert str(mine.value) == str(reference.value)
    # Names on one side only: scikit-learn's UserWarning, both ways.
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        ours.predict(X)
    with pytest.warns(UserWarning, match="X has feature names"):
        KNeighborsClassifier(3).fit(X, y).predict(frame)


# -- the bugs of issue 18, each seen failing before its fix ------------------------------------------------


def test_nullable_column_with_pd_na_is_a_nan_value_error_before_any_work(data):
    pd = pytest.importorskip("pandas")
    X, y, _ = data
    clean = pd.DataFrame({"a": pd.array(X[:, 0], dtype="Float64"), "b": pd.array(y, dtype="Int64")})
    with_na = clean.copy()
    with_na.loc[3, "a"] = pd.NA
    model = KNeighborsClassifier(3).fit(clean, y)
    expected = model.predict(clean)
    for call in (
        lambda: KNeighborsClassifier(3).fit(with_na, y),
        lambda: model.predict(with_na),
        lambda: knn_gpu.kneighbors(with_na, clean.to_numpy(dtype=np.float64), 2),
        lambda: KNNClassifier(3).fit(with_na, y),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()
    with pytest.raises(ValueError, match="NaN"):
        sk.KNeighborsClassifier(3).fit(with_na, y)  # scikit-learn's answer too
    np.testing.assert_array_equal(model.predict(clean), expected)  # still usable
    assert with_na.loc[3, "a"] is pd.NA  # the caller's frame untouched


@pytest.mark.parametrize(
    ("graph", "cls", "size"),
    [(kneighbors_graph, NearestNeighbors, 3), (radius_neighbors_graph, NearestNeighbors, 1.5)],
)
def test_graph_functions_refuse_a_metric_other_than_the_fitted_models(data, graph, cls, size):
    X = data[0]
    model = cls(metric="manhattan").fit(X)
    theirs = sk.NearestNeighbors(metric="manhattan").fit(X)
    sk_graph = getattr(sk, graph.__name__)
    for wrong in ({"metric": "euclidean"}, {"p": 1}, {"metric_params": {"p": 3}}):
        with pytest.raises(ValueError) as ours:
            graph(model, size, **({"metric": "manhattan"} | wrong))
        with pytest.raises(ValueError) as reference:
            sk_graph(theirs, size, **({"metric": "manhattan"} | wrong))
        assert str(ours.value) == str(reference.value)
    same = graph(model, size, metric="manhattan", mode="distance")
    np.testing.assert_allclose(same.toarray(), sk_graph(theirs, size, metric="manhattan", mode="distance").toarray())


def test_graph_functions_take_a_radius_model_as_scikit_learn(data):
    X = data[0]
    model = RadiusNeighborsTransformer(radius=1.5, metric="chebyshev").fit(X)
    with pytest.raises(ValueError, match="Got euclidean for metric, while the estimator has chebyshev"):
        radius_neighbors_graph(model, 1.5, metric="euclidean")


@pytest.mark.parametrize(
    ("metric", "expected"), [("manhattan", 7.0), ("euclidean", 5.0), ("chebyshev", 4.0), ("sqeuclidean", 25.0)]
)
def test_get_distance_uses_the_models_metric(metric, expected):
    train = np.array([[3.0, 4.0], [30.0, 40.0]])
    model = KNN(num_neighbors=1, metric=metric).fit(train, np.array([1.0, 2.0]))
    assert model.get_distance([0.0, 0.0], [3.0, 4.0]) == expected
    assert model.get_neighbors(np.array([0.0, 0.0])) == [(0, expected)]


def test_one_rule_for_p_in_the_functions_and_the_estimators(data):
    """scikit-learn's: p > 0, 0 < p < 1 a semi-metric with its warning; p <= 0 refused."""
    X = data[0]
    queries = X[:7]
    reference = sk.NearestNeighbors(n_neighbors=4, p=0.5, algorithm="brute")
    with pytest.warns(UserWarning, match="0 < p < 1"):
        reference.fit(X)
    with pytest.warns(UserWarning, match="0 < p < 1"):
        functional = knn_gpu.kneighbors(queries, X, 4, metric="minkowski", p=0.5)
    with pytest.warns(UserWarning, match="0 < p < 1"):
        model = NearestNeighbors(n_neighbors=4, p=0.5).fit(X)
    expected = reference.kneighbors(queries)
    for distances, indices in (functional, model.kneighbors(queries)):
        np.testing.assert_array_equal(indices, expected[1])
        np.testing.assert_allclose(distances, expected[0], rtol=1e-12)
    with pytest.warns(UserWarning, match="0 < p < 1"):
        distances, indices, offsets = knn_gpu.radius_neighbors(queries, X, 30.0, metric="minkowski", p=0.5)
    expected_distances, expected_indices = reference.radius_neighbors(queries, 30.0, sort_results=True)
    assert 0 < int(offsets[-1]) < queries.shape[0] * X.shape[0]  # some neighbours in, some out
    for query in range(queries.shape[0]):
        found = slice(offsets[query], offsets[query + 1])
        order = np.lexsort((indices[found], distances[found]))
        np.testing.assert_array_equal(indices[found][order], expected_indices[query])
        np.testing.assert_allclose(distances[found][order], expected_distances[query], rtol=1e-12)
    for p in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="p"):
            knn_gpu.kneighbors(queries, X, 4, metric="minkowski", p=p)
        with pytest.raises(ValueError, match="p"):
            NearestNeighbors(p=p).fit(X)


@pytest.mark.parametrize(
    ("make", "public"),
    [
        (lambda: KNN(n_neighbors=5), "KNN"),
        (lambda: KNNClassifier(n_neighbors=5), "KNNClassifier"),
        (lambda: KNeighborsClassifier(num_neighbors=5), "KNeighborsClassifier"),
        (lambda: RadiusNeighborsRegressor(n_neighbors=5), "RadiusNeighborsRegressor"),
    ],
)
def test_errors_name_the_public_class(make, public):
    with pytest.raises(TypeError) as error:
        make()
    message = str(error.value)
    assert f"{public}.__init__()" in message
    assert "_NeighborsEstimator" not in message and "Base" not in message


# -- import knn_gpu without the optional libraries ------------------------------------------------------------

BLOCKED = ("sklearn", "scipy", "pandas", "polars", "torch", "cupy", "cupyx", "dask", "distributed")

_BLOCKING_PRELUDE = f"""
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Refuse())
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKING_PRELUDE + code], capture_output=True, text=True, timeout=300, check=False
    )


def test_import_and_tutorial_classes_work_without_optional_libraries():
    code = """
import numpy as np
import knn_gpu
from knn_gpu import KNN, KNNClassifier
X = np.array([[0.0], [1.0], [2.0], [10.0]])
print(KNN(num_neighbors=2).fit(X, np.array([0.0, 1.0, 2.0, 10.0])).predict(np.array([[0.4], [9.0]])).tolist())
print(KNNClassifier(num_neighbors=3).fit(X, np.array([0, 0, 0, 1])).predict(np.array([[0.5]])).tolist())
print(knn_gpu.kneighbors(np.array([[0.9]]), X, 2)[1].tolist())
print(sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED_NAMES))
""".replace("BLOCKED_NAMES", repr(BLOCKED))
    result = _run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["[0.5, 6.0]", "[0]", "[[1, 0]]", "[]"]


def test_a_scikit_learn_named_class_without_scikit_learn_is_one_clear_import_error():
    code = """
import knn_gpu
try:
    knn_gpu.KNeighborsClassifier
except ImportError as error:
    print(type(error).__name__, error)
"""
    result = _run_blocked(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError")
    assert 'pip install "knn-gpu[sklearn]"' in result.stdout


def test_importing_knn_gpu_and_using_the_tutorial_classes_does_not_import_sklearn():
    code = "import sys, numpy, knn_gpu; knn_gpu.KNN().fit(numpy.eye(6), numpy.arange(6.0)); print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_top_level_names_are_the_modules_classes():
    from knn_gpu._estimators import drop_in, drop_in_radius

    assert knn_gpu.KNeighborsClassifier is drop_in.KNeighborsClassifier
    assert knn_gpu.RadiusNeighborsTransformer is drop_in_radius.RadiusNeighborsTransformer
    assert set(knn_gpu.__all__) <= set(dir(knn_gpu))
    with pytest.raises(AttributeError, match="no attribute 'KNeighbours'"):
        knn_gpu.KNeighbours  # noqa: B018


#: Why scikit-learn skips one of its array API checks on this machine: a library or device that is absent.
ABSENT = ("SCIPY_ARRAY_API is not set", "requires cuda", "XPU", "MPS", "is not installed", "no usable GPU")


def skipped_checks(results) -> tuple[int, list]:
    """``(skipped checks scikit-learn also runs for its own classes, skipped array API checks with reasons)``."""
    skipped = [r for r in results if r["status"] == "skipped"]
    array_api = [
        (r["check_name"], str(r["exception"])) for r in skipped if r["check_name"].startswith("check_array_api")
    ]
    return len(skipped) - len(array_api), array_api


def test_check_estimator_passes_and_skips_no_more_than_for_scikit_learns_own_classes():
    """Every check passes; no more skipped than for scikit-learn's class of the same name.

    knn_gpu's classes declare scikit-learn's ``array_api_support`` tag (but the
    transformers, whose output is a sparse graph), so scikit-learn also yields
    its array API checks for them (about 20 runs, one per namespace and
    device), where it yields one for its own neighbours classes; it skips
    them without ``SCIPY_ARRAY_API=1`` (they run with it:
    tests/test_drop_in.py) and for devices and libraries this machine lacks.
    They are compared apart: each such skip must give one of those reasons.
    """
    from sklearn.utils.estimator_checks import check_estimator

    for cls in DROP_INS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = check_estimator(cls(), on_fail=None, on_skip=None)
            theirs = check_estimator(getattr(sk, cls.__name__)(), on_fail=None, on_skip=None)
        failed = [r["check_name"] for r in ours if r["status"] == "failed"]
        assert not failed, (cls.__name__, failed)
        our_skips, our_array_api_skips = skipped_checks(ours)
        their_skips, their_array_api_skips = skipped_checks(theirs)
        # scikit-learn yields one array API check for its own classes, skipped without SCIPY_ARRAY_API=1.
        assert len(their_array_api_skips) <= 1
        assert our_skips <= their_skips, (cls.__name__, our_skips, their_skips)
        assert all(any(reason in message for reason in ABSENT) for _, message in our_array_api_skips)
