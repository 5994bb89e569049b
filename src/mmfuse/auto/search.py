"""Auto mode: try a portfolio of candidates under a time limit, keep the best on validation.

Every candidate is judged on the same held-out rows (``folds.py``) by the same statistic
(``judge.py``): its pooled out-of-fold outputs. Frozen features are computed once, planned
against the deadline (``frozen_features.py``); an interrupted search resumes (``resume.py``).
Ties go to the candidate tried first (single modalities before fusions), so the choice is
never worse, on validation, than the best single-modality candidate that ran.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mmfuse import deadline as clocks
from mmfuse.auto import bagging, linear
from mmfuse.auto.budget import can_finish, expected_seconds
from mmfuse.auto.contenders import best_pair, contenders, read_by_linear_members
from mmfuse.auto.folds import validation_folds
from mmfuse.auto.frozen_features import EncodingPlan, encode_frozen
from mmfuse.auto.judge import Evidence
from mmfuse.auto.leaderboard import LeaderboardRow, Status, write_leaderboard
from mmfuse.auto.portfolio import (
    Candidate,
    Preset,
    beside_the_ensemble,
    fusion_candidates,
    get_preset,
    single_candidates,
    suited_to,
)
from mmfuse.auto.resume import choice_evidence, resumed, save_choice
from mmfuse.config import Config, EncoderConfig
from mmfuse.data.rows import read_rows, split_rows
from mmfuse.deadline import Deadline
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.features.assembly import cache_for
from mmfuse.features.cache import cache_root
from mmfuse.model_kinds import kind_for
from mmfuse.predictor import Data, Predictor
from mmfuse.progress import CONSOLE
from mmfuse.tasks import get_task, selection_metric

BUDGET_SHARES = 2.0  # a candidate may use twice its even share: most stop early and hand time on
MIN_SECONDS = 1.0  # below this, starting a candidate is pointless
# Of the limit, kept for what follows the last candidate's deadline: its epoch under way is
# validated, its held-out rows predicted, the choice saved (without it: 180.1-180.3 s of 180;
# at 2 %, easy-VQA ended at 180.2 s once, its 3,858 held-out rows predicted after the deadline).
FINISH_RESERVE = 0.035
# ... and, on small data, for weighing every candidate together and saving that ensemble
# (MATH-V: ~2 s to weigh 8-12 members on nested folds, then their fold models are saved; the
# first run, with no reserve, ended at 186 s of 180; with 5 % in all, at 166-174 s).
ENSEMBLE_RESERVE = 0.015
# A fusion starts only with at least this share of the seconds it is expected to need (most
# stop early): on easy-VQA, `stack` (six tower fits, about 230 s) once started with 14 s left,
# stopped half-trained and scored 0.04 macro-F1, below either modality alone.
START_SHARE = 0.5


class AutoSearch:
    """``AutoSearch(config, preset).fit(data)`` -> the chosen, fitted Predictor.

    ``config`` supplies the data columns, task and training settings; its model section is
    what the candidates vary. Fitted: ``leaderboard_`` (rows, tried order), ``best_`` (the
    chosen Predictor), ``best_name_``, ``bag_`` (small data: the members the ensemble of all
    candidates weighed, else None) and, with ``keep_candidates``, ``candidates_``.
    """

    def __init__(
        self, config: Config | None = None, preset: str | Preset = "medium",
        time_limit: float | None = None, keep_candidates: bool = False,
    ) -> None:
        self.config = config if config is not None else Config()
        self.keep_candidates = keep_candidates  # ``candidates_``: every fitted one (benchmarks)
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.time_limit = float(time_limit if time_limit is not None else self.preset.time_limit)
        if not 0 < self.time_limit < float("inf"):
            raise ConfigError(f"the time limit (--time-limit) must be a positive number of "
                              f"seconds, got {time_limit!r}")
        self.config.validate()  # every setting checked before any work

    def fit(
        self, data: Data, validation: Data | None = None, *, base_dir: str | Path | None = None,
        run_dir: str | Path | None = None, resume: bool = False,
    ) -> Predictor:
        started = clocks.clock()
        run = Path(run_dir) if run_dir is not None else None
        self.leaderboard_: list[LeaderboardRow] = []
        self.best_: Predictor | None = None
        self.best_name_: str | None = None
        self.candidates_: dict[str, Predictor] = {}
        self._best_evidence: Evidence | None = None
        self.encoding_ = EncodingPlan()  # ``encode_frozen``'s, once it has run
        spent_before = 0.0
        if resume:
            kept = resumed(run)
            self.leaderboard_, self.best_, self.best_name_ = kept.rows, kept.best, kept.best_name
            spent_before = kept.elapsed_s
        self._elapsed = lambda: spent_before + clocks.clock() - started
        self._read(data, validation, base_dir)
        self._metric = selection_metric(self.config)
        self._run = run
        self._splits, self._judge = validation_folds(self.config, self._train, self._val,
                                                     self.preset.folds, self._metric)
        self.bag_ = self._bag(run, resume)
        # Candidates stop short of the limit by a reserve for what follows them.
        share = FINISH_RESERVE + (ENSEMBLE_RESERVE if self.bag_ is not None else 0.0)
        reserve = max(MIN_SECONDS, share * self.time_limit)
        self._deadline = Deadline(max(0.0, self.time_limit - spent_before - reserve
                                      - (clocks.clock() - started)))
        if resume and self.best_ is not None:
            self._best_evidence = choice_evidence(run)

        preset = suited_to(self.preset, self._train, self.config)
        if self.bag_ is not None:
            preset = beside_the_ensemble(preset)
        preset, self.encoding_ = encode_frozen(preset, self.config, [self._train, self._val],
                                               self._cache, self._deadline)
        singles = single_candidates(self.config, preset)
        data = self.config.data
        tabular = bool(data.tabular_cols)
        fuses = bool(data.image_cols) + bool(data.text_cols) + tabular >= 2
        self._planned = len(singles) + (len(preset.fusions) if fuses else 0)
        self._planned += self.bag_ is not None
        if linear.applies(self.config):
            self._planned += 1
            self._try_linear(preset)
        for candidate in singles:
            self._try(candidate)
        # Encoders whose single-modality scores are close are all tried in the first fusion:
        # alone, a modality may be weak whichever encoder reads it (easy-VQA's questions), and
        # a cached frozen encoder trains many more epochs in the same time than one that is not.
        # A table without images (or texts) fuses its other modality with the tabular tower.
        absent: list[EncoderConfig | None] = [None] if tabular else []
        pairs = [(i, t) for i in contenders(self.leaderboard_, self._metric, "image", preset)
                 or absent
                 for t in contenders(self.leaderboard_, self._metric, "text", preset) or absent]
        self._planned += max(0, len(pairs) - 1)
        small = len(self._splits) > 1
        firsts = [fusion_candidates(self.config, preset, i, t, small)[:1] for i, t in pairs]
        for candidate in [c for first in firsts for c in first]:
            self._try(candidate)
        pair = best_pair(self.leaderboard_, self._metric, [c for first in firsts for c in first])
        if pair is not None:
            for candidate in fusion_candidates(self.config, preset, *pair, small)[1:]:
                self._try(candidate)
        self._try_ensemble_of_all()
        failures = [r for r in self.leaderboard_ if r.status is Status.FAILED]
        if self.best_ is None and failures and len(failures) == len(self.leaderboard_):
            raise MmfuseError(f"every candidate failed; {failures[0].candidate}: "
                              f"{failures[0].reason}")
        if self.best_ is None:
            raise MmfuseError(
                f"no candidate finished within the time limit of {self.time_limit:.0f} s; "
                "raise --time-limit (feature encoding of a large dataset alone can take minutes)"
            )
        if len(self._splits) > 1:
            self._refit_best()
        self.best_.metrics_["auto"] = {"preset": self.preset.name, "chosen": self.best_name_,
                                       "time_limit_s": self.time_limit,
                                       "frozen_features_s": round(self.encoding_.seconds, 1)}
        if run is not None:
            self.best_.save(run)
            self._write()
        if self.bag_ is not None:
            self.bag_.discard()
        return self.best_

    # ------------------------------------------------------------ internals
    def _read(self, data: Data, validation: Data | None, base_dir: str | Path | None) -> None:
        """Training and validation rows, read once, and one feature cache for every candidate
        (features are computed once)."""
        config = self.config.validate()
        root = cache_root(config.cache_dir)
        frame = read_rows(data, config, root, base_dir=base_dir)
        if validation is None:
            self._train, val = split_rows(frame, config)
        else:
            self._train = frame
            classes = kind_for(config).fit_classes(config, frame)
            val = read_rows(validation, config, root, base_dir=base_dir, known_labels=classes)
        self._val = val.copy()
        self._val.attrs["skipped"] = []  # bad rows are reported once, with the training rows'
        self._cache = cache_for(config)

    def _bag(self, run: Path | None, resume: bool) -> bagging.Bag | None:
        """Small data, single-label: where candidates' members are kept for the ensemble of
        all candidates (in the run folder, if any: with ``resume``, the members an
        interrupted search kept there)."""
        single_label = get_task(self.config.data.task).single_label  # regression: not yet
        if len(self._splits) < 2 or not (linear.applies(self.config) and single_label):
            return None
        kept = run / bagging.BAG_DIR if run is not None else None
        if resume and kept is not None and kept.exists():
            finished = {r.candidate for r in self.leaderboard_}
            return bagging.Bag.restore(self._judge.y, kept, finished, self._judge.classes)
        bag = bagging.Bag(self._judge.y, kept)
        bag.discard()  # an earlier search's members in this run folder are not this one's
        return bag

    def _refit_best(self) -> None:
        """After k-fold judging, the chosen candidate is fitted once more on the plain split
        (90 % of the rows instead of a fold's 80 %), time permitting."""
        if self._deadline.remaining() < MIN_SECONDS or not self.best_.is_network:
            return  # an ensemble's members are already fitted on every row, or bagged
        CONSOLE.print(f"auto: refitting {self.best_name_} on the training split")
        refitted = Predictor(self.best_.config)
        try:
            refitted.fit(self._train, self._val, deadline=self._deadline, cache=self._cache,
                         classes=self._judge.classes)
        except (MmfuseError, RuntimeError) as error:
            CONSOLE.print(f"auto: refit failed ({error}); keeping the first fold's model")
            return
        if self._deadline.passed():  # stopped half-trained: worse than the judged model
            CONSOLE.print("auto: the refit ran out of time; keeping the first fold's model")
            return
        self.best_ = refitted

    def _try(self, candidate: Candidate) -> None:
        done = {r.candidate for r in self.leaderboard_ if not r.member}
        if candidate.name in done:
            return
        row = LeaderboardRow(candidate.name, single_modality=candidate.single,
                             model=dataclasses.asdict(candidate.config.model))
        if read_by_linear_members(self.leaderboard_, candidate):
            row.status, row.reason = Status.SKIPPED, "read by the linear members on TF-IDF n-grams"
            self._record(row)
            return
        left = max(1, self._planned - len(done))
        remaining = self._deadline.remaining()
        if remaining < MIN_SECONDS and self.leaderboard_:  # the first candidate always runs
            row.status, row.reason = Status.SKIPPED, "time limit"
            self._record(row)
            return
        if remaining < MIN_SECONDS:
            CONSOLE.print("[bold yellow]auto: reading the data and encoding features used the "
                          "whole time limit[/]; one candidate trains briefly. Raise --time-limit.")
        budget = min(remaining, BUDGET_SHARES * remaining / left)
        needed = expected_seconds(self.leaderboard_, candidate)
        if needed is not None and budget < START_SHARE * needed and self.leaderboard_:
            row.status = Status.SKIPPED
            row.reason = f"needs about {needed:.0f} s, {budget:.0f} s left to it"
            CONSOLE.print(f"auto: {candidate.name} {row.reason}; skipped")
            self._record(row)
            return
        CONSOLE.print(f"[bold]auto[/] [{len(done) + 1}/{self._planned}] {candidate.name} "
                      f"(up to {budget:.0f} s of {remaining:.0f} s left)")
        deadline = self._deadline.within(budget)
        started = clocks.clock()
        evidence, predict_s, folds, fold_models = None, 0.0, 0, []
        try:
            for fold in self._splits:
                if folds and deadline.passed():
                    break  # the folds done so far judge the candidate
                fitting, stopping = split_rows(fold.train, candidate.config)
                fitted_fold = Predictor(candidate.config).fit(
                    fitting, stopping, deadline=deadline, cache=self._cache,
                    classes=self._judge.classes)
                if folds and deadline.passed():
                    break  # cut short by the time limit: a half-trained fold would misjudge it
                predicting = clocks.clock()
                scores, decoded, _ = fitted_fold.outputs(fold.held)
                predict_s += clocks.clock() - predicting
                evidence = self._judge.evidence_of(fold.positions, scores, decoded,
                                                   fitted_fold.classes_, evidence)
                if not folds:  # the model kept is the first split's: trained like any other
                    predictor = fitted_fold
                if self.bag_ is not None:
                    fold_models.append(self.bag_.share(fitted_fold.fitted_))
                folds += 1
                if folds == 1 and not can_finish(candidate.name, len(self._splits) - 1, started,
                                                 deadline):
                    break
        except (MmfuseError, RuntimeError) as error:  # one bad candidate must not end the search
            row.status, row.reason = Status.FAILED, str(error)
            CONSOLE.print(f"auto: {candidate.name} failed: {error}")
            self._record(row)
            return
        row.fit_s = round(clocks.clock() - started - predict_s, 2)
        row.predict_s_per_1k = round(predict_s * 1000 / int(evidence.covered.sum()), 4)
        row.val_metric = self._judge.score(evidence)
        row.folds = folds
        if self.bag_ is not None:
            self.bag_.add_network(candidate.name, fold_models, evidence.scores.copy(),
                                  evidence.covered.copy())
        if self.keep_candidates:
            self.candidates_[candidate.name] = predictor
        self._consider(candidate.name, predictor, evidence)
        CONSOLE.print(f"auto: {candidate.name}: val {self._metric} {row.val_metric:.4f} "
                      f"in {row.fit_s:.1f} s")
        self._record(row)

    def _try_linear(self, preset: Preset) -> None:
        """The ensemble of linear members, first: cheap, and strong on small tables. Its
        members are listed on the leaderboard with their out-of-fold scores."""
        if linear.NAME in {r.candidate for r in self.leaderboard_}:
            return
        CONSOLE.print(f"[bold]auto[/] [1/{self._planned}] {linear.NAME}")
        started = clocks.clock()
        try:
            model, judged, labels, scores = linear.fit_linear(
                self.config, self._train, self._val, preset, self._cache,
                len(self._splits) > 1, self._judge.classes)
        except (MmfuseError, ValueError) as error:  # one bad candidate must not end the search
            CONSOLE.print(f"auto: {linear.NAME} failed: {error}")
            self._record(LeaderboardRow(linear.NAME, Status.FAILED, str(error)))
            return
        fit_s = clocks.clock() - started
        if self.bag_ is not None:
            self.bag_.add_linear(model)
        value = self._judge_ensemble(linear.NAME, model, judged, labels, scores)
        # The ensemble's row first: on a tie with one of its members it ranks first.
        self._record(LeaderboardRow(linear.NAME, val_metric=value, fit_s=round(fit_s, 2),
                                    folds=len(self._splits), method=model.method), *[
            LeaderboardRow(f"member: {member.name}", Status.MEMBER, "out of fold",
                           val_metric=scores[member.name], member=True, view=member.view.kind,
                           weight=None if model.method == "stacking" else round(float(weight), 3))
            for member, weight in zip(model.members, model.weights, strict=True)])

    def _try_ensemble_of_all(self) -> None:
        """Small data: every candidate's members weighed together on their out-of-fold
        evidence (``bagging.py``), on every row and, with the networks judged on fewer folds,
        on the rows they share; each becomes the choice only by beating the best so far. The
        leaderboard's weights are then each member's in the better of the two."""
        done = {r.candidate for r in self.leaderboard_}
        if self.bag_ is None or done & {bagging.NAME, bagging.SHARED_NAME}:
            return
        started = clocks.clock()
        rows, kept = [], None
        for name, model, scores, judged in self.bag_.ensembles(self.config, self._judge.classes,
                                                               self._cache):
            value = self._judge_ensemble(name, model, model.out_of_fold,
                                         model.out_of_fold_labels, scores, judged)
            rows.append(LeaderboardRow(
                name, val_metric=value, fit_s=round(clocks.clock() - started, 2),
                method=model.method,
                folds=sum(bool(np.isin(f.positions, judged).all()) for f in self._splits)))
            if kept is None or self.best_name_ == name:
                kept = model
            started = clocks.clock()  # each row's seconds: its own combining and judging
        if kept is None:
            return
        weights: dict[str, float | None] = dict.fromkeys(
            (m.name for m in self.bag_.members(partial=True)[0]),
            None if kept.method == "stacking" else 0.0)
        if kept.method == "selection":  # a stacker weighs members per class: no one weight
            weights |= {m.name: round(float(w), 3)
                        for m, w in zip(kept.members, kept.weights, strict=True)}
        for row in self.leaderboard_:
            name = row.candidate.removeprefix("member: ")
            if name in weights and row.candidate != linear.NAME:
                row.weight = weights[name]
        self._record(*rows)

    def _judge_ensemble(self, name: str, model: EnsembleModel, judged: np.ndarray,
                        labels: np.ndarray, scores: dict[str, float],
                        positions: np.ndarray | None = None) -> float:
        """An ensemble judged like any candidate by its probabilities ``judged`` (n, C) and
        class ids ``labels`` (n,) on the judging rows ``positions`` (default: all;
        ``scores``: its members' and combinations' own); returns its score."""
        positions = np.arange(len(judged)) if positions is None else positions
        evidence = self._judge.evidence_of(positions, judged, labels, model.classes)
        value = self._judge.score(evidence)
        model.metrics = {"validation": {self._metric: value}, "out_of_fold": scores}
        predictor = Predictor.of(model)
        self._consider(name, predictor, evidence)
        if self.keep_candidates:
            self.candidates_[name] = predictor
        return value

    def _consider(self, name: str, predictor: Predictor, evidence: Evidence) -> None:
        """Keep ``predictor`` as the choice (and save it, with its evidence) when it beats the
        best so far on the judging rows both covered; ties go to the one tried first."""
        if self._judge.better(evidence, self._best_evidence):
            self.best_, self.best_name_, self._best_evidence = predictor, name, evidence
            if self._run is not None:
                save_choice(self._run, predictor, evidence)

    def _record(self, *rows: LeaderboardRow) -> None:
        self.leaderboard_.extend(rows)
        for r in self.leaderboard_:
            r.chosen = r.candidate == self.best_name_
        if self._run is not None:
            self._write()

    def _write(self) -> None:
        self._run.mkdir(parents=True, exist_ok=True)
        write_leaderboard(self._run, self._metric, self.leaderboard_, preset=self.preset.name,
                          time_limit_s=self.time_limit, elapsed_s=round(self._elapsed(), 2),
                          **self.encoding_.info())
