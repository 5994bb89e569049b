"""What a candidate's time buys: a fusion's expected seconds before it starts, and whether
a candidate's other folds fit in what is left after its first."""

from __future__ import annotations

import dataclasses

from mmfuse import deadline as clocks
from mmfuse.auto.leaderboard import LeaderboardRow, singles_of
from mmfuse.auto.portfolio import Candidate
from mmfuse.deadline import Deadline
from mmfuse.fusion import FUSIONS
from mmfuse.fusion.stack import FOLDS as STACK_FOLDS
from mmfuse.progress import CONSOLE


def expected_seconds(rows: list[LeaderboardRow], candidate: Candidate) -> float | None:
    """What a fusion should take, before it starts: the fit seconds of the single-modality
    candidates (leaderboard ``rows``) on its encoders, summed (it trains a tower's worth per
    modality), times (folds + 1) for a fusion trained by stacking (its towers out of fold,
    then on every row). None for a single modality, or when its singles did not run."""
    model = candidate.config.model
    if candidate.single:
        return None
    singles = singles_of(rows, dataclasses.asdict(model))
    # the tabular tower, a small MLP, adds little to a fusion's time and has no single
    if len(singles) < len([m for m in model.modalities if m != "tabular"]):
        return None
    seconds = sum(r.fit_s or 0.0 for r in singles)
    fusion = FUSIONS.get(model.fusion)
    return seconds * (STACK_FOLDS + 1 if fusion.trained_by_stacking else 1)


def can_finish(name: str, others: int, started: float, deadline: Deadline) -> bool:
    """Whether a candidate's ``others`` folds, each costing what its first did (begun at
    ``started``), fit in its time. If not, it stops after one fold (judged on that fold's
    rows; it joins the ensemble on the shared rows only) and its time goes to the candidates
    after it, instead of to folds the limit would cut (MATH-V: `late` spent 43 s of its 44 s
    on two folds and a third the limit cut, and `gated`, after it, had 22 s: one fold and a
    cut one)."""
    needed = (clocks.clock() - started) * others
    if others == 0 or needed <= deadline.remaining():
        return True
    CONSOLE.print(f"auto: {name}: its other {others} folds would need about {needed:.0f} s of "
                  f"the {deadline.remaining():.0f} s left to it; judged on one fold, its time "
                  "goes to the candidates after it")
    return False
