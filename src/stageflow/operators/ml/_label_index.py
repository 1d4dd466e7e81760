"""``LabelIndex``: a trained classifier as a hard-voting ensemble member.

``VotingClassifier`` fits its members on label-encoded targets and counts their
votes as indices of its sorted ``classes_``. A member kept as trained (wrapped
in ``FrozenEstimator``, ``operators.ml.ensemble``) predicts the labels
themselves, so this wrapper turns each label into its index among the model's
own sorted ``classes_`` (the same order: every member trained on the same
target). Imported only when an ensemble is built: it loads scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["LabelIndex"]


class LabelIndex(ClassifierMixin, BaseEstimator):  # type: ignore[misc]  # sklearn is untyped
    """A fitted classifier whose ``predict`` gives the index of each label."""

    def __init__(self, model: Any = None) -> None:
        self.model = model

    @property
    def classes_(self) -> Any:
        return self.model.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return True  # the model was fit by its own task

    def fit(self, x: Any, y: Any = None) -> LabelIndex:
        return self  # never refit: the model stays as its task trained it

    def predict(self, x: Any) -> Any:
        return np.searchsorted(self.model.classes_, self.model.predict(x))
