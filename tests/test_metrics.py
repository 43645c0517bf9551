"""Accuracy, macro-F1 and the confusion matrix: hand-checked cases, then scikit-learn on random labels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.metrics import accuracy, confusion_matrix, macro_f1


def test_confusion_matrix_rows_are_true_labels_and_columns_predictions():
    assert confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_macro_f1_weighs_a_rare_class_like_a_common_one():
    # 8 of 10 right by always answering class 0: accuracy 0.8, but class 1 is never found
    matrix = confusion_matrix([0] * 8 + [1] * 2, [0] * 10, 2)
    assert accuracy(matrix) == pytest.approx(0.8)
    assert macro_f1(matrix) == pytest.approx((16 / 18 + 0.0) / 2)


def test_macro_f1_of_a_hand_computed_three_class_matrix():
    matrix = [[3, 1, 0], [2, 2, 0], [0, 0, 1]]
    f1 = [2 * 3 / (5 + 4), 2 * 2 / (3 + 4), 2 * 1 / (1 + 1)]
    assert macro_f1(matrix) == pytest.approx(sum(f1) / 3)
    assert accuracy(matrix) == pytest.approx(6 / 9)


def test_classes_absent_from_targets_and_predictions_do_not_count():
    # class 2 never occurs: the mean is over classes 0 and 1, not a third zero
    matrix = confusion_matrix([0, 1, 1], [0, 1, 0], 3)
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_a_class_only_predicted_counts_with_f1_zero():
    matrix = confusion_matrix([0, 0], [0, 1], 2)
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 0.0) / 2)


def test_no_examples_score_zero_not_an_error():
    assert accuracy([[0, 0], [0, 0]]) == 0.0
    assert macro_f1([[0, 0], [0, 0]]) == 0.0
    assert accuracy([]) == 0.0 and macro_f1([]) == 0.0


def test_perfect_predictions_score_one():
    matrix = confusion_matrix([0, 1, 2, 1], [0, 1, 2, 1], 3)
    assert accuracy(matrix) == 1.0 and macro_f1(matrix) == 1.0


# ---- against scikit-learn on random labels ----------------------------------------------

@st.composite
def labelled(draw):
    """(targets, predictions, n_classes): 1 to 60 examples over 1 to 6 classes."""
    n_classes = draw(st.integers(1, 6))
    label = st.integers(0, n_classes - 1)
    size = draw(st.integers(1, 60))
    return draw(st.lists(label, min_size=size, max_size=size)), draw(st.lists(label, min_size=size,
                                                                               max_size=size)), n_classes


@pytest.mark.filterwarnings("ignore:A single label was found")
@given(labelled())
def test_metrics_agree_with_scikit_learn(case):
    sklearn = pytest.importorskip("sklearn.metrics")
    targets, predictions, n_classes = case
    matrix = confusion_matrix(targets, predictions, n_classes)
    every_class = list(range(n_classes))
    assert matrix == sklearn.confusion_matrix(targets, predictions, labels=every_class).tolist()
    assert accuracy(matrix) == pytest.approx(sklearn.accuracy_score(targets, predictions))
    # scikit-learn's default labels are those that occur in the targets or the predictions: ours too
    assert macro_f1(matrix) == pytest.approx(sklearn.f1_score(targets, predictions, average="macro",
                                                              zero_division=0))
