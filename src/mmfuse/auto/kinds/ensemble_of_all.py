"""Small data: every candidate's members weighed together on their out-of-fold evidence
(``bagging.py``), on every row and, with the networks judged on fewer folds, on the rows
they share; each becomes the choice only by beating the best so far. The leaderboard's
weights are then each member's in the better of the two."""

from __future__ import annotations

import numpy as np

from mmfuse import deadline as clocks
from mmfuse.auto import bagging, linear
from mmfuse.auto.candidate_kind import CANDIDATE_KINDS, Search
from mmfuse.auto.leaderboard import LeaderboardRow


@CANDIDATE_KINDS.register("ensemble of all", "every candidate's members, weighed together")
class EnsembleOfAll:
    stage = 3

    def planned(self, search: Search) -> int:
        return int(search.bag_ is not None)

    def run(self, search: Search) -> None:
        done = {r.candidate for r in search.leaderboard_}
        if search.bag_ is None or done & {bagging.NAME, bagging.SHARED_NAME}:
            return
        started = clocks.clock()
        rows, kept = [], None
        for name, model, scores, judged in search.bag_.ensembles(
                search.config, search.judge.classes, search.cache):
            value = search.judge_ensemble(name, model, model.out_of_fold,
                                          model.out_of_fold_labels, scores, judged)
            rows.append(LeaderboardRow(
                name, val_metric=value, fit_s=round(clocks.clock() - started, 2),
                method=model.method,
                folds=sum(bool(np.isin(f.positions, judged).all()) for f in search.splits)))
            if kept is None or search.best_name_ == name:
                kept = model
            started = clocks.clock()  # each row's seconds: its own combining and judging
        if kept is None:
            return
        weights: dict[str, float | None] = dict.fromkeys(
            (m.name for m in search.bag_.members(partial=True)[0]),
            None if kept.method == "stacking" else 0.0)
        if kept.method == "selection":  # a stacker weighs members per class: no one weight
            weights |= {m.name: round(float(w), 3)
                        for m, w in zip(kept.members, kept.weights, strict=True)}
        for row in search.leaderboard_:
            name = row.candidate.removeprefix("member: ")
            if name in weights and row.candidate != linear.NAME:
                row.weight = weights[name]
        search.record(*rows)
