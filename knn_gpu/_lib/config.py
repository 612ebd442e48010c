"""Process-wide choices that are not the data's: ``config_context``, ``set_config``, ``get_config``.

As scikit-learn's ``config_context`` and torch's
``torch.backends.cuda.matmul.allow_tf32``: a switch the user sets once,
around code that builds indices, rather than a parameter of every estimator
and function. The one choice today is the ranking product's arithmetic:

- ``ranking="float32"`` (default): one float32 product per batch.
- ``ranking="bf16x3"``: on torch CUDA tensors, each float32 value split into
  two bfloat16 pieces and the product taken as two tensor-core GEMMs with a
  float32 output (:mod:`knn_gpu._engine.split_ranking`), certified and
  re-scored like the float32 keys, so the answers stay the float64
  oracle's. Elsewhere (NumPy, CuPy, which has no bfloat16, torch on the CPU)
  the float32 product, which is as fast as the split can be without tensor
  cores.

The setting is read when an index is built: at ``fit``, and at every call of
the functions. It is per thread, like scikit-learn's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["RANKINGS", "get_config", "set_config", "config_context"]

#: The ranking products one can choose.
RANKINGS = ("float32", "bf16x3")

_DEFAULTS = {"ranking": "float32"}
_local = threading.local()


def _config() -> dict:
    if not hasattr(_local, "config"):
        _local.config = dict(_DEFAULTS)
    return _local.config


def get_config() -> dict:
    """The current settings (a copy).

    Examples
    --------
    >>> import knn_gpu
    >>> knn_gpu.get_config()
    {'ranking': 'float32'}
    """
    return dict(_config())


def set_config(*, ranking: str | None = None) -> None:
    """Change the settings of this thread; None leaves one as it is.

    Parameters
    ----------
    ranking : {"float32", "bf16x3"}, optional
        The ranking product's arithmetic (the module notes).
    """
    if ranking is not None:
        if not isinstance(ranking, str) or ranking not in RANKINGS:
            msg = f"ranking must be one of {', '.join(map(repr, RANKINGS))}; got {ranking!r}"
            raise ValueError(msg)
        _config()["ranking"] = ranking


@contextlib.contextmanager
def config_context(*, ranking: str | None = None) -> Iterator[None]:
    """Settings for the ``with`` block, restored after it (even on an error).

    Examples
    --------
    >>> import knn_gpu
    >>> with knn_gpu.config_context(ranking="bf16x3"):
    ...     knn_gpu.get_config()["ranking"]
    'bf16x3'
    >>> knn_gpu.get_config()["ranking"]
    'float32'
    """
    saved = get_config()
    set_config(ranking=ranking)
    try:
        yield
    finally:
        _config().update(saved)
