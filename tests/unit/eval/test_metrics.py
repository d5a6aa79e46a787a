"""Classification metrics against values worked out by hand."""

from __future__ import annotations

import pytest

from lmforge.eval.metrics import (
    accuracy,
    confusion_matrix,
    f1_per_class,
    macro_f1,
    majority_accuracy,
)

Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_accuracy_by_hand():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert accuracy([], []) == 0.0


def test_f1_by_hand():
    # class 0: tp 2 fp 0 fn 1 -> 4/5; class 1: tp 1 fp 1 fn 1 -> 2/4; class 2: tp 1 fp 1 fn 0 -> 2/3
    scores = f1_per_class(Y_TRUE, Y_PRED)
    assert scores == pytest.approx({0: 0.8, 1: 0.5, 2: 2 / 3})
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_counts_a_never_predicted_class_as_zero():
    assert macro_f1([0, 1], [0, 0]) == pytest.approx((2 / 3 + 0.0) / 2)


def test_perfect_predictions():
    assert macro_f1([2, 0, 1], [2, 0, 1]) == 1.0
    assert accuracy([2, 0, 1], [2, 0, 1]) == 1.0


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_majority_accuracy():
    assert majority_accuracy([1, 1, 0, 2]) == 0.5


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1"):
        accuracy([0, 1], [0])
