"""scikit-learn estimator tags of the tutorial classes ``KNN`` and ``KNNClassifier``, built only when asked.

The tutorial classes work without scikit-learn, so they cannot inherit its
``BaseEstimator``'s tags; they import this module lazily from
``__sklearn_tags__``. The scikit-learn-named classes take their tags from
scikit-learn's own bases (:mod:`knn_gpu.drop_in`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimator_tags"]


def estimator_tags(estimator: Any, estimator_type: str | None) -> Any:
    """Tags for a ``"regressor"``, ``"classifier"``, ``"transformer"`` or (None) an unsupervised searcher.

    2-D float input, dense or sparse (densified as it enters), no NaN. With
    ``metric="precomputed"`` the input is pairwise (scikit-learn's
    cross-validation then slices the training columns too, as for its own
    neighbours estimators).
    """
    from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags, TransformerTags

    is_regressor = estimator_type == "regressor"
    supervised = estimator_type in ("regressor", "classifier")
    return Tags(
        estimator_type=None if estimator_type == "transformer" else estimator_type,
        target_tags=TargetTags(required=supervised, multi_output=is_regressor, single_output=True),
        transformer_tags=TransformerTags() if estimator_type == "transformer" else None,
        classifier_tags=ClassifierTags() if estimator_type == "classifier" else None,
        regressor_tags=RegressorTags() if is_regressor else None,
        array_api_support=True,
        input_tags=InputTags(
            allow_nan=False, sparse=True, pairwise=getattr(estimator, "metric", None) == "precomputed"
        ),
    )
