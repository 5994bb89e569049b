"""Networks: the single-modality candidates, then fusions of the encoders that read each
modality best. Each is fitted on every fold the time allows, judged on the rows it did not
see, and kept (its fold models) for the ensemble of all candidates on small data.

Encoders whose single-modality scores are close are all tried in the first fusion: alone, a
modality may be weak whichever encoder reads it (easy-VQA's questions), and a cached frozen
encoder trains many more epochs in the same time than one that is not. A table without
images (or texts) fuses its other modality with the tabular tower.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mmfuse import deadline as clocks
from mmfuse.auto.budget import can_finish, expected_seconds
from mmfuse.auto.candidate_kind import CANDIDATE_KINDS, Search
from mmfuse.auto.contenders import best_pair, contenders, read_by_linear_members
from mmfuse.auto.judge import Evidence
from mmfuse.auto.leaderboard import LeaderboardRow, Status
from mmfuse.auto.portfolio import Candidate, fusion_candidates, single_candidates
from mmfuse.config import EncoderConfig
from mmfuse.data.rows import split_rows
from mmfuse.deadline import Deadline
from mmfuse.errors import MmfuseError
from mmfuse.fitted_model import FittedModel
from mmfuse.predictor import Predictor
from mmfuse.progress import CONSOLE

BUDGET_SHARES = 2.0  # a candidate may use twice its even share: most stop early and hand time on
MIN_SECONDS = 1.0  # below this, starting a candidate is pointless
# A fusion starts only with at least this share of the seconds it is expected to need (most
# stop early): one started with far less stops half-trained, below either modality alone.
START_SHARE = 0.5


def fuses(search: Search) -> bool:
    """Two modalities or more to fuse."""
    data = search.config.data
    return bool(data.image_cols) + bool(data.text_cols) + bool(data.tabular_cols) >= 2


@CANDIDATE_KINDS.register("networks", "single modalities, then fusions of the best encoders")
class Networks:
    stage = 1

    def planned(self, search: Search) -> int:
        fusions = len(search.plan.fusions) if fuses(search) else 0
        return len(single_candidates(search.config, search.plan)) + fusions

    def run(self, search: Search) -> None:
        preset, metric = search.plan, search.metric
        for candidate in single_candidates(search.config, preset):
            try_network(search, candidate)
        absent: list[EncoderConfig | None] = [None] if search.config.data.tabular_cols else []
        pairs = [(i, t) for i in contenders(search.leaderboard_, metric, "image", preset)
                 or absent
                 for t in contenders(search.leaderboard_, metric, "text", preset) or absent]
        search.planned += max(0, len(pairs) - 1)
        small = len(search.splits) > 1
        firsts = [c for i, t in pairs
                  for c in fusion_candidates(search.config, preset, i, t, small)[:1]]
        for candidate in firsts:
            try_network(search, candidate)
        pair = best_pair(search.leaderboard_, metric, firsts)
        if pair is not None:
            for candidate in fusion_candidates(search.config, preset, *pair, small)[1:]:
                try_network(search, candidate)


def try_network(search: Search, candidate: Candidate) -> None:
    """Fit ``candidate`` on the folds its time allows, judge it, record its row."""
    done = {r.candidate for r in search.leaderboard_ if not r.member}
    if candidate.name in done:
        return
    row = LeaderboardRow(candidate.name, single_modality=candidate.single,
                         model=dataclasses.asdict(candidate.config.model))
    if read_by_linear_members(search.leaderboard_, candidate):
        row.status, row.reason = Status.SKIPPED, "read by the linear members on TF-IDF n-grams"
        search.record(row)
        return
    left = max(1, search.planned - len(done))
    remaining = search.deadline.remaining()
    if remaining < MIN_SECONDS and search.leaderboard_:  # the first candidate always runs
        row.status, row.reason = Status.SKIPPED, "time limit"
        search.record(row)
        return
    if remaining < MIN_SECONDS:
        CONSOLE.print("[bold yellow]auto: reading the data and encoding features used the "
                      "whole time limit[/]; one candidate trains briefly. Raise --time-limit.")
    budget = min(remaining, BUDGET_SHARES * remaining / left)
    needed = expected_seconds(search.leaderboard_, candidate)
    if needed is not None and budget < START_SHARE * needed and search.leaderboard_:
        row.status = Status.SKIPPED
        row.reason = f"needs about {needed:.0f} s, {budget:.0f} s left to it"
        CONSOLE.print(f"auto: {candidate.name} {row.reason}; skipped")
        search.record(row)
        return
    CONSOLE.print(f"[bold]auto[/] [{len(done) + 1}/{search.planned}] {candidate.name} "
                  f"(up to {budget:.0f} s of {remaining:.0f} s left)")
    try:
        run = fit_folds(search, candidate, search.deadline.within(budget))
    except (MmfuseError, RuntimeError) as error:  # one bad candidate must not end the search
        row.status, row.reason = Status.FAILED, str(error)
        CONSOLE.print(f"auto: {candidate.name} failed: {error}")
        search.record(row)
        return
    evidence = run.evidence
    row.fit_s = round(run.seconds - run.predict_s, 2)
    row.predict_s_per_1k = round(run.predict_s * 1000 / int(evidence.covered.sum()), 4)
    row.val_metric = search.judge.score(evidence)
    row.folds = run.folds
    if search.bag_ is not None:
        search.bag_.add_network(candidate.name, run.kept, evidence.scores.copy(),
                                evidence.covered.copy(), config=candidate.config)
    if search.keep_candidates:
        search.candidates_[candidate.name] = run.first
    search.consider(candidate.name, run.first, evidence)
    CONSOLE.print(f"auto: {candidate.name}: val {search.metric} {row.val_metric:.4f} "
                  f"in {row.fit_s:.1f} s")
    search.record(row)


@dataclass
class FoldsRun:
    """A candidate fitted on the search's folds: the first fold's model (the one kept as the
    candidate), how many folds ran, what the bag keeps of their models, their pooled
    out-of-fold evidence, and the seconds it took (``predict_s`` of them predicting the
    held-out rows)."""

    first: Predictor
    folds: int
    kept: list[FittedModel]
    evidence: Evidence
    seconds: float
    predict_s: float


def fit_folds(search: Search, candidate: Candidate, deadline: Deadline) -> FoldsRun:
    """Fit ``candidate`` on the search's folds, as many as ``deadline`` allows (at least one:
    the folds done so far judge it)."""
    started = clocks.clock()
    evidence, first, predict_s, folds, kept = None, None, 0.0, 0, []
    for fold in search.splits:
        if folds and deadline.passed():
            break
        fitting, stopping = split_rows(fold.train, candidate.config)
        fitted_fold = Predictor(candidate.config).fit(
            fitting, stopping, deadline=deadline, cache=search.cache,
            classes=search.judge.classes)
        if folds and deadline.passed():
            break  # cut short by the time limit: a half-trained fold would misjudge it
        predicting = clocks.clock()
        scores, decoded, _ = fitted_fold.outputs(fold.held)
        predict_s += clocks.clock() - predicting
        evidence = search.judge.evidence_of(fold.positions, scores, decoded,
                                            fitted_fold.classes_, evidence)
        first = first or fitted_fold  # trained like any other
        if search.bag_ is not None:
            kept.append(search.bag_.share(fitted_fold.fitted_))
        folds += 1
        if folds == 1 and not can_finish(candidate.name, len(search.splits) - 1,
                                                    started, deadline):
            break
    assert evidence is not None and first is not None
    return FoldsRun(first, folds, kept, evidence, clocks.clock() - started, predict_s)
