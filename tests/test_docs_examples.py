"""The guide's pages: every Python block runs as a script; no machine's paths anywhere in the docs."""

from __future__ import annotations

import re

import pytest
from doc_blocks import ROOT, python_blocks, run_as_script

PAGES = sorted((ROOT / "docs").rglob("*.md"))
GUIDE_BLOCKS = [block for page in sorted((ROOT / "docs" / "guide").glob("*.md")) for block in python_blocks(page)]
INDEX_BLOCKS = python_blocks(ROOT / "docs" / "index.md")
BLOCKS = INDEX_BLOCKS + GUIDE_BLOCKS


def test_every_block_names_its_needs():
    assert len(GUIDE_BLOCKS) >= 10
    for block in BLOCKS:
        assert block.needs, f"{block.id}: no '# needs: ...' line"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_guide_block_runs_as_a_script(block, tmp_path):
    result = run_as_script(block, tmp_path)
    assert result.stdout.strip(), f"{block.id} printed nothing: a reader running it would see nothing"


SOURCES = PAGES + sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "knn_gpu").rglob("*.py"))
SOURCES += [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]


@pytest.mark.parametrize("path", SOURCES, ids=[str(path.relative_to(ROOT)) for path in SOURCES])
def test_no_path_of_a_machine_and_nothing_outside_the_repository(path):
    text = path.read_text()
    assert "../shared" not in text
    assert not re.search(r"(?<![\w.])/(work|home|Users|root)/", text), "an absolute path of some machine"
