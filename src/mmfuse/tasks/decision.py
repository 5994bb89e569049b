"""The label a model predicts, chosen for its selection metric rather than for accuracy.

The arg-max of calibrated probabilities maximises accuracy; macro-F1 weighs every class
alike, and the F1-optimal decision favours rare classes (Lipton et al., 2014: the best
threshold is half the best F1, not one half). So the label is the arg-max of
``log p(c | x) - alpha * log prior(c)``, with the class prior of the training rows and
``alpha`` in ``ALPHAS`` (0: the arg-max; 1: divide out the prior entirely) chosen on the
out-of-fold probabilities. A shift is kept only when it beats the arg-max there by more than
one bootstrap standard error (as the judge asks of a candidate judged on fewer rows): the
probabilities themselves are unchanged, so calibration and AUROC are too. Like the
combination's weights, the shift is judged on rows that did not choose it
(``nested_decisions``). AutoGluon's ``calibrate_decision_threshold`` does this for binary
F1; this is its multiclass form. A network fits it with its temperature on the held-out rows
it is calibrated on (``FittedModel.calibrate``) and keeps it in its head: a classification
head adds it to the tempered logits (the log-probabilities up to a constant a row), a binary
head moves its threshold on the tempered logit (log P(1) - log P(0)) by the difference.

On small tables with rare classes it lifts test macro-F1 by a few points
(``benchmarks/auto.py``; its figures are in ``benchmarks/results/auto.json``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmfuse.scoring import bootstrap_spread, log_of
from mmfuse.tasks.metrics import LABEL_METRICS

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
LabelScore = Callable[[np.ndarray, np.ndarray], float]  # (y (N,), labels (N,)) -> higher better


def label_score(metric: str, n_classes: int) -> LabelScore | None:
    """(y, labels) -> ``metric``, where it reads the predicted labels alone
    (``LABEL_METRICS``: macro-F1, accuracy); None where it reads probabilities."""
    if metric not in LABEL_METRICS:
        return None
    return lambda y, labels, weights=None: LABEL_METRICS[metric](y, labels, n_classes, weights)


def decide(probabilities: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """Class ids (N,) from probabilities (N, C) and a per-class shift (C,) of their logs."""
    if shift is None or not shift.any():
        return probabilities.argmax(axis=1)
    return (log_of(probabilities) + shift).argmax(axis=1)


def fit_shift(probabilities: np.ndarray, y: np.ndarray, score: LabelScore,
              draws: int = 50) -> tuple[np.ndarray, float]:
    """The per-class shift (C,) of ``-alpha * log prior`` whose labels score best on the
    out-of-fold ``probabilities`` (N, C) for the class ids ``y`` (N,), and its alpha; zeros
    and 0 when no alpha beats the arg-max by more than the noise."""
    n_classes = probabilities.shape[1]
    # One extra row a class: a class seen once in training must not get an infinite shift.
    log_prior = np.log((np.bincount(y, minlength=n_classes) + 1) / (len(y) + n_classes))
    labels = [decide(probabilities, -alpha * log_prior) for alpha in ALPHAS]
    scores = [score(y, decided) for decided in labels]
    best = int(np.argmax(scores))  # the first of equals: the smallest shift
    if best == 0:
        return np.zeros(n_classes), 0.0
    noise = bootstrap_spread(lambda rows: score(y[rows], labels[best][rows])
                             - score(y[rows], labels[0][rows]), np.arange(len(y)), draws)
    if scores[best] - scores[0] <= noise:
        return np.zeros(n_classes), 0.0
    return -ALPHAS[best] * log_prior, ALPHAS[best]


def nested_decisions(probabilities: np.ndarray, y: np.ndarray, score: LabelScore,
                     splits: list) -> np.ndarray:
    """Class ids (N,): each split's held-out rows decided by the shift fitted on the split's
    other rows, so that the labels' score does not count the luck of choosing alpha."""
    labels = probabilities.argmax(axis=1)
    for fit_rows, held_rows in splits:
        shift, _ = fit_shift(probabilities[fit_rows], y[fit_rows], score)
        labels[held_rows] = decide(probabilities[held_rows], shift)
    return labels
