"""A kind of auto-mode candidate, and what it sees of the search that runs it.

A kind is one file under ``auto/kinds/`` that registers itself in ``CANDIDATE_KINDS``, as a
fusion does in ``FUSIONS``: it says how many candidates it plans to try and, when its stage
comes, tries them (fits each on the search's folds, judges it, records its leaderboard rows).
The search runs the kinds by stage: what is cheap and informative first (the linear members),
then the networks, then what combines them all. Budgeting (``budget.py``), resuming
(``resume.py``) and the leaderboard (``leaderboard.py``) are the search's, shared by all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from mmfuse.registry import Registry

if TYPE_CHECKING:
    from mmfuse.auto.bagging import Bag
    from mmfuse.auto.folds import Fold
    from mmfuse.auto.judge import Evidence, Judge
    from mmfuse.auto.leaderboard import LeaderboardRow
    from mmfuse.auto.portfolio import Preset
    from mmfuse.config import Config
    from mmfuse.deadline import Deadline
    from mmfuse.ensemble.model import EnsembleModel
    from mmfuse.features.cache import FeatureCache
    from mmfuse.predictor import Predictor


class Search(Protocol):
    """The running search, as a candidate kind reads and reports to it."""

    config: Config
    plan: Preset  # the preset suited to this data, frozen features encoded
    metric: str
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    splits: list[Fold]
    judge: Judge
    cache: FeatureCache
    deadline: Deadline  # the candidates' own (the search keeps a reserve after it)
    bag_: Bag | None  # small data: where members are kept for the ensemble of all candidates
    leaderboard_: list[LeaderboardRow]
    planned: int  # candidates the search expects to try, for "[k/planned]"
    best_name_: str | None
    keep_candidates: bool
    candidates_: dict[str, Predictor]

    def record(self, *rows: LeaderboardRow) -> None:
        """Add rows to the leaderboard (and to the run folder's file)."""

    def consider(self, name: str, predictor: Predictor, evidence: Evidence) -> None:
        """Keep ``predictor`` as the choice where its evidence beats the best so far."""

    def judge_ensemble(self, name: str, model: EnsembleModel, judged: np.ndarray,
                       labels: np.ndarray, scores: dict[str, float],
                       positions: np.ndarray | None = None) -> float:
        """An ensemble judged like any candidate by its out-of-fold outputs; its score."""


class CandidateKind(Protocol):
    """``stage``: kinds run in this order; ``planned``: how many candidates it expects to
    try (before any ran); ``run``: try them."""

    stage: int

    def planned(self, search: Search) -> int: ...

    def run(self, search: Search) -> None: ...


CANDIDATE_KINDS: Registry[Any] = Registry("auto-mode candidate kind")
