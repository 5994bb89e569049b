"""Combining members' out-of-fold probabilities: ensemble selection and a stacked learner.

Both are judged on the same out-of-fold predictions (the stacker on its own nested folds, so
it is never scored on rows it was fitted on), and the better one is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LinearRegression

from mmfuse.ensemble.members import class_weights, fit_logistic_regression, softmax, spread
from mmfuse.scoring import fit_temperature, log_of
from mmfuse.training.stacking import fold_splits

# (y (N,), probabilities (N, C)[, weights=(N,) row weights]) -> higher is better
Score = Callable[..., float]
SELECTION_ROUNDS = 40
STACK_C = (0.03, 0.1, 0.3)
NESTED_FOLDS = 5  # folds of the out-of-fold rows that judge a combination


def scored(score: Score, y: np.ndarray, outputs: np.ndarray, weights: np.ndarray | None
           ) -> float:
    """``score`` of ``outputs`` for ``y``, each row counted ``weights`` times (where given)."""
    return score(y, outputs) if weights is None else score(y, outputs, weights=weights)


def ensemble_selection(oof: list[np.ndarray], y: np.ndarray, score: Score,
                       rounds: int = SELECTION_ROUNDS, weights: np.ndarray | None = None
                       ) -> np.ndarray:
    """Weights (M,) summing to 1: greedy forward selection with replacement (Caruana et al.,
    2004, as AutoGluon does): each round adds the member that makes the blend score best; the
    blend of the best-scoring round (the earliest, on ties) is kept, so a member that only
    lowers the out-of-fold score ends with weight 0."""
    picks: list[int] = []
    total = np.zeros_like(oof[0])
    best_score, best_picks = -np.inf, 1
    for round_ in range(1, rounds + 1):
        trials = [scored(score, y, (total + member) / round_, weights) for member in oof]
        pick = int(np.argmax(trials))
        picks.append(pick)
        total += oof[pick]
        if trials[pick] > best_score:
            best_score, best_picks = trials[pick], round_
    return np.bincount(picks[:best_picks], minlength=len(oof)) / best_picks


def blend(members: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, members, strict=True))


class Stacker:
    """Standardised log-probabilities of the members -> a regularised multinomial LR."""

    def __init__(self, c: float = 0.1) -> None:
        self.c = c

    def features(self, members: list[np.ndarray]) -> np.ndarray:
        return log_of(np.concatenate(members, axis=1))

    def fit(self, members: list[np.ndarray], y: np.ndarray, n_classes: int,
            sample_weight: np.ndarray | None = None) -> Stacker:
        z = self.features(members)
        self.mean, self.scale = z.mean(axis=0), spread(z)
        model = fit_logistic_regression((z - self.mean) / self.scale, y, self.c, sample_weight)
        self.coef, self.intercept = class_weights(model, n_classes)
        return self

    def predict_proba(self, members: list[np.ndarray]) -> np.ndarray:
        logits = ((self.features(members) - self.mean) / self.scale) @ self.coef.T + self.intercept
        return softmax(logits)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef,
                "intercept": self.intercept, "c": np.asarray([self.c])}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> Stacker:
        stacker = cls(float(arrays["c"][0]))
        stacker.mean, stacker.scale = arrays["mean"], arrays["scale"]
        stacker.coef, stacker.intercept = arrays["coef"], arrays["intercept"]
        return stacker


class ValueStacker:
    """Regression: the members' values -> their non-negative weighted sum plus a bias
    (scikit-learn's ``LinearRegression(positive=True)``), so a member helps or is ignored."""

    def fit(self, members: list[np.ndarray], y: np.ndarray, n_outputs: int = 1,
            sample_weight: np.ndarray | None = None) -> ValueStacker:
        model = LinearRegression(positive=True).fit(np.concatenate(members, axis=1), y,
                                                    sample_weight=sample_weight)
        self.coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
        self.intercept = np.asarray([model.intercept_], dtype=np.float64).reshape(1)
        return self

    def predict_proba(self, members: list[np.ndarray]) -> np.ndarray:
        """(N, 1) values (the name is the classification stacker's)."""
        return (np.concatenate(members, axis=1) @ self.coef + self.intercept).reshape(-1, 1)

    def state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": self.intercept}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> ValueStacker:
        stacker = cls()
        stacker.coef, stacker.intercept = arrays["coef"], arrays["intercept"]
        return stacker


def held_out(members: list[np.ndarray], y: np.ndarray, splits: list,
             fit: Callable[..., Callable[[list[np.ndarray]], np.ndarray]],
             weights: np.ndarray | None = None) -> np.ndarray:
    """(N, C) probabilities of every split's held-out rows, each predicted by what ``fit``
    learned on the split's other rows: ``fit(members' rows, their class ids, their weights or
    None)`` returns a function from members' rows to probabilities."""
    out_of_fold = np.zeros((len(y), members[0].shape[1]))
    for fit_rows, held_rows in splits:
        predict = fit([m[fit_rows] for m in members], y[fit_rows],
                      None if weights is None else weights[fit_rows])
        out_of_fold[held_rows] = predict([m[held_rows] for m in members])
    return out_of_fold


def nested_splits(y: np.ndarray, folds: int, seed: int) -> list:
    """The folds that judge a combination, other than the folds of the members' evidence."""
    return fold_splits(torch.from_numpy(y), folds, seed + 1)


def nested_selection(members: list[np.ndarray], y: np.ndarray, score: Score, seed: int, *,
                     folds: int = NESTED_FOLDS, weights: np.ndarray | None = None
                     ) -> tuple[float, np.ndarray, np.ndarray]:
    """Ensemble selection judged like the stacker: its out-of-fold score and probabilities
    (N, C), each fold's rows blended by weights selected on the other folds, and the weights
    (M,) selected on every row. Scored on the rows that chose them, the weights look better
    than they are (MATH-V: 0.60 there; fitted on half of the rows and scored on the other
    half, 0.585) and would win unfairly against the stacker and against single candidates."""
    def selected(fitting: list[np.ndarray], truth: np.ndarray,
                 counted: np.ndarray | None) -> Callable:
        chosen = ensemble_selection(fitting, truth, score, weights=counted)
        return lambda held: blend(held, chosen)

    oof = held_out(members, y, nested_splits(y, folds, seed), selected, weights)
    return (scored(score, y, oof, weights), oof,
            ensemble_selection(members, y, score, weights=weights))


def nested_stacking(members: list[np.ndarray], y: np.ndarray, n_classes: int | None,
                    score: Score, seed: int, *, folds: int = NESTED_FOLDS,
                    weights: np.ndarray | None = None
                    ) -> tuple[float, np.ndarray, Stacker | ValueStacker]:
    """The stacker's own out-of-fold score, probabilities (N, C) and the stacker refitted on
    every row, for the regularisation in ``STACK_C`` that scores best out of fold.
    ``n_classes`` None: regression, values (N, 1) and a ``ValueStacker``."""
    splits = nested_splits(y, folds, seed)
    if n_classes is None:
        oof = held_out(members, y, splits, lambda fitting, truth, counted:
                       ValueStacker().fit(fitting, truth, sample_weight=counted).predict_proba,
                       weights)
        return (scored(score, y, oof, weights), oof,
                ValueStacker().fit(members, y, sample_weight=weights))
    tried = []
    for c in STACK_C:
        oof = held_out(members, y, splits, lambda fitting, truth, counted, c=c:
                       Stacker(c).fit(fitting, truth, n_classes, counted).predict_proba, weights)
        tried.append((scored(score, y, oof, weights), oof, c))
    value, oof, c = max(tried, key=lambda t: t[0])  # the first of equals: the strongest penalty
    return value, oof, Stacker(c).fit(members, y, n_classes, weights)


def calibrated_temperature(probabilities: np.ndarray, y: np.ndarray) -> float:
    """The temperature on log-probabilities that minimises out-of-fold NLL."""
    logits = torch.from_numpy(log_of(probabilities)).float()
    return fit_temperature(logits, torch.from_numpy(y).long())


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(log_of(probabilities) / temperature)
