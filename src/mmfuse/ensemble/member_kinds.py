"""Which member reads a view of the data (trees, a prompt-started head or a linear model),
and a member's out-of-fold probabilities on given folds: what ``EnsembleModel`` fits, refits
and loads by."""

from __future__ import annotations

import numpy as np

from mmfuse.ensemble.inputs import MemberInputs, View
from mmfuse.ensemble.members import LinearMember
from mmfuse.ensemble.trees import TreeMember
from mmfuse.ensemble.zero_shot import ZERO_SHOT, ZeroShotMember

Folds = list[tuple[np.ndarray, np.ndarray]]  # (fitting rows, held-out rows) positions


def new_member(view: View, classes: list[str] | None, seed: int) -> LinearMember | TreeMember:
    """An unfitted member reading ``view``: trees for "tabular-trees", a linear model started
    from class prompts for "zero-shot", else a linear model."""
    if view.kind == "tabular-trees":
        return TreeMember(classes, seed)
    return linear_kind(view.kind)(view, classes)


def linear_kind(view: str) -> type[LinearMember]:
    """The linear member that reads a view of this kind: one started from zero-shot prompts
    for "zero-shot", else a logistic (or ridge) regression."""
    return ZeroShotMember if view == ZERO_SHOT else LinearMember


def out_of_fold(view: View, classes: list[str] | None, inputs: MemberInputs, y: np.ndarray,
                folds: Folds, *, seed: int = 0) -> np.ndarray:
    """(N, C) probabilities (regression: (N, 1) values) of a member fitted without each
    row's fold."""
    oof = np.zeros((len(y), 1 if classes is None else len(classes)))
    for fit_rows, held_rows in folds:
        member = new_member(view, classes, seed).fit(inputs.take(fit_rows), y[fit_rows])
        oof[held_rows] = member.predict_proba(inputs.take(held_rows))
    return oof
