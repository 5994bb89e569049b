"""One judge for every auto-mode candidate: the same held-out rows, the same statistic.

Each candidate leaves its *out-of-fold evidence*: the outputs, on each judging row, of the
model fitted without that row (k-fold on small data; on large data the one validation split).
A candidate's score is the selection metric of those pooled outputs, so a network and the
ensemble of linear members are measured alike. A candidate that finished only some folds has
evidence on fewer rows: it is compared with the best so far on the rows both covered, never
by its first fold against another's full k folds, and it must win there by more than the
noise of that comparison (below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmfuse.scoring import bootstrap_spread, is_better
from mmfuse.tasks import Task
from mmfuse.tasks.metrics import LABEL_METRICS

BOOTSTRAP_DRAWS = 50  # resamples of the shared rows that tell a win from noise


@dataclass
class Evidence:
    """Out-of-fold outputs on the N judging rows: ``scores`` (N, C) probabilities (values
    for regression), ``decoded`` (N,) or (N, C), and ``covered`` (N,) which rows have them."""

    scores: np.ndarray
    decoded: np.ndarray
    covered: np.ndarray

    def fill(self, positions: np.ndarray, scores: np.ndarray, decoded: np.ndarray) -> None:
        self.scores[positions] = scores.reshape(len(positions), -1)
        self.decoded[positions] = decoded.reshape(self.decoded[positions].shape)
        self.covered[positions] = True


class Judge:
    """Scores evidence on the judging rows whose targets are ``y`` (N,) or (N, C), each row
    counted ``weights`` (N,) times where given (``--weight-col``)."""

    def __init__(self, task: Task, metric: str, y: np.ndarray, classes: list[str] | None,
                 weights: np.ndarray | None = None) -> None:
        self.task, self.metric, self.y, self.classes = task, metric, y, classes
        self.weights = weights

    def evidence_of(self, positions: np.ndarray, scores: np.ndarray, decoded: np.ndarray,
                    classes: list[str] | None, evidence: Evidence | None = None) -> Evidence:
        """``evidence`` (new when None) with the outputs of a model over ``classes`` on the
        judging rows ``positions``, put in the judge's class order (a model fitted on one
        fold may not have seen every class)."""
        if classes is not None and self.classes is not None and classes != self.classes:
            index = np.asarray([self.classes.index(c) for c in classes])
            full = np.zeros((len(scores), len(self.classes)))
            full[:, index] = scores
            if decoded.ndim == 2:  # label indicators
                indicators = np.zeros((len(decoded), len(self.classes)), dtype=decoded.dtype)
                indicators[:, index] = decoded
                decoded = indicators
            else:
                decoded = index[decoded]
            scores = full
        evidence = evidence if evidence is not None else self.blank(scores.reshape(
            len(scores), -1).shape[1])
        evidence.fill(positions, scores, decoded)
        return evidence

    def blank(self, outputs: int) -> Evidence:
        """Evidence with no row covered yet, for a model with ``outputs`` scores per row."""
        n = len(self.y)
        decoded = np.zeros(self.y.shape, dtype=self.y.dtype)
        return Evidence(np.zeros((n, outputs)), decoded, np.zeros(n, dtype=bool))

    def score(self, evidence: Evidence, rows: np.ndarray | None = None) -> float:
        """The selection metric on the covered rows (or on ``rows``: a boolean mask, or
        positions)."""
        mask = evidence.covered if rows is None else rows
        weights = None if self.weights is None else self.weights[mask]
        if self.classes is not None and self.y.ndim == 1 and self.metric in LABEL_METRICS:
            return LABEL_METRICS[self.metric](self.y[mask], evidence.decoded[mask],
                                              len(self.classes), weights)
        scores = evidence.scores[mask]
        if self.classes is None:  # regression: one value per row
            scores = scores[:, 0]
        values: dict[str, Any] = self.task.metrics(self.y[mask], evidence.decoded[mask], scores,
                                                   self.classes or [], sample_weight=weights)
        return float(values[self.metric])

    def better(self, new: Evidence, best: Evidence | None) -> bool:
        """Is ``new`` better than ``best`` on the rows both covered (ties: no)?

        When ``new`` covers fewer rows than ``best`` (a candidate judged on fewer folds), it
        must win by more than one standard error of the difference, bootstrapped over the
        shared rows (the one-standard-error rule, Hastie et al., ESL 7.10, with the
        better-evidenced candidate in place of the simpler). The fewer rows a candidate is
        judged on, the likelier its best score is luck: on MATH-V, `concat` stopped after one
        fold scored 0.598 there, above every other candidate on that fold's rows; it
        became the choice and scored 0.540 on the test rows, where the ensemble scored 0.573.
        """
        if best is None:
            return True
        shared = np.flatnonzero(new.covered & best.covered)
        if not is_better(self.metric, self.score(new, shared), self.score(best, shared)):
            return False
        if new.covered.sum() >= best.covered.sum():
            return True
        noise = bootstrap_spread(lambda rows: self.gain(new, best, rows), shared, BOOTSTRAP_DRAWS)
        return self.gain(new, best, shared) > noise

    def gain(self, new: Evidence, best: Evidence, rows: np.ndarray) -> float:
        """How much better ``new`` scores than ``best`` on ``rows`` (positions; may repeat)."""
        difference = self.score(new, rows) - self.score(best, rows)
        return difference if is_better(self.metric, 1.0, 0.0) else -difference
