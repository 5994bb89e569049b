"""Auto mode: try a portfolio of candidates under a time limit, keep the best on validation.

The candidates come from the registered candidate kinds (``auto/kinds/``: the linear
members, the networks, the ensemble of all), run by stage. Every candidate is judged on the
same held-out rows (``folds.py``) by the same statistic (``judge.py``): its pooled
out-of-fold outputs. Frozen features are computed once, planned against the deadline
(``frozen_features.py``); an interrupted search resumes (``resume.py``). Ties go to the
candidate tried first (single modalities before fusions), so the choice is never worse, on
validation, than the best single-modality candidate that ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfuse import deadline as clocks
from mmfuse.auto import bagging, linear
from mmfuse.auto.folds import validation_folds
from mmfuse.auto.frozen_features import EncodingPlan, encode_frozen
from mmfuse.auto.judge import Evidence
from mmfuse.auto.kinds import CANDIDATE_KINDS
from mmfuse.auto.kinds.networks import MIN_SECONDS
from mmfuse.auto.leaderboard import LeaderboardRow, Status, write_leaderboard
from mmfuse.auto.portfolio import Preset, beside_the_ensemble, get_preset, suited_to
from mmfuse.auto.resume import choice_evidence, resumed, save_choice
from mmfuse.config import Config
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

# Of the limit, kept for what follows the last candidate's deadline: its epoch under way is
# validated, its held-out rows predicted, the choice saved...
FINISH_RESERVE = 0.035
# ... and, on small data, for weighing every candidate's members together and saving that
# ensemble (its fold models among them).
ENSEMBLE_RESERVE = 0.015


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
        spent_before, rows_read = 0.0, None
        if resume:
            kept = resumed(run)
            self.leaderboard_, self.best_, self.best_name_ = kept.rows, kept.best, kept.best_name
            spent_before, rows_read = kept.elapsed_s, kept.rows_read
        self._elapsed = lambda: spent_before + clocks.clock() - started
        self._read(data, validation, base_dir)
        self.metric = selection_metric(self.config)
        self._run = run

        # Candidates stop short of the limit by a reserve for what follows them.
        def deadline(share: float) -> Deadline:
            reserve = max(MIN_SECONDS, share * self.time_limit)
            return Deadline(max(0.0, self.time_limit - spent_before - reserve
                                - (clocks.clock() - started)))

        # Encoding first, planned against the time left (and so the rows the candidates read)
        preset, (self.train_rows, self.val_rows), self.encoding_ = encode_frozen(
            suited_to(self.preset, self.train_rows, self.config), self.config,
            [self.train_rows, self.val_rows], self.cache,
            deadline(FINISH_RESERVE + ENSEMBLE_RESERVE), rows_read=rows_read)
        self.splits, self.judge = validation_folds(self.config, self.train_rows, self.val_rows,
                                                   self.preset.folds, self.metric)
        self.bag_ = self._bag(run, resume)
        self.deadline = deadline(FINISH_RESERVE + (ENSEMBLE_RESERVE if self.bag_ is not None else 0.0))
        if resume and self.best_ is not None:
            self._best_evidence = choice_evidence(run)
        self.plan = beside_the_ensemble(preset) if self.bag_ is not None else preset
        kinds = sorted((CANDIDATE_KINDS.get(name)() for name in CANDIDATE_KINDS.names()),
                       key=lambda kind: kind.stage)
        self.planned = sum(kind.planned(self) for kind in kinds)
        for kind in kinds:
            kind.run(self)
        failures = [r for r in self.leaderboard_ if r.status is Status.FAILED]
        if self.best_ is None and failures and len(failures) == len(self.leaderboard_):
            raise MmfuseError(f"every candidate failed; {failures[0].candidate}: "
                              f"{failures[0].reason}")
        if self.best_ is None:
            raise MmfuseError(
                f"no candidate finished within the time limit of {self.time_limit:.0f} s; "
                "raise --time-limit (feature encoding of a large dataset alone can take minutes)"
            )
        if len(self.splits) > 1:
            self._refit_best()
        sampled = ({} if self.encoding_.rows_read is None else
                   {"rows_read": self.encoding_.rows_read, "encoding": self.encoding_.note})
        self.best_.metrics_["auto"] = {"preset": self.preset.name, "chosen": self.best_name_,
                                       "time_limit_s": self.time_limit,
                                       "frozen_features_s": round(self.encoding_.seconds, 1),
                                       **sampled}
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
            self.train_rows, val = split_rows(frame, config)
        else:
            self.train_rows = frame
            classes = kind_for(config).fit_classes(config, frame)
            val = read_rows(validation, config, root, base_dir=base_dir, known_labels=classes)
        self.val_rows = val.copy()
        self.val_rows.attrs["skipped"] = []  # bad rows are reported once, with the training rows'
        self.cache = cache_for(config)

    def _bag(self, run: Path | None, resume: bool) -> bagging.Bag | None:
        """Small data, single-label: where candidates' members are kept for the ensemble of
        all candidates (in the run folder, if any: with ``resume``, the members an
        interrupted search kept there)."""
        single_label = get_task(self.config.data.task).single_label  # regression: not yet
        if len(self.splits) < 2 or not (linear.applies(self.config) and single_label):
            return None
        kept = run / bagging.BAG_DIR if run is not None else None
        if resume and kept is not None and kept.exists():
            finished = {r.candidate for r in self.leaderboard_}
            return bagging.Bag.restore(self.judge.y, kept, finished, self.judge.classes)
        bag = bagging.Bag(self.judge.y, kept)
        bag.discard()  # an earlier search's members in this run folder are not this one's
        return bag

    def _refit_best(self) -> None:
        """After k-fold judging, the chosen candidate is fitted once more on the plain split
        (90 % of the rows instead of a fold's 80 %), time permitting."""
        if self.deadline.remaining() < MIN_SECONDS or not self.best_.is_network:
            return  # an ensemble's members are already fitted on every row, or bagged
        CONSOLE.print(f"auto: refitting {self.best_name_} on the training split")
        refitted = Predictor(self.best_.config)
        try:
            refitted.fit(self.train_rows, self.val_rows, deadline=self.deadline, cache=self.cache,
                         classes=self.judge.classes)
        except (MmfuseError, RuntimeError) as error:
            CONSOLE.print(f"auto: refit failed ({error}); keeping the first fold's model")
            return
        if self.deadline.passed():  # stopped half-trained: worse than the judged model
            CONSOLE.print("auto: the refit ran out of time; keeping the first fold's model")
            return
        self.best_ = refitted

    def judge_ensemble(self, name: str, model: EnsembleModel, judged: np.ndarray,
                        labels: np.ndarray, scores: dict[str, float],
                        positions: np.ndarray | None = None) -> float:
        """An ensemble judged like any candidate by its probabilities ``judged`` (n, C) and
        class ids ``labels`` (n,) on the judging rows ``positions`` (default: all;
        ``scores``: its members' and combinations' own); returns its score."""
        positions = np.arange(len(judged)) if positions is None else positions
        evidence = self.judge.evidence_of(positions, judged, labels, model.classes)
        value = self.judge.score(evidence)
        model.metrics = {"validation": {self.metric: value}, "out_of_fold": scores}
        predictor = Predictor.of(model)
        self.consider(name, predictor, evidence)
        if self.keep_candidates:
            self.candidates_[name] = predictor
        return value

    def consider(self, name: str, predictor: Predictor, evidence: Evidence) -> None:
        """Keep ``predictor`` as the choice (and save it, with its evidence) when it beats the
        best so far on the judging rows both covered; ties go to the one tried first."""
        if self.judge.better(evidence, self._best_evidence):
            self.best_, self.best_name_, self._best_evidence = predictor, name, evidence
            if self._run is not None:
                save_choice(self._run, predictor, evidence)

    def record(self, *rows: LeaderboardRow) -> None:
        self.leaderboard_.extend(rows)
        for r in self.leaderboard_:
            r.chosen = r.candidate == self.best_name_
        if self._run is not None:
            self._write()

    def _write(self) -> None:
        self._run.mkdir(parents=True, exist_ok=True)
        write_leaderboard(self._run, self.metric, self.leaderboard_, preset=self.preset.name,
                          time_limit_s=self.time_limit, elapsed_s=round(self._elapsed(), 2),
                          **self.encoding_.info())
