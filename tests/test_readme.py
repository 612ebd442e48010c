"""README.md: every Python block runs as a script; the page stays a landing page."""

from __future__ import annotations

import re

import pytest
from doc_blocks import ROOT, python_blocks, run_as_script

README = ROOT / "README.md"
BLOCKS = python_blocks(README)


def test_the_readme_has_python_blocks_and_each_names_its_needs():
    assert BLOCKS, "README.md has no ```python block"
    for block in BLOCKS:
        assert block.needs, f"{block.id}: no '# needs: ...' line"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_readme_block_runs_as_a_script(block, tmp_path):
    result = run_as_script(block, tmp_path)
    assert result.stdout.strip(), f"{block.id} printed nothing: a reader running it would see nothing"


def test_readme_is_a_landing_page():
    text = README.read_text()
    assert len(text.encode()) <= 10 * 1024, f"README.md is {len(text.encode())} bytes; the limit is 10 KB"
    assert "../shared" not in text
    assert not re.search(r"(?<![\w.])/(work|home|Users|tmp|root)/", text), "an absolute path of some machine"
    for extra in ("cuda12", "cuda13", "compare", "benchmark", "dask", "sparse", "test", "docs"):
        assert f'.[{extra}]"' in text or f'".[{extra}' in text, f"the {extra!r} extra is not in the install section"
