"""scikit-learn's ``check_estimator`` and the namespace rule under ``array_api_dispatch``, as a program.

SciPy reads ``SCIPY_ARRAY_API`` once, when it is first imported, and
scikit-learn refuses ``array_api_dispatch=True`` without it, so this runs in a
fresh interpreter started by ``tests/test_drop_in.py`` with
``SCIPY_ARRAY_API=1``. It prints one JSON object: per class, every check's
name, status and exception; per scenario of the namespace rule, what happened; per drop-in, how
many checks scikit-learn skips for its own class of the same name.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
from sklearn import config_context
from sklearn.utils.estimator_checks import check_estimator

import knn_gpu

#: The seed classes convert queries to the model's backend in every namespace (documented).
SEED_CONVENIENCE = {
    "check_array_api_same_namespace": "KNN and KNNClassifier return results in the namespace of X whatever "
    "the namespace at fit (their documented convenience); the drop-in classes follow scikit-learn's rule",
}

CLASSES = [
    knn_gpu.NearestNeighbors,
    knn_gpu.KNeighborsClassifier,
    knn_gpu.KNeighborsRegressor,
    knn_gpu.KNeighborsTransformer,
    knn_gpu.RadiusNeighborsClassifier,
    knn_gpu.RadiusNeighborsRegressor,
    knn_gpu.RadiusNeighborsTransformer,
    knn_gpu.KNN,
    knn_gpu.KNNClassifier,
]


def _checks() -> dict:
    results = {}
    for cls in CLASSES:
        expected = SEED_CONVENIENCE if cls in (knn_gpu.KNN, knn_gpu.KNNClassifier) else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = check_estimator(cls(), expected_failed_checks=expected, on_fail=None, on_skip=None)
        results[cls.__name__] = [
            {
                "check": r["check_name"],
                "status": r["status"],
                "exception_module": type(r["exception"]).__module__ if r["exception"] is not None else None,
                "message": str(r["exception"])[:300] if r["exception"] is not None else "",
            }
            for r in outcome
        ]
    return results


def _sklearn_skips() -> dict:
    """Per drop-in, how many checks scikit-learn's own class of the same name has skipped here."""
    import sklearn.neighbors

    counts = {}
    for cls in CLASSES:
        theirs = getattr(sklearn.neighbors, cls.__name__, None)
        if theirs is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome = check_estimator(theirs(), on_fail=None, on_skip=None)
        counts[cls.__name__] = sum(r["status"] == "skipped" for r in outcome)
    return counts


def _attempt(call) -> dict:
    try:
        result = call()
    except ValueError as error:
        return {"raised": str(error)}
    return {"namespace": type(result).__module__.split(".")[0]}


def _scenarios() -> dict:
    import array_api_strict as strict

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.integers(0, 2, 20)
    X_strict, y_strict = strict.asarray(X), strict.asarray(y)
    other_device = strict.asarray(X, device=strict.Device("device1"))
    runs = {}
    with config_context(array_api_dispatch=True):
        classifier = knn_gpu.KNeighborsClassifier(3).fit(X_strict, y_strict)
        runs["strict_fit_numpy_predict"] = _attempt(lambda: classifier.predict(X))
        runs["strict_fit_list_predict"] = _attempt(lambda: classifier.predict(X.tolist()))
        runs["strict_fit_strict_predict"] = _attempt(lambda: classifier.predict(X_strict))
        searcher = knn_gpu.NearestNeighbors(n_neighbors=3).fit(X_strict)
        runs["strict_fit_device1_kneighbors"] = _attempt(lambda: searcher.kneighbors(other_device)[1])
        runs["strict_fit_numpy_radius_neighbors_graph"] = _attempt(lambda: searcher.radius_neighbors_graph(X))
        numpy_fit = knn_gpu.NearestNeighbors(n_neighbors=3).fit(X)
        runs["numpy_fit_list_kneighbors"] = _attempt(lambda: numpy_fit.kneighbors(X.tolist())[1])
        runs["numpy_fit_strict_kneighbors"] = _attempt(lambda: numpy_fit.kneighbors(X_strict)[1])
        seed = knn_gpu.KNNClassifier(3).fit(X_strict, y_strict)
        runs["seed_strict_fit_numpy_predict"] = _attempt(lambda: seed.predict(X))
        try:
            import torch
        except ImportError:
            pass
        else:
            on_torch = knn_gpu.KNeighborsRegressor(3, backend="torch").fit(X, y * 1.0)
            runs["numpy_fit_torch_backend_numpy_predict"] = _attempt(lambda: on_torch.predict(X))
            runs["numpy_fit_torch_backend_torch_predict"] = _attempt(lambda: on_torch.predict(torch.asarray(X)))
    outside = knn_gpu.KNeighborsClassifier(3).fit(X, y)
    runs["no_dispatch_numpy_fit_strict_predict"] = _attempt(lambda: outside.predict(X_strict))
    return runs


if __name__ == "__main__":
    if os.environ.get("SCIPY_ARRAY_API") != "1":
        sys.exit("run with SCIPY_ARRAY_API=1 (scikit-learn's array_api_dispatch needs it)")
    print(json.dumps({"checks": _checks(), "scenarios": _scenarios(), "sklearn_skips": _sklearn_skips()}))
