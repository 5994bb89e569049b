"""The ensemble of linear members: tried first, cheap and strong on small tables. Its
members are listed on the leaderboard with their out-of-fold scores."""

from __future__ import annotations

from mmfuse import deadline as clocks
from mmfuse.auto import linear
from mmfuse.auto.candidate_kind import CANDIDATE_KINDS, Search
from mmfuse.auto.leaderboard import LeaderboardRow, Status
from mmfuse.errors import MmfuseError
from mmfuse.progress import CONSOLE


@CANDIDATE_KINDS.register("linear members", "LR / ridge on TF-IDF, frozen features, tables")
class LinearMembers:
    stage = 0

    def planned(self, search: Search) -> int:
        return int(linear.applies(search.config))

    def run(self, search: Search) -> None:
        if not linear.applies(search.config) or linear.NAME in {
                r.candidate for r in search.leaderboard_}:
            return
        CONSOLE.print(f"[bold]auto[/] [1/{search.planned}] {linear.NAME}")
        started = clocks.clock()
        try:
            model, judged, labels, scores = linear.fit_linear(
                search.config, search.train_rows, search.val_rows, search.plan, search.cache,
                small_data=len(search.splits) > 1, classes=search.judge.classes)
        except (MmfuseError, ValueError) as error:  # one bad candidate must not end the search
            CONSOLE.print(f"auto: {linear.NAME} failed: {error}")
            search.record(LeaderboardRow(linear.NAME, Status.FAILED, str(error)))
            return
        fit_s = clocks.clock() - started
        if search.bag_ is not None:
            search.bag_.add_linear(model)
        value = search.judge_ensemble(linear.NAME, model, judged, labels, scores)
        # The ensemble's row first: on a tie with one of its members it ranks first.
        search.record(LeaderboardRow(linear.NAME, val_metric=value, fit_s=round(fit_s, 2),
                                     folds=len(search.splits), method=model.method), *[
            LeaderboardRow(f"member: {member.name}", Status.MEMBER, "out of fold",
                           val_metric=scores[member.name], member=True, view=member.view.kind,
                           weight=None if model.method == "stacking" else round(float(weight), 3))
            for member, weight in zip(model.members, model.weights, strict=True)])
