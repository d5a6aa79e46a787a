"""Classification metrics: accuracy, per-class and macro-averaged F1, confusion matrix.

Plain Python over integer class ids, matching scikit-learn's definitions (macro-F1 averages the
classes present in either the references or the predictions; an undefined precision or recall
counts as 0), so the numbers can be checked by hand and compared with published results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} references but {len(y_pred)} predictions")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of predictions equal to the reference (0.0 for no examples)."""
    _check(y_true, y_pred)
    if not y_true:
        return 0.0
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def f1_per_class(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[int, float]:
    """F1 of each class present in the references or the predictions."""
    _check(y_true, y_pred)
    pairs = list(zip(y_true, y_pred, strict=True))
    scores: dict[int, float] = {}
    for c in sorted(set(y_true) | set(y_pred)):
        tp = sum(t == c and p == c for t, p in pairs)
        fp = sum(t != c and p == c for t, p in pairs)
        fn = sum(t == c and p != c for t, p in pairs)
        # F1 = 2TP / (2TP + FP + FN), which is 0 when the class is never predicted correctly.
        denom = 2 * tp + fp + fn
        scores[c] = 2 * tp / denom if denom else 0.0
    return scores


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of the per-class F1 scores."""
    scores = f1_per_class(y_true, y_pred)
    return sum(scores.values()) / len(scores) if scores else 0.0


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int
) -> list[list[int]]:
    """`m[i][j]` = examples of true class i predicted as class j."""
    _check(y_true, y_pred)
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[t][p] += 1
    return matrix


def majority_accuracy(labels: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent label of `labels` (the test set's)."""
    if not labels:
        return 0.0
    return Counter(labels).most_common(1)[0][1] / len(labels)
