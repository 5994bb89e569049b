"""Small data, time left over: the networks fitted again on the same folds with other seeds.

A network's k fold models differ from another seed's by their initialisation, dropout masks
and batch order; on a few thousand rows that variance is a large part of their error.
Averaging seeds (repeated bagging, as AutoGluon's bag sets) lowers it at no risk to the
judging: every row's out-of-fold probabilities still come from models that did not see it.
The networks the search would otherwise leave idle time for are repeated, the best judged
first, each only where its folds fit in what is left, up to the preset's ``seeds`` (fast: 1,
medium: 2, best: 3); each member then averages every seed's fold models
(``bagging.Bag.repeat``) before the ensemble of all candidates weighs it.
"""

from __future__ import annotations

import copy

from mmfuse.auto.candidate_kind import CANDIDATE_KINDS, Search
from mmfuse.auto.kinds.networks import fit_folds
from mmfuse.auto.leaderboard import LeaderboardRow, Status
from mmfuse.auto.portfolio import Candidate
from mmfuse.errors import MmfuseError
from mmfuse.progress import CONSOLE
from mmfuse.scoring import greater_is_better

# A repeat starts only where what is left is this many times what its first seed took
# (a machine's speed varies by ±20-40 % between runs; a repeat cut short is wasted).
MARGIN = 1.5


@CANDIDATE_KINDS.register("repeats", "the networks' folds again with other seeds, time "
                                     "permitting (small data)")
class Repeats:
    stage = 2

    def planned(self, search: Search) -> int:
        return 0  # only with time nobody else asked for: not counted ahead

    def run(self, search: Search) -> None:
        bag = search.bag_
        if bag is None:
            return
        rows = {r.candidate: r for r in search.leaderboard_ if not r.member}
        ranked = sorted((r for r in rows.values() if r.candidate in bag.configs
                         and r.val_metric is not None and r.fit_s and r.folds == len(
                             search.splits)),
                        key=lambda r: r.val_metric, reverse=greater_is_better(search.metric))
        for seed in range(2, search.plan.seeds + 1):
            for row in ranked:  # one that does not fit is passed over: a worse one may be faster
                if bag.seeds[row.candidate] < seed:
                    self._repeat(search, row, seed)

    def _repeat(self, search: Search, row: LeaderboardRow, seed: int) -> bool:
        """Fit ``row``'s network with its ``seed``-th seed; False where it would not fit,
        failed or was cut short."""
        assert search.bag_ is not None and row.fit_s is not None
        remaining = search.deadline.remaining()
        if remaining < MARGIN * row.fit_s:
            return False
        config = copy.deepcopy(search.bag_.configs[row.candidate])
        config.train.seed += seed - 1
        CONSOLE.print(f"[bold]auto[/] {row.candidate}, seed {seed} (about {row.fit_s:.0f} s "
                      f"of {remaining:.0f} s left)")
        try:
            run = fit_folds(search, Candidate(row.candidate, config, row.single_modality),
                            search.deadline)
        except (MmfuseError, RuntimeError) as error:
            CONSOLE.print(f"auto: {row.candidate}, seed {seed} failed: {error}")
            return False
        if run.folds < len(search.splits):  # cut short: its rows' evidence would be uneven
            return False
        search.bag_.repeat(row.candidate, run.kept, run.evidence.scores)
        search.record(LeaderboardRow(
            f"member: {row.candidate}, seed {seed}", Status.MEMBER,
            "fitted again on the same folds; its member averages every seed",
            val_metric=search.judge.score(run.evidence), folds=run.folds, member=True,
            fit_s=round(run.seconds - run.predict_s, 2)))
        return True
