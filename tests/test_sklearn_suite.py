"""scikit-learn's own ``sklearn/neighbors/tests/test_neighbors.py``, run against knn_gpu's classes.

The test file is loaded from the installed scikit-learn (located from
``sklearn.__file__``, never copied here) while ``sklearn.neighbors``'s
k-neighbours and radius names point at knn_gpu's, and every one of its test functions
runs with those names patched again for its duration (``_knn_gpu_names``), so
the rest of the test session still compares against the real scikit-learn.
Its assertions are unchanged. The tests of features knn_gpu does not have yet
are deselected, with the reason, in :data:`DESELECTED`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
import sklearn.neighbors  # noqa: E402

import knn_gpu  # noqa: E402

#: sklearn.neighbors names replaced by knn_gpu's while the suite is imported and while each test runs.
PATCHED = (
    "NearestNeighbors",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KNeighborsTransformer",
    "kneighbors_graph",
    "RadiusNeighborsClassifier",
    "RadiusNeighborsRegressor",
    "RadiusNeighborsTransformer",
    "radius_neighbors_graph",
)

SUITE = Path(sklearn.__file__).parent / "neighbors" / "tests" / "test_neighbors.py"


def _load_suite():
    originals = {name: getattr(sklearn.neighbors, name) for name in PATCHED}
    try:
        for name in PATCHED:
            setattr(sklearn.neighbors, name, getattr(knn_gpu, name))
        spec = importlib.util.spec_from_file_location("knn_gpu_sklearn_test_neighbors", SUITE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, value in originals.items():
            setattr(sklearn.neighbors, name, value)
    return module


_suite = _load_suite()
# scikit-learn's own fixtures for its tests: global_dtype (float32 too: scikit-learn runs those only
# when asked), and global_random_seed (42 unless SKLEARN_TESTS_GLOBAL_RANDOM_SEED says otherwise).
os.environ.setdefault("SKLEARN_RUN_FLOAT32_TESTS", "1")
from sklearn.conftest import global_dtype, pytest_generate_tests  # noqa: E402, F401

globals().update({name: value for name, value in vars(_suite).items() if name.startswith("test_")})


METRICS = (
    "metrics other than euclidean/l2/sqeuclidean/cosine/minkowski/manhattan/chebyshev/precomputed are not supported "
    "yet (ValueError)"
)
DISTANCE_METRIC = "DistanceMetric objects and callables as metric are not supported yet (ValueError)"
FIT_METHOD = (
    "knn_gpu builds no tree: _fit_method is always 'brute', where scikit-learn's 'auto' may pick kd_tree/ball_tree"
)
_OTHER_METRICS = (
    "braycurtis|canberra|correlation|dice|hamming|haversine|jaccard|mahalanobis|"
    "nan_euclidean|rogerstanimoto|russellrao|seuclidean|sokalsneath|yule|sokalmichener|kulsinski"
)

#: Tests of scikit-learn's suite not run, and why: features knn_gpu does not have yet. Each key is a
#: regular expression searched in the test's name with its parameters ("test_x[float64-...]").
DESELECTED: dict[str, str] = {
    # callables
    r"^test_sparse_metric_callable\[": (
        "a callable metric receives dense rows: knn_gpu densifies sparse input (in its own library) before any "
        "metric, where scikit-learn passes sparse rows to a callable (the test's metric calls x.dot(y.T).toarray())"
    ),
    # tree selection
    r"^test_auto_algorithm\[(X3|X4|X5)-": FIT_METHOD + " (X4, X5: and metrics seuclidean, correlation)",
}


def _deselection_reason(test_name: str) -> str | None:
    for pattern, reason in DESELECTED.items():
        if re.search(pattern, test_name):
            return reason
    return None


@pytest.fixture(autouse=True)
def _knn_gpu_names(request, monkeypatch):
    reason = _deselection_reason(request.node.name)
    if reason:
        pytest.skip(f"deselected: {reason}")
    for name in PATCHED:
        monkeypatch.setattr(sklearn.neighbors, name, getattr(knn_gpu, name))


def test_the_suite_runs_knn_gpus_classes():
    """The names the suite imported directly, and those it reads from sklearn.neighbors, are knn_gpu's."""
    assert _suite.KNeighborsRegressor is knn_gpu.KNeighborsRegressor
    for name in PATCHED:
        assert getattr(sklearn.neighbors, name) is getattr(knn_gpu, name)
    assert len(DESELECTED) > 0 and all(isinstance(reason, str) and reason for reason in DESELECTED.values())
