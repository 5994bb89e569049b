"""One judge for every auto-mode candidate: the same held-out rows, the same statistic.

Each candidate leaves its *out-of-fold evidence*: the outputs, on each judging row, of the
model fitted without that row (k-fold on small data; on large data the one validation split).
A candidate's score is the selection metric of those pooled outputs, so a network and the
ensemble of linear members are measured alike. A candidate that finished only some folds has
evidence on fewer rows: it is compared with the best so far on the rows both covered, never
by its first fold against another's full k folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmfuse.scoring import is_better
from mmfuse.tasks import Task


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
    """Scores evidence on the judging rows whose targets are ``y`` (N,) or (N, C)."""

    def __init__(self, task: Task, metric: str, y: np.ndarray, classes: list[str] | None) -> None:
        self.task, self.metric, self.y, self.classes = task, metric, y, classes

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
        """The selection metric on the covered rows (or on ``rows``, a boolean mask)."""
        mask = evidence.covered if rows is None else rows
        scores = evidence.scores[mask]
        if self.classes is None:  # regression: one value per row
            scores = scores[:, 0]
        values: dict[str, Any] = self.task.metrics(self.y[mask], evidence.decoded[mask], scores,
                                                   self.classes or [])
        return float(values[self.metric])

    def better(self, new: Evidence, best: Evidence | None) -> bool:
        """Is ``new`` better than ``best`` on the rows both covered (ties: no)?"""
        if best is None:
            return True
        shared = new.covered & best.covered
        return is_better(self.metric, self.score(new, shared), self.score(best, shared))
