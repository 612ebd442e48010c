"""The Python blocks of the README and the guide pages, and what each needs.

Every ```python block names what it needs in a comment line
``# needs: a, b`` (``# needs: knn_gpu only`` when nothing more). Names are
distributions (``scikit-learn``), mapped here to the module that proves them
installed; ``a CUDA GPU`` needs a usable CuPy or torch-CUDA device.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Distribution name (as the blocks write it) -> module to import.
MODULES = {
    "knn_gpu only": None,
    "scikit-learn": "sklearn",
    "pandas": "pandas",
    "scipy": "scipy",
    "dask": "dask.array",
    "distributed": "distributed",
    "dask-cuda": "dask_cuda",
    "cupy": "cupy",
    "torch": "torch",
    "matplotlib": "matplotlib",
    "array-api-strict": "array_api_strict",
    "a CUDA GPU": None,
}

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_NEEDS = re.compile(r"^# needs: (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    code: str
    needs: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every ```python block of a Markdown file, with the line it starts on and what it needs."""
    text = path.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        code = match.group(1)
        needs = _NEEDS.search(code)
        names = tuple(name.strip() for name in needs.group(1).split(",")) if needs else ()
        blocks.append(Block(path, text.count("\n", 0, match.start()) + 1, code, names))
    return blocks


def _gpu_usable() -> bool:
    import knn_gpu

    return any(name in ("cupy", "torch:cuda") for name in knn_gpu.available_backends())


def missing(block: Block) -> str | None:
    """Why ``block`` cannot run here (a name it needs is absent), or None."""
    for name in block.needs:
        if name not in MODULES:
            raise AssertionError(f"{block.id}: unknown need {name!r}; known: {sorted(MODULES)}")
        if name == "a CUDA GPU" and not _gpu_usable():
            return "needs a CUDA GPU (none usable here)"
        module = MODULES[name]
        if module is not None and importlib.util.find_spec(module.split(".")[0]) is None:
            return f"needs {name} ({module} is not installed)"
    return None


def run_as_script(block: Block, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``block`` as ``python script.py`` in a fresh interpreter, from the repository root."""
    reason = missing(block)
    if reason:
        pytest.skip(reason)
    script = tmp_path / "block.py"
    script.write_text(block.code)
    env_path = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "PYTHONPATH": env_path, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"
    return result
