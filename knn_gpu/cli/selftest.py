"""``knn-gpu selftest``: every usable backend and device against a plain float64 oracle.

The first thing to run on a new GPU, driver, CuPy or torch: small seeded
problems for every metric of the library's metric table, k-search and radius
search, the estimators, float32, float64 and float16 (where the backend has
the dtype), and the out-of-core search, each compared with an oracle written
plainly here (direct differences in float64 NumPy, a full stable sort; nothing
from the engine). It prints a table of pass/fail with the time of each check,
optionally writes JSON, and returns 1 when any answer is wrong.

A check compares only what is well defined: the queries whose k-th and
(k+1)-th oracle distances differ clearly (and, for radius searches, whose
oracle distances are not near the radius), so any exact method must return
the oracle's neighbours there, in the oracle's order.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import array_api_compat
import numpy as np

__all__ = ["CheckResult", "Target", "add_selftest_arguments", "find_targets", "run_selftest", "selftest"]

#: Problem sizes: small enough that every check takes milliseconds on a CPU.
NUM_TRAIN = 240
NUM_QUERIES = 24
NUM_FEATURES = 6
K = 5
#: A Minkowski power that is none of the named ones (1, 2, infinity).
MINKOWSKI_P = 3.0
#: Relative gap between the k-th and (k+1)-th oracle distances (and between a
#: distance and the radius) below which a query is left out as ambiguous.
AMBIGUITY_GAP = 1e-3
#: Relative tolerance on distances, by the dtype of the data.
RTOL = {"float64": 1e-9, "float32": 2e-5, "float16": 2e-5}
DTYPES = ("float32", "float64", "float16")
#: The out-of-core checks' ``memory_budget``: chunks of 24 (float64) to 96 (float16) of the training rows.
OUT_OF_CORE_BUDGET = 3 * (NUM_FEATURES + 1) * 8 * (NUM_TRAIN // 5)
#: Which estimator checks run, in order (the scikit-learn-named ones need scikit-learn).
ESTIMATOR_CHECKS = ("KNN.predict", "KNNClassifier.predict", "KNeighborsRegressor", "KNeighborsClassifier")


# --------------------------------------------------------------------------- the oracle


def oracle_distances(queries: np.ndarray, train: np.ndarray, metric: str, p: float = MINKOWSKI_P) -> np.ndarray:
    """Distances (``-q.t`` for ``"inner_product"``) of every query to every training row, in float64.

    Written plainly with direct differences, feature by feature; ``"precomputed"``
    returns ``queries`` (rows of distances).
    """
    queries = np.asarray(queries, dtype=np.float64)
    train = np.asarray(train, dtype=np.float64)
    if metric == "precomputed":
        return queries
    if metric == "inner_product":
        return -np.einsum("qf,tf->qt", queries, train)
    if metric == "cosine":
        dots = np.einsum("qf,tf->qt", queries, train)
        norms = np.sqrt((queries**2).sum(1))[:, None] * np.sqrt((train**2).sum(1))[None, :]
        return 1.0 - dots / norms
    if metric in _RATIO_METRICS:
        return _RATIO_METRICS[metric](queries, train)
    if metric == "correlation":
        centred_queries = queries - queries.mean(axis=1, keepdims=True)
        centred_train = train - train.mean(axis=1, keepdims=True)
        return oracle_distances(centred_queries, centred_train, "cosine")
    if metric == "seuclidean":
        scale = np.sqrt(train.var(axis=0, ddof=1))
        return oracle_distances(queries / scale, train / scale, "euclidean")
    if metric == "mahalanobis":
        inverse = np.linalg.inv(np.cov(train, rowvar=False))
        differences = queries[:, None, :] - train[None, :, :]
        return np.sqrt(np.einsum("qtf,fg,qtg->qt", differences, inverse, differences))
    power = {"manhattan": 1.0, "l1": 1.0, "cityblock": 1.0, "chebyshev": np.inf, "infinity": np.inf}.get(metric, 2.0)
    if metric == "minkowski":
        power = p
    total = np.zeros((queries.shape[0], train.shape[0]))
    for feature in range(queries.shape[1]):
        difference = np.abs(queries[:, feature][:, None] - train[:, feature][None, :])
        total = np.maximum(total, difference) if np.isinf(power) else total + difference**power
    if metric == "sqeuclidean" or np.isinf(power) or power == 1.0:
        return total
    return total ** (1.0 / power)


def _braycurtis(queries: np.ndarray, train: np.ndarray) -> np.ndarray:
    differences = np.abs(queries[:, None, :] - train[None, :, :]).sum(axis=2)
    return differences / np.abs(queries[:, None, :] + train[None, :, :]).sum(axis=2)


def _canberra(queries: np.ndarray, train: np.ndarray) -> np.ndarray:
    differences = np.abs(queries[:, None, :] - train[None, :, :])
    sums = np.abs(queries[:, None, :]) + np.abs(train[None, :, :])
    return np.where(sums > 0, differences / np.where(sums > 0, sums, 1.0), 0.0).sum(axis=2)


_RATIO_METRICS = {"braycurtis": _braycurtis, "canberra": _canberra}

#: The registry's metrics that :func:`oracle_distances` knows (the others have their own tests, against SciPy).
ORACLE_METRICS = ("braycurtis", "canberra", "correlation", "seuclidean", "mahalanobis")


def oracle_kneighbors(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the k smallest in each row: ascending, ties by lower index."""
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1), order


def clear_rows(distances: np.ndarray, k: int) -> np.ndarray:
    """Rows whose k-th and (k+1)-th smallest distances differ by more than :data:`AMBIGUITY_GAP` (relative)."""
    ordered = np.sort(distances, axis=1)
    scale = np.maximum(np.abs(ordered).max(axis=1), 1e-30)
    return (ordered[:, k] - ordered[:, k - 1]) > AMBIGUITY_GAP * scale


# --------------------------------------------------------------------------- backends and devices


@dataclass
class Target:
    """One backend on one device: where the checks put their data."""

    name: str
    library: str
    xp: Any
    device: Any
    device_name: str
    on_gpu: bool
    dtypes: tuple[str, ...]

    def put(self, values: np.ndarray) -> Any:
        """``values`` (host) on this backend and device, same dtype."""
        if self.library == "cupy":
            import cupy

            with cupy.cuda.Device(self.device.id):
                return cupy.asarray(values)
        return self.xp.asarray(values, device=self.device)

    def check_placement(self, array: Any, shape: tuple[int, ...]) -> str:
        """Why ``array`` is not a result of this target of that shape ('' when it is)."""
        if array_api_compat.array_namespace(array) is not self.xp:
            return f"result in {type(array).__name__}, not in this backend's namespace"
        if not _same_device(array_api_compat.device(array), self.device):
            return f"result on {array_api_compat.device(array)}, not on {self.device}"
        if tuple(array.shape) != shape:
            return f"result of shape {tuple(array.shape)}, expected {shape}"
        return ""


def _same_device(first: Any, second: Any) -> bool:
    if getattr(first, "id", None) is not None and getattr(second, "id", None) is not None:
        return first.id == second.id  # CuPy devices
    return first == second


def _dtypes_of(xp: Any, device: Any) -> tuple[str, ...]:
    known = xp.__array_namespace_info__().dtypes(device=device, kind="real floating")
    names = [name for name in ("float32", "float64") if name in known]
    if hasattr(xp, "float16"):  # not in the standard: NumPy, CuPy and torch have it, array_api_strict has not
        names.append("float16")
    return tuple(names)


def find_targets() -> tuple[list[Target], list[tuple[str, str]]]:
    """Every usable backend and device, and the unusable ones with the reason.

    NumPy; array_api_strict on its CPU device and on ``device1`` (its stand-in
    for a GPU: no implicit host copies, no device mixing); torch on the CPU
    and on every visible CUDA device; CuPy on every visible GPU.
    """
    from .._lib.backends import cupy_gpu_status, torch_cuda_probe

    targets: list[Target] = []
    skipped: list[tuple[str, str]] = []
    cpu_name = platform.processor() or platform.machine()
    numpy_xp = array_api_compat.array_namespace(np.empty(0))
    targets.append(Target("numpy", "numpy", numpy_xp, "cpu", cpu_name, False, _dtypes_of(numpy_xp, "cpu")))
    if importlib.util.find_spec("array_api_strict") is None:
        skipped.append(("array_api_strict", "array_api_strict is not installed"))
    else:
        import array_api_strict as strict

        for device_name, label in (("CPU_DEVICE", "array_api_strict"), ("device1", "array_api_strict:device1")):
            device = strict.Device(device_name)
            targets.append(
                Target(label, "array_api_strict", strict, device, device_name, False, _dtypes_of(strict, device))
            )
    if importlib.util.find_spec("torch") is None:
        skipped.append(("torch", "torch is not installed"))
    else:
        import torch

        torch_xp = array_api_compat.array_namespace(torch.empty(0))
        cpu = torch.device("cpu")
        targets.append(Target("torch", "torch", torch_xp, cpu, cpu_name, False, _dtypes_of(torch_xp, cpu)))
        usable, reason = torch_cuda_probe()
        if usable:
            for index in range(torch.cuda.device_count()):
                device = torch.device("cuda", index)
                name = torch.cuda.get_device_name(index)
                targets.append(
                    Target(f"torch:cuda:{index}", "torch", torch_xp, device, name, True, _dtypes_of(torch_xp, device))
                )
        else:
            skipped.append(("torch:cuda", reason))
    usable, reason = cupy_gpu_status()
    if usable:
        import cupy

        cupy_xp = array_api_compat.array_namespace(cupy.empty(0))
        for index in range(cupy.cuda.runtime.getDeviceCount()):
            device = cupy.cuda.Device(index)
            name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            targets.append(Target(f"cupy:{index}", "cupy", cupy_xp, device, name, True, _dtypes_of(cupy_xp, device)))
    else:
        skipped.append(("cupy", reason))
    return targets, skipped


# --------------------------------------------------------------------------- checks


@dataclass
class CheckResult:
    """One check on one target and dtype: ``status`` is "pass", "fail" or "skip"."""

    backend: str
    device: str
    device_name: str
    check: str
    dtype: str
    status: str
    seconds: float
    detail: str = ""
    queries_compared: int = 0


@dataclass
class _Problem:
    """Seeded host data of one dtype, and its float64 values as the backend sees them."""

    train: np.ndarray
    queries: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    exact_train: np.ndarray = field(init=False)
    exact_queries: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.exact_train = self.train.astype(np.float64)
        self.exact_queries = self.queries.astype(np.float64)


def make_problem(dtype: str, seed: int = 0) -> _Problem:
    """Clustered Gaussian data away from the origin, rounded to ``dtype`` (the oracle sees the rounded values)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(4, NUM_FEATURES)) + 2.0
    which = rng.integers(0, 4, size=NUM_TRAIN)
    train = centres[which] + rng.normal(size=(NUM_TRAIN, NUM_FEATURES))
    queries = centres[rng.integers(0, 4, size=NUM_QUERIES)] + rng.normal(size=(NUM_QUERIES, NUM_FEATURES))
    targets = train @ rng.normal(size=NUM_FEATURES)
    return _Problem(train.astype(dtype), queries.astype(dtype), which % 2, targets.astype(dtype))


def _host(array: Any) -> np.ndarray:
    from .._lib.backends import to_host

    return np.asarray(to_host(array))


def _compare_neighbours(
    got_distances: np.ndarray, got_indices: np.ndarray, oracle: np.ndarray, k: int, rtol: float, *, sign: float = 1.0
) -> tuple[str, int]:
    """Why the (distances, indices) differ from the oracle's on the clear rows ('' when they agree), and how many rows."""
    rows = clear_rows(oracle, k)
    expected_distances, expected_indices = oracle_kneighbors(oracle, k)
    if not np.array_equal(got_indices[rows], expected_indices[rows]):
        bad = int(np.flatnonzero((got_indices[rows] != expected_indices[rows]).any(axis=1))[0])
        row = int(np.flatnonzero(rows)[bad])
        return f"query {row}: indices {got_indices[row].tolist()}, oracle {expected_indices[row].tolist()}", 0
    scale = float(np.abs(expected_distances).max()) or 1.0
    if not np.allclose(sign * got_distances[rows], expected_distances[rows], rtol=rtol, atol=rtol * scale):
        worst = float(np.abs(sign * got_distances[rows] - expected_distances[rows]).max())
        return f"distances differ from the oracle's by up to {worst:.3g}", 0
    return "", int(rows.sum())


def _kneighbors_check(target: Target, problem: _Problem, metric: str, dtype: str) -> tuple[str, int]:
    from .._api import neighbors as api  # its kneighbors looked up at call time: a test can put a faulty one there

    p = MINKOWSKI_P if metric == "minkowski" else None
    if metric == "precomputed":
        train_rows = oracle_distances(problem.exact_train, problem.exact_train, "euclidean").astype(dtype)
        query_rows = oracle_distances(problem.exact_queries, problem.exact_train, "euclidean").astype(dtype)
        oracle = query_rows.astype(np.float64)
        queries, train = target.put(query_rows), target.put(train_rows)
    else:
        oracle = oracle_distances(problem.exact_queries, problem.exact_train, metric)
        queries, train = target.put(problem.queries), target.put(problem.train)
    distances, indices = api.kneighbors(queries, train, K, metric=metric, p=p)
    for result in (distances, indices):
        wrong = target.check_placement(result, (NUM_QUERIES, K))
        if wrong:
            return wrong, 0
    sign = -1.0 if metric == "inner_product" else 1.0
    return _compare_neighbours(_host(distances), _host(indices), oracle, K, RTOL[dtype], sign=sign)


def _radius_check(target: Target, problem: _Problem, metric: str, dtype: str) -> tuple[str, int]:
    from .._api import radius as api

    p = MINKOWSKI_P if metric == "minkowski" else None
    if metric == "precomputed":
        train_rows = oracle_distances(problem.exact_train, problem.exact_train, "euclidean").astype(dtype)
        query_rows = oracle_distances(problem.exact_queries, problem.exact_train, "euclidean").astype(dtype)
        oracle = query_rows.astype(np.float64)
        queries, train = target.put(query_rows), target.put(train_rows)
    else:
        oracle = oracle_distances(problem.exact_queries, problem.exact_train, metric)
        queries, train = target.put(problem.queries), target.put(problem.train)
    radius = float(np.median(np.sort(oracle, axis=1)[:, 2 * K]))
    distances, indices, offsets = api.radius_neighbors(queries, train, radius, metric=metric, p=p, sort_results=True)
    wrong = target.check_placement(offsets, (NUM_QUERIES + 1,))
    if wrong:
        return wrong, 0
    got_distances, got_indices, got_offsets = _host(distances), _host(indices), _host(offsets)
    near_radius = (np.abs(oracle - radius) <= AMBIGUITY_GAP * max(radius, 1e-30)).any(axis=1)
    compared = 0
    for row in np.flatnonzero(~near_radius):
        inside = np.flatnonzero(oracle[row] <= radius)
        expected = inside[np.argsort(oracle[row, inside], kind="stable")]
        start, stop = int(got_offsets[row]), int(got_offsets[row + 1])
        if not np.array_equal(got_indices[start:stop], expected):
            return (
                f"query {row}: {stop - start} neighbours {got_indices[start:stop][:8].tolist()}..., oracle {expected.size} {expected[:8].tolist()}...",
                0,
            )
        if not np.allclose(
            got_distances[start:stop], oracle[row, expected], rtol=RTOL[dtype], atol=RTOL[dtype] * radius
        ):
            return f"query {row}: distances differ from the oracle's", 0
        compared += 1
    return "", compared


def _estimator_check(target: Target, problem: _Problem, name: str, dtype: str) -> tuple[str, int]:
    from .._estimators import drop_in, knn

    oracle = oracle_distances(problem.exact_queries, problem.exact_train, "euclidean")
    rows = clear_rows(oracle, K)
    neighbours = oracle_kneighbors(oracle, K)[1]
    classify = "Classifier" in name
    y = problem.labels if classify else problem.targets
    if classify:
        expected = (problem.labels[neighbours].sum(axis=1) * 2 > K).astype(np.int64)  # K is odd: no tied votes
    else:
        expected = y.astype(np.float64)[neighbours].mean(axis=1)
    if name.startswith("KNN"):
        estimator = (knn.KNNClassifier if classify else knn.KNN)(num_neighbors=K)
    else:
        estimator = getattr(drop_in, name)(n_neighbors=K)
    estimator.fit(target.put(problem.train), target.put(y))
    predicted = estimator.predict(target.put(problem.queries))
    wrong = target.check_placement(predicted, (NUM_QUERIES,))
    if wrong:
        return wrong, 0
    got = _host(predicted)
    same = np.array_equal(got[rows], expected[rows]) if classify else np.allclose(got[rows], expected[rows], rtol=1e-3)
    if not same:
        row = int(np.flatnonzero(rows)[np.flatnonzero(got[rows] != expected[rows])[0]]) if classify else -1
        return f"predictions differ from the oracle's neighbours' {'vote' if classify else 'mean'} (query {row})", 0
    return "", int(rows.sum())


def _out_of_core_check(target: Target, problem: _Problem, metric: str, dtype: str) -> tuple[str, int]:
    """Host training rows with a small ``memory_budget``: several chunks stream (to the device, on a GPU)."""
    from .._api import neighbors as api

    oracle = oracle_distances(problem.exact_queries, problem.exact_train, metric)
    queries = target.put(problem.queries)
    if target.on_gpu or target.name.endswith("device1"):
        train = problem.train if target.library != "array_api_strict" else target.xp.asarray(problem.train)
        options = {}
    else:
        train = target.put(problem.train)
        options = {"out_of_core": True}
    distances, indices = api.kneighbors(queries, train, K, metric=metric, memory_budget=OUT_OF_CORE_BUDGET, **options)
    for result in (distances, indices):
        wrong = target.check_placement(result, (NUM_QUERIES, K))
        if wrong:
            return wrong, 0
    sign = -1.0 if metric == "inner_product" else 1.0
    return _compare_neighbours(_host(distances), _host(indices), oracle, K, RTOL[dtype], sign=sign)


def _checks() -> list[tuple[str, Callable[[Target, _Problem, str], tuple[str, int]], str]]:
    """(name, function of (target, problem, dtype), reason to skip or '') for every check, metrics from the library's table."""
    from .._engine.metrics import MINKOWSKI_METRICS, PRODUCT_METRICS, metric_names

    searched = [name for name in metric_names() if name in (*PRODUCT_METRICS, *MINKOWSKI_METRICS, *ORACLE_METRICS)]
    checks: list[tuple[str, Callable, str]] = []
    for metric in searched:
        checks.append((f"kneighbors {metric}", lambda t, pr, d, m=metric: _kneighbors_check(t, pr, m, d), ""))
    for metric in searched:
        if metric == "inner_product":
            continue  # a similarity: radius_neighbors refuses it by design
        checks.append((f"radius_neighbors {metric}", lambda t, pr, d, m=metric: _radius_check(t, pr, m, d), ""))
    has_sklearn = importlib.util.find_spec("sklearn") is not None
    for name in ESTIMATOR_CHECKS:
        reason = "" if name.startswith("KNN") or has_sklearn else "scikit-learn is not installed"
        checks.append((name, lambda t, pr, d, n=name: _estimator_check(t, pr, n, d), reason))
    for metric in PRODUCT_METRICS:
        checks.append((f"out of core {metric}", lambda t, pr, d, m=metric: _out_of_core_check(t, pr, m, d), ""))
    return checks


def _synchronize(target: Target) -> None:
    if target.library == "cupy":
        import cupy

        with cupy.cuda.Device(target.device.id):
            cupy.cuda.Device().synchronize()
    elif target.on_gpu:
        import torch

        torch.cuda.synchronize(target.device)


def run_selftest(
    targets: Sequence[Target] | None = None, *, dtypes: Sequence[str] = DTYPES, only: str | None = None
) -> tuple[list[CheckResult], list[tuple[str, str]]]:
    """Run every check on every target and dtype; return the results and the skipped backends with their reasons.

    Parameters
    ----------
    targets : sequence of Target, optional
        Default: :func:`find_targets`.
    dtypes : sequence of str
        Among ``"float32"``, ``"float64"``, ``"float16"``.
    only : str, optional
        Run only the checks whose name contains this text.
    """
    skipped: list[tuple[str, str]] = []
    if targets is None:
        targets, skipped = find_targets()
    problems = {dtype: make_problem(dtype) for dtype in dtypes}
    results: list[CheckResult] = []
    for target in targets:
        for check_name, check, reason in _checks():
            if only and only not in check_name:
                continue
            for dtype in dtypes:
                base = {"backend": target.name, "device": str(target.device), "device_name": target.device_name}
                if reason or dtype not in target.dtypes:
                    why = reason or f"{target.name} has no {dtype}"
                    results.append(
                        CheckResult(**base, check=check_name, dtype=dtype, status="skip", seconds=0.0, detail=why)
                    )
                    continue
                start = time.perf_counter()
                try:
                    wrong, compared = check(target, problems[dtype], dtype)
                    _synchronize(target)
                except Exception as exc:  # a crash is a wrong answer too; say what it was
                    wrong, compared = f"{type(exc).__name__}: {exc}", 0
                seconds = time.perf_counter() - start
                if not wrong and compared == 0:
                    wrong = "no query was clear enough to compare"
                status = "fail" if wrong else "pass"
                results.append(
                    CheckResult(**base, check=check_name, dtype=dtype, status=status, seconds=seconds,
                                detail=wrong, queries_compared=compared)
                )  # fmt: skip
    return results, skipped


# --------------------------------------------------------------------------- report


def format_table(
    results: Sequence[CheckResult], skipped: Sequence[tuple[str, str]], dtypes: Sequence[str] = DTYPES
) -> str:
    """A summary per target, then a Markdown table per target: a row per check, a column per dtype.

    Cells: 'ok 1.2 ms' (the check's time, results copied to the host included), '**FAIL**', '-' (not run:
    the dtype is absent on that device, or a dependency is missing).
    """
    lines: list[str] = []
    by_target: dict[tuple[str, str], list[CheckResult]] = {}
    for result in results:
        by_target.setdefault((result.backend, result.device_name), []).append(result)
    for (backend, device_name), rows in by_target.items():
        lines += ["", f"### {backend} ({device_name})", "", "| check | " + " | ".join(dtypes) + " |"]
        lines.append("|---|" + "---|" * len(dtypes))
        checks = list(dict.fromkeys(row.check for row in rows))
        cells = {(row.check, row.dtype): row for row in rows}
        for check in checks:
            line = [check]
            for dtype in dtypes:
                row = cells.get((check, dtype))
                if row is None or row.status == "skip":
                    line.append("-")
                elif row.status == "pass":
                    line.append(f"ok {row.seconds * 1e3:.1f} ms")
                else:
                    line.append("**FAIL**")
            lines.append("| " + " | ".join(line) + " |")
    summary = ["| backend | device | passed | failed | not run | seconds |", "|---|---|---|---|---|---|"]
    for (backend, device_name), rows in by_target.items():
        counts = {status: sum(row.status == status for row in rows) for status in ("pass", "fail", "skip")}
        seconds = sum(row.seconds for row in rows)
        summary.append(
            f"| {backend} | {device_name} | {counts['pass']} | {counts['fail']} | {counts['skip']} | {seconds:.2f} |"
        )
    lines = [*summary, *lines]
    failures = [result for result in results if result.status == "fail"]
    passed = sum(result.status == "pass" for result in results)
    lines += ["", f"{passed} passed, {len(failures)} failed, {sum(r.status == 'skip' for r in results)} not run "
              f"(dtype absent or dependency missing) in {sum(r.seconds for r in results):.1f} s"]  # fmt: skip
    for backend, reason in skipped:
        lines.append(f"backend {backend} not tested: {reason}")
    for failure in failures:
        lines.append(f"FAIL {failure.backend} {failure.check} {failure.dtype}: {failure.detail}")
    return "\n".join(lines).lstrip("\n")


def add_selftest_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``knn-gpu selftest``."""
    parser.add_argument("--json", metavar="PATH", help="also write every check's result (JSON) to PATH")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table (Markdown) to PATH")
    parser.add_argument(
        "--backend", action="append", metavar="NAME",
        help="check only this backend (numpy, array_api_strict, torch, torch:cuda:0, cupy:0, ...; repeatable)",
    )  # fmt: skip
    parser.add_argument("--check", metavar="TEXT", help="run only the checks whose name contains TEXT")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="check only this dtype (repeatable)")


def selftest(args: argparse.Namespace) -> int:
    """``knn-gpu selftest``: print the table, write the files asked for; 1 on any wrong answer, else 0."""
    targets, skipped = find_targets()
    if args.backend:
        unknown = sorted(set(args.backend) - {target.name for target in targets} - {name for name, _ in skipped})
        if unknown:
            known = ", ".join(target.name for target in targets)
            print(f"knn-gpu selftest: no backend {', '.join(unknown)} here (usable: {known})")
            return 2
        targets = [target for target in targets if target.name in args.backend]
        skipped = [entry for entry in skipped if entry[0] in args.backend]
    dtypes = tuple(args.dtype) if args.dtype else DTYPES
    start = time.perf_counter()
    results, _ = run_selftest(targets, dtypes=dtypes, only=args.check)
    table = format_table(results, skipped, dtypes)
    print(table)
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
    if args.json:
        record = {
            "results": [asdict(result) for result in results],
            "skipped_backends": [{"backend": name, "reason": reason} for name, reason in skipped],
            "passed": sum(result.status == "pass" for result in results),
            "failed": sum(result.status == "fail" for result in results),
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
    return 1 if any(result.status == "fail" for result in results) else 0
