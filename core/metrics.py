"""Classification metrics from a confusion matrix: accuracy and macro-F1."""

from __future__ import annotations


def confusion_matrix(targets: list[int], predictions: list[int], n_classes: int) -> list[list[int]]:
    """Rows are true labels, columns are predictions."""
    matrix = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(targets, predictions):
        matrix[t][p] += 1
    return matrix


def accuracy(matrix: list[list[int]]) -> float:
    total = sum(map(sum, matrix))
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0


def macro_f1(matrix: list[list[int]]) -> float:
    """Mean F1 over the classes that occur in the targets or the predictions."""
    scores = []
    for i in range(len(matrix)):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        if predicted == 0 and actual == 0:
            continue
        scores.append(2 * tp / (predicted + actual))
    return sum(scores) / len(scores) if scores else 0.0
