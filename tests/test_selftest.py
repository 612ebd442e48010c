"""``knn-gpu selftest``: passes here, and fails when a backend returns a wrong answer."""

from __future__ import annotations

import json

import numpy as np

from knn_gpu._api import neighbors
from knn_gpu._api import radius as api_radius
from knn_gpu._engine import index as engine_index
from knn_gpu._engine.metrics import MINKOWSKI_METRICS, PRODUCT_METRICS
from knn_gpu._engine.streaming import chunk_rows_for
from knn_gpu.cli import main, selftest

#: The metrics the selftest must search: the registry's product and Minkowski families, and five written out here.
SEARCHED = (*PRODUCT_METRICS, *MINKOWSKI_METRICS, "braycurtis", "canberra", "correlation", "seuclidean", "mahalanobis")


def _run(tmp_path, *options):
    path = tmp_path / "selftest.json"
    code = main(["selftest", "--json", str(path), *options])
    return code, json.loads(path.read_text())


def test_selftest_passes_on_every_cpu_backend_here(tmp_path, capsys):
    markdown = tmp_path / "selftest.md"
    code, record = _run(tmp_path, "--markdown", str(markdown))
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = record["results"]
    assert record["failed"] == 0 and record["passed"] == sum(r["status"] == "pass" for r in results) > 0
    backends = {r["backend"] for r in results}
    assert {"numpy", "array_api_strict", "array_api_strict:device1", "torch"} <= backends
    numpy_checks = {r["check"] for r in results if r["backend"] == "numpy" and r["status"] == "pass"}
    # The metric list comes from the library's table: a metric added there is checked without editing the selftest.
    assert {f"kneighbors {metric}" for metric in SEARCHED} <= numpy_checks
    assert {f"radius_neighbors {metric}" for metric in SEARCHED if metric != "inner_product"} <= numpy_checks
    assert {"KNN.predict", "KNNClassifier.predict", "KNeighborsClassifier", "out of core euclidean"} <= numpy_checks
    for result in results:  # a pass compared real queries; a skip says why
        assert result["queries_compared"] > 0 if result["status"] == "pass" else result["detail"]
    strict_half = [r for r in results if r["backend"] == "array_api_strict" and r["dtype"] == "float16"]
    assert strict_half and all(r["status"] == "skip" for r in strict_half)
    assert {(r["backend"], r["dtype"]) for r in results if r["status"] == "pass"} >= {
        ("torch", "float16"),
        ("numpy", "float16"),
    }
    # The GPU backends this machine cannot use are listed with torch's and CuPy's reasons.
    skipped = {entry["backend"] for entry in record["skipped_backends"]}
    assert skipped == {name for name, _ in selftest.find_targets()[1]}
    for name, reason in selftest.find_targets()[1]:
        assert f"backend {name} not tested: {reason}" in printed
    assert "| kneighbors euclidean | ok" in printed and "### numpy" in printed
    assert markdown.read_text().startswith("| backend | device | passed | failed | not run | seconds |")
    numpy_passed = sum(r["status"] == "pass" for r in results if r["backend"] == "numpy")
    assert f"| numpy | {results[0]['device_name']} | {numpy_passed} | 0 | 0 |" in printed


def _perturbed(search):
    """``search`` whose first neighbour of every query is replaced by the next training row: a wrong answer."""

    def wrong(*args, **kwargs):
        distances, indices = search(*args, **kwargs)
        num_train = args[0].num_samples if hasattr(args[0], "num_samples") else selftest.NUM_TRAIN
        shifted = (np.asarray(indices)[:, :1] + 1) % num_train
        return distances, np.concatenate([shifted, np.asarray(indices)[:, 1:]], axis=1)

    return wrong


def test_a_wrong_index_from_the_search_fails_the_selftest(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine_index, "search_index", _perturbed(engine_index.search_index))
    code, record = _run(tmp_path, "--backend", "numpy", "--check", "kneighbors", "--dtype", "float64")
    printed = capsys.readouterr().out
    assert code == 1
    failed = {r["check"] for r in record["results"] if r["status"] == "fail"}
    # Every in-memory metric goes through the front door's search_index: each check must catch the wrong row.
    assert failed == {f"kneighbors {metric}" for metric in SEARCHED}
    assert "FAIL numpy kneighbors euclidean float64: query" in printed and "oracle" in printed


def test_a_wrong_prediction_fails_the_estimator_checks(tmp_path, monkeypatch):
    # The estimators search through the engine's front door too.
    monkeypatch.setattr(engine_index, "search_index", _perturbed(engine_index.search_index))
    code, record = _run(tmp_path, "--backend", "numpy", "--check", "KNN", "--dtype", "float32")
    assert code == 1
    assert {r["check"]: r["status"] for r in record["results"]} == {
        "KNN.predict": "fail",
        "KNNClassifier.predict": "fail",
    }


def test_a_crash_is_a_failure_with_its_message(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("driver fell over")

    monkeypatch.setattr(api_radius, "radius_neighbors", broken)
    code, record = _run(tmp_path, "--backend", "torch", "--check", "radius_neighbors euclidean", "--dtype", "float32")
    assert code == 1
    (result,) = record["results"]
    assert result["status"] == "fail" and result["detail"] == "RuntimeError: driver fell over"


def test_results_in_the_wrong_place_fail(tmp_path, monkeypatch):
    """A result copied to NumPy from the strict device1 is right in value, wrong in place."""
    original = neighbors.kneighbors

    def on_host(*args, **kwargs):
        from knn_gpu._lib.backends import to_host

        return tuple(to_host(result) for result in original(*args, **kwargs))

    monkeypatch.setattr(neighbors, "kneighbors", on_host)
    code, record = _run(
        tmp_path, "--backend", "array_api_strict:device1", "--check", "kneighbors euclidean", "--dtype", "float32"
    )
    assert code == 1
    (result,) = record["results"]
    assert "not in this backend's namespace" in result["detail"]


def test_out_of_core_checks_stream_several_chunks(monkeypatch, tmp_path):
    streamed = []
    original = engine_index.streamed_search

    def spy(train, *args, **kwargs):
        streamed.append(train.num_samples if hasattr(train, "num_samples") else None)
        return original(train, *args, **kwargs)

    monkeypatch.setattr(engine_index, "streamed_search", spy)
    code, record = _run(
        tmp_path, "--backend", "numpy", "--backend", "array_api_strict:device1", "--check", "out of core"
    )
    passed = [r for r in record["results"] if r["status"] == "pass"]
    assert code == 0 and len(streamed) == len(passed) == 2 * 4 * 3 - 4  # array_api_strict has no float16
    assert set(streamed) == {selftest.NUM_TRAIN}
    budget = selftest.OUT_OF_CORE_BUDGET
    rows_per_chunk = [chunk_rows_for(selftest.NUM_FEATURES, itemsize, budget) for itemsize in (2, 4, 8)]
    assert max(rows_per_chunk) < selftest.NUM_TRAIN / 2  # at least three chunks in every dtype


def test_an_unknown_backend_is_refused(capsys):
    assert main(["selftest", "--backend", "tpu"]) == 2
    assert "no backend tpu here" in capsys.readouterr().out


def test_the_oracle_is_independent_and_right_on_a_hand_example():
    queries = np.array([[0.0, 0.0]])
    train = np.array([[3.0, 4.0], [1.0, 1.0], [-2.0, 0.0]])
    np.testing.assert_allclose(selftest.oracle_distances(queries, train, "euclidean"), [[5.0, np.sqrt(2), 2.0]])
    np.testing.assert_allclose(selftest.oracle_distances(queries, train, "manhattan"), [[7.0, 2.0, 2.0]])
    np.testing.assert_allclose(selftest.oracle_distances(queries, train, "chebyshev"), [[4.0, 1.0, 2.0]])
    np.testing.assert_allclose(
        selftest.oracle_distances(queries, train, "minkowski"), [[91 ** (1 / 3), 2 ** (1 / 3), 2.0]]
    )
    np.testing.assert_allclose(
        selftest.oracle_distances(np.array([[1.0, 0.0]]), train, "inner_product"), [[-3.0, -1.0, 2.0]]
    )
    assert selftest.oracle_kneighbors(np.array([[2.0, 1.0, 1.0]]), 2)[1].tolist() == [[1, 2]]  # ties: lower index
