"""Command line: ``knn-gpu demo``, ``knn-gpu info``, ``knn-gpu compare`` and ``knn-gpu selftest``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .._estimators.knn import KNN
from .._lib.backends import auto_backend, to_host
from .demo import TUTORIAL_QUERY_VALUES, tutorial_data

__all__ = ["main"]


def run_demo() -> int:
    """Fit the tutorial's regressor on the best backend and print its predictions."""
    X, y, queries = tutorial_data()
    backend = auto_backend()  # what backend="auto" picks: CuPy, else torch on CUDA, else NumPy
    start = time.perf_counter()
    model = KNN(num_neighbors=5, backend=backend).fit(X, y)
    predictions = to_host(model.predict(queries))
    elapsed = time.perf_counter() - start
    print(f"backend: {backend}")
    print("tutorial: 30 rows ~ N(1, 3^2) labelled 0, 20 rows ~ N(5, 3^2) labelled 1, 10 features")
    for value, prediction in zip(TUTORIAL_QUERY_VALUES, predictions.tolist()):
        print(f"  query with every feature = {value:g}: predicted {prediction:.2f}")
    print(f"time: {elapsed * 1e3:.1f} ms (fit + predict)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knn-gpu", description="Exact k-nearest neighbours on CPU and GPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the tutorial scenario on the best available backend")
    info = commands.add_parser(
        "info", help="versions, BLAS, which backends can run here (and how to fix those that cannot), GPUs"
    )
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    from .compare import add_compare_arguments

    add_compare_arguments(
        commands.add_parser("compare", help="compare backends (and scikit-learn, FAISS) on one workload")
    )
    from .selftest import add_selftest_arguments

    add_selftest_arguments(
        commands.add_parser(
            "selftest",
            help="check every usable backend and device against a float64 oracle (exit 1 on a wrong answer)",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``knn-gpu`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo()
    if args.command == "info":
        from .info import run_info

        return run_info(as_json=args.json)
    if args.command == "selftest":
        from .selftest import selftest

        return selftest(args)
    from .compare import run_compare

    return run_compare(args)


if __name__ == "__main__":
    sys.exit(main())
