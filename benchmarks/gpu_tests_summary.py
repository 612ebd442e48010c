"""Tests per backend from a pytest JUnit XML file: passed, failed, errors, skipped (with the skip reasons).

``gpu_check.sh`` runs ``pytest -k "cupy or cuda" --junitxml FILE``; this turns
FILE into a Markdown table with one row per backend of the test fixture
(``cupy``, ``torch-cuda``) and one for the other selected tests (CPU tests
whose names mention CUDA or CuPy, such as those on the fake CUDA device).

When the JUnit file is missing (pytest was stopped by its timeout before
writing it), the counts come from pytest's ``-v`` log instead: one line per
finished test.

Usage::

    python benchmarks/gpu_tests_summary.py gpu-tests.xml [--log gpu-tests.log] [--out summary.md]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

GPU_BACKENDS = ("torch-cuda", "cupy")


def backend_of(name: str) -> str:
    """The fixture backend in a test id's parameters (``test_x[euclidean-torch-cuda]`` -> ``torch-cuda``)."""
    match = re.search(r"\[(.*)\]$", name)
    params = match.group(1) if match else ""
    for backend in GPU_BACKENDS:
        if re.search(rf"(^|-){re.escape(backend)}(-|$)", params):
            return backend
    return "other (CPU)"


def summarize(path: Path) -> tuple[dict[str, collections.Counter], collections.Counter]:
    """Outcome counts per backend, and the skip reasons of the GPU backends."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reasons: collections.Counter = collections.Counter()
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        # The fixture's backend, recorded by tests/conftest.py; test ids alone can mislead ("[euclidean-cupy-numpy]"
        # is the numpy backend with a stand-in CuPy error).
        recorded = [p.get("value") for p in case.iter("property") if p.get("name") == "backend"]
        backend = recorded[0] if recorded else backend_of(case.get("name", ""))
        backend = backend if backend in GPU_BACKENDS else "other (CPU)"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
                if child.tag == "skipped" and backend in GPU_BACKENDS:
                    reasons[(backend, (child.get("message") or "").strip()[:160])] += 1
                break
        counts[backend][outcome] += 1
    return counts, reasons


#: A finished test in pytest's -v log: "tests/test_a.py::test_x[cupy] PASSED" (then a percentage or a reason).
VERBOSE_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
VERBOSE_OUTCOMES = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped",
                    "XFAIL": "skipped"}  # fmt: skip


def summarize_log(path: Path) -> tuple[dict[str, collections.Counter], collections.Counter]:
    """Outcome counts per backend from a pytest ``-v`` log, read from the test ids (skip reasons are not in it).

    Approximate where another parameter is named like a backend; the JUnit file records the fixture's backend.
    """
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in path.read_text(errors="replace").splitlines():
        match = VERBOSE_LINE.match(line)
        if match:
            counts[backend_of(match.group(1))][VERBOSE_OUTCOMES[match.group(2)]] += 1
    return counts, collections.Counter()


def markdown(counts: dict[str, collections.Counter], reasons: collections.Counter) -> str:
    lines = ["| backend | passed | failed | errors | skipped |", "|---|---|---|---|---|"]
    for backend in (*GPU_BACKENDS, "other (CPU)"):
        row = counts.get(backend, collections.Counter())
        lines.append(f"| {backend} | {row['passed']} | {row['failed']} | {row['errors']} | {row['skipped']} |")
    for (backend, reason), number in reasons.most_common(10):
        lines.append(f"\n{backend}: {number} skipped: {reason}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("--log", type=Path, help="pytest's -v log: read when the JUnit file is missing")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if args.junit.exists():
        text = markdown(*summarize(args.junit))
    elif args.log is not None and args.log.exists():
        text = f"(from {args.log.name}: no JUnit file, pytest did not finish)\n\n" + markdown(*summarize_log(args.log))
    else:
        print(f"neither {args.junit} nor a log to read")
        return 1
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
