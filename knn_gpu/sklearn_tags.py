"""scikit-learn estimator tags, built only when scikit-learn asks for them.

Importing this module imports scikit-learn; the estimators import it lazily
from ``__sklearn_tags__``, so knn_gpu itself never needs scikit-learn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimator_tags"]


def estimator_tags(estimator: Any, estimator_type: str) -> Any:
    """Tags for a ``"regressor"`` or ``"classifier"``: dense 2-D float input, no NaN."""
    from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags

    is_regressor = estimator_type == "regressor"
    return Tags(
        estimator_type=estimator_type,
        target_tags=TargetTags(required=True, multi_output=is_regressor, single_output=True),
        classifier_tags=None if is_regressor else ClassifierTags(),
        regressor_tags=RegressorTags() if is_regressor else None,
        array_api_support=True,
        input_tags=InputTags(allow_nan=False, sparse=False),
    )
