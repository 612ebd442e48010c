"""``knn-gpu compare``: placeholder until the comparison tool lands."""

from __future__ import annotations

import argparse

__all__ = ["add_compare_arguments", "run_compare"]


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``knn-gpu compare``."""


def run_compare(args: argparse.Namespace) -> int:
    """Run the comparison."""
    raise NotImplementedError
