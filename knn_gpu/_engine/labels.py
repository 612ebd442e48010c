"""Class labels: encoded as int64 codes where the index searches, decoded back to the caller's labels.

String or other host labels are encoded and decoded on the host; numeric
labels given on a device stay there (no round trip through the host); Dask
labels stay lazy (only the sorted classes are computed, as they must be to
set ``classes_``).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .._lib.backends import convert_like, move_to, to_host

__all__ = ["check_discrete", "encode_class_labels", "decode_class_labels"]


def check_discrete(labels: Any) -> None:
    """Refuse continuous targets for a classifier (floats that are not whole numbers)."""
    label_xp = array_api_compat.array_namespace(labels)
    if isinstance(labels, np.ndarray) and labels.dtype.kind != "f":
        return
    if not isinstance(labels, np.ndarray) and not label_xp.isdtype(labels.dtype, "real floating"):
        return
    if not bool(label_xp.all(labels == label_xp.round(labels))):
        msg = (
            "Unknown label type: continuous. y holds non-integer floats; "
            "KNNClassifier needs class labels (use KNN for regression)"
        )
        raise ValueError(msg)


def encode_class_labels(labels: Any, index: Any) -> tuple[Any, Any]:
    """``(classes, codes)`` of validated 1-D class labels: sorted classes, int64 codes where ``index`` searches.

    String or other host labels are encoded on the host; numeric labels
    given on a device are encoded there, without a copy to the host. Dask
    labels: the classes are computed (NumPy), the codes stay lazy, chunked as
    the labels are.
    """
    if array_api_compat.is_dask_array(labels) and index.plan != "dask":
        labels = to_host(labels)  # labels for an in-memory fit are gathered, as its rows were
    if array_api_compat.is_dask_array(labels):
        from .dask_search import encode_labels

        classes, codes = encode_labels(labels)
        check_discrete(classes)  # the distinct labels are whole numbers iff every label is
        return classes, codes
    check_discrete(labels)
    xp = index.xp
    if isinstance(labels, np.ndarray):
        classes, codes = np.unique(labels, return_inverse=True)
        return classes, xp.asarray(codes.astype(np.int64), device=index.device)
    label_xp = array_api_compat.array_namespace(labels)
    # A copy: torch's searchsorted warns about (and copies) a strided view such as y[::2].
    labels = label_xp.asarray(labels, copy=True)
    classes = label_xp.sort(label_xp.unique_values(labels))
    codes = label_xp.astype(label_xp.searchsorted(classes, labels), label_xp.int64)
    return classes, move_to(codes, xp, index.device)


def decode_class_labels(winners: Any, classes: Any, X: Any) -> Any:
    """The labels of winning class codes, in the namespace of ``X`` (left where computed if None).

    Numeric labels are decoded where the winners are (no round trip through
    the host); strings and other host labels can only be decoded on the host.
    Lazy (Dask) winners are decoded block by block, lazily.
    """
    if array_api_compat.is_dask_array(winners):
        labels = winners.map_blocks(_decode_block, classes, dtype=classes.dtype)
        return labels if X is None else convert_like(labels, X)
    if isinstance(classes, np.ndarray):
        labels = _decode_block(winners, classes)
        if classes.dtype.kind not in "biuf" or X is None:
            return labels
        return convert_like(labels, X)
    label_xp = array_api_compat.array_namespace(classes)
    labels = label_xp.take(classes, move_to(winners, label_xp, array_api_compat.device(classes)))
    return labels if X is None else convert_like(labels, X)


def _decode_block(winners: Any, classes: np.ndarray) -> Any:
    """Class labels of a block of winning codes (on the block's device if numeric)."""
    if isinstance(winners, np.ndarray) or classes.dtype.kind not in "biuf":
        return classes[to_host(winners)]
    return array_api_compat.array_namespace(winners).take(convert_like(classes, winners), winners)
