"""An ensemble of members combined on out-of-fold evidence: the model contract's third kind
(beside a single network and a dual encoder). Members are linear (``members.py``) or
networks bagged over their folds (``networks.py``).

``EnsembleModel.fit`` computes every member's out-of-fold probabilities on the given folds,
combines them by ensemble selection or by a stacked learner (whichever scores better out of
fold; neither is ever scored on rows it was fitted on), fits a temperature on the combined
out-of-fold probabilities and, for a label metric such as macro-F1, the label decision
(``decision.py``), and refits the members on every row.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.config import Config
from mmfuse.encoders.base import Encoder
from mmfuse.ensemble.combine import (
    NESTED_FOLDS,
    Stacker,
    ValueStacker,
    blend,
    calibrated_temperature,
    nested_selection,
    nested_splits,
    nested_stacking,
    tempered,
)
from mmfuse.ensemble.inputs import MemberInputs, View, encoder_for
from mmfuse.ensemble.member_kinds import Folds, linear_kind, new_member, out_of_fold
from mmfuse.ensemble.members import LinearMember
from mmfuse.ensemble.networks import NetworkMember
from mmfuse.ensemble.trees import TreeMember
from mmfuse.errors import CheckpointError, ConfigError, MmfuseError
from mmfuse.features.assembly import HoldsFeatureCache
from mmfuse.features.cache import FeatureCache
from mmfuse.features.items import Item
from mmfuse.model_folder import ModelFolder
from mmfuse.progress import CONSOLE
from mmfuse.scoring import log_of
from mmfuse.tasks import Task, get_task, selection_metric
from mmfuse.tasks.decision import decide, fit_shift, label_score, nested_decisions

Member = LinearMember | TreeMember | NetworkMember
MEMBERS_DIR = "members"  # members' own files: members/<i>/ (a network's fold model folders)


@dataclass
class EnsembleModel(HoldsFeatureCache):
    config: Config
    classes: list[str] | None  # None: regression
    members: list[Member]
    method: str  # "selection" or "stacking"
    weights: np.ndarray  # (M,) selection weights (stacking: unused)
    stacker: Stacker | None = None
    temperature: float = 1.0
    # (C,) added to the log-probabilities before the arg-max that picks a label (decision.py);
    # None: the arg-max itself (older folders, metrics that read no labels)
    decision_shift: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list = field(default_factory=list)
    folder: Path | None = None
    cache: FeatureCache | None = None
    encoders: dict[str, Encoder] = field(default_factory=dict)
    # (N, C) combined, calibrated out-of-fold probabilities of the rows ``fit`` was given
    # (what auto mode judges it by), and each member's; not saved.
    out_of_fold: np.ndarray | None = None
    out_of_fold_labels: np.ndarray | None = None  # (N,) decided on rows that did not fit them
    members_out_of_fold: list[np.ndarray] = field(default_factory=list)
    kind_name = "ensemble"

    @property
    def task(self) -> Task:
        return get_task(self.config.data.task)

    is_network = False  # many models: no one network to explain by gradients or export

    def components(self) -> dict[str, Any]:
        """What the model is made of, for its card: each member names its own view."""
        return {"fusion": "ensemble", "ensemble": self.describe(),
                "members": [m.name for m in self.members]}

    def describe(self) -> str:
        if self.method == "stacking":
            return f"stacked LR over {', '.join(m.name for m in self.members)}"
        return " + ".join(f"{w:.2f} {m.name}" for m, w in zip(self.members, self.weights,
                                                              strict=True) if w > 0)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, config: Config, rows: pd.DataFrame, views: list[View], folds: Folds,
            cache: FeatureCache, *, classes: list[str] | None = None,
            ) -> tuple[EnsembleModel, dict[str, float]]:
        """Linear members on ``views``, fitted on every row of ``rows`` and combined on their
        out-of-fold probabilities over ``folds``; also returns the out-of-fold score of each
        member and of the combination (the task's selection metric). ``classes`` default to
        the labels of ``rows``; regression has none (members predict values)."""
        task = get_task(config.data.task)
        if classes is None:
            classes = task.fit_classes(rows["_target"].tolist())
        y = np.asarray(task.encode(rows["_target"].tolist(), classes))
        score = metric_score(task, config, classes)
        encoders: dict[str, Encoder] = {}
        inputs = MemberInputs.from_rows(rows, config, cache, encoders)
        oof, kept = [], []
        for view in views:
            try:
                oof.append(out_of_fold(view, classes, inputs, y, folds, seed=config.train.seed))
                kept.append(view)
            except (ValueError, ConfigError) as error:
                # e.g. no n-gram occurs twice (the view says nothing), or a folder's text
                # tower cannot embed the class prompts: the other members go on without it
                CONSOLE.print(f"ensemble: {view.name} left out ({error})")
        if not kept:
            raise MmfuseError("no linear member could be fitted on these rows")
        members = [new_member(v, classes, config.train.seed).fit(inputs, y) for v in kept]
        weights = inputs.weights()
        model, scores = cls.combine(config, classes, members, oof, y, sample_weight=weights,
                                    cache=cache, encoders=encoders)
        return model, {m.name: score(y, p, weights=weights)
                       for m, p in zip(members, oof, strict=True)} | scores

    @classmethod
    def combine(cls, config: Config, classes: list[str] | None, members: list[Member],
                oof: list[np.ndarray], y: np.ndarray, *, prune: bool = False,
                sample_weight: np.ndarray | None = None,
                **fields: Any) -> tuple[EnsembleModel, dict[str, float]]:
        """Fitted ``members`` combined on their out-of-fold probabilities ``oof`` (one (N, C)
        per member) for the class ids ``y`` (N,): ensemble selection, a stacked learner or
        the best member alone, whichever scores best on rows it was not fitted on (the
        combinations are judged on nested folds), then a temperature. ``prune``: members
        that selection gives weight 0 are left out of the model (each fold model a network
        member keeps costs prediction time and disk). Returns the model (its ``out_of_fold``
        and ``out_of_fold_labels`` set: the nested probabilities and labels, so that it is
        judged as fairly as any candidate) and each way's out-of-fold score. Regression
        (``classes`` None): values (N, 1) instead of probabilities, and no temperature.
        ``sample_weight`` (N,) (``--weight-col``): each row counts that often in every score
        and in the stacker's fit (the temperature and the label decision are not weighted)."""
        task = get_task(config.data.task)
        score = metric_score(task, config, classes)
        n_classes = None if classes is None else len(classes)
        by_labels = label_score(selection_metric(config), len(classes)) if \
            task.single_label and classes else None
        seed = config.train.seed
        w = sample_weight
        selection, selected, weights = nested_selection(oof, y, score, seed, weights=w)
        if not task.multilabel:
            stacking, stacked, stacker = nested_stacking(oof, y, n_classes, score, seed,
                                                         weights=w)
        else:  # multilabel: blended by selection (a stacker would be one per label)
            stacking, stacked, stacker = -np.inf, selected, None
        alone = [score(y, p, weights=w) for p in oof]
        best = int(np.argmax(alone))  # the best member alone: a blend must earn its place
        scores = {"ensemble selection": selection, "stacking": stacking, "best member": alone[best]}
        method, combined = "selection", selected
        if stacking > selection:
            method, combined = "stacking", stacked
        if alone[best] > max(selection, stacking):
            method, combined, weights = "selection", oof[best], np.eye(len(oof))[best]
        if method == "selection" and prune:
            kept = np.flatnonzero(weights > 0)
            members, oof, weights = [members[i] for i in kept], [oof[i] for i in kept], \
                weights[kept]
        model = cls(config, classes, members, method, weights,
                    stacker if method == "stacking" else None,
                    calibrated_temperature(combined, y) if task.single_label else 1.0,
                    **fields)
        model.out_of_fold = model.calibrated(combined)
        model.members_out_of_fold = oof
        alpha, model.out_of_fold_labels = 0.0, model.decide(model.out_of_fold)
        if by_labels is not None:
            model.decision_shift, alpha = fit_shift(model.out_of_fold, y, by_labels)
            model.out_of_fold_labels = nested_decisions(model.out_of_fold, y, by_labels,
                                                        nested_splits(y, NESTED_FOLDS, seed))
        scores["ensemble"] = score(y, model.out_of_fold, model.out_of_fold_labels, weights=w)
        shifted = f"; labels favour rare classes, alpha {alpha:g}" if alpha else ""
        CONSOLE.print(f"ensemble: {model.describe()} (out of fold: {scores['ensemble']:.4f}"
                      f"{shifted})")
        return model, scores

    # ------------------------------------------------------------------ scoring
    def inputs(self, rows: pd.DataFrame) -> MemberInputs:
        """What the members read for validated rows (frozen features from the cache)."""
        return MemberInputs.from_rows(rows, self.config, self.feature_cache(), self.encoders)

    def probabilities(self, inputs: MemberInputs) -> np.ndarray:
        """(N, C) calibrated class probabilities; regression: (N, 1) values."""
        return self.calibrated(self.combined(inputs))

    def combined(self, inputs: MemberInputs) -> np.ndarray:
        """(N, C) the members' outputs combined, before the temperature."""
        members = [m.predict_proba(inputs) for m in self.members]
        return (self.stacker.predict_proba(members) if self.stacker is not None
                else blend(members, self.weights))

    def calibrate(self, rows: pd.DataFrame) -> float:
        """Refit the temperature on held-out labelled rows (validated), then, for a metric
        that reads labels, the labels' decision there; returns the temperature."""
        if not self.task.single_label:
            raise ConfigError(f"temperature scaling applies to single-label tasks, not to "
                              f"{self.task.name}")
        combined = self.combined(self.inputs(rows))
        y = self.targets(rows).numpy()
        self.temperature = calibrated_temperature(combined, y)
        by_labels = label_score(selection_metric(self.config), len(self.classes or []))
        if by_labels is not None:
            self.decision_shift, _ = fit_shift(self.calibrated(combined), y, by_labels)
        return self.temperature

    def logits(self, rows: pd.DataFrame) -> tuple[torch.Tensor, None]:
        """(N, C) the log of the calibrated probabilities (their softmax gives them back);
        multilabel: each label's log-odds; regression: the values. No modality weights."""
        scores = self.probabilities(self.inputs(rows))
        if self.classes is None:
            return torch.from_numpy(scores), None
        if self.task.multilabel:
            return torch.from_numpy(log_of(scores) - log_of(1 - scores)), None
        return torch.from_numpy(log_of(scores)), None

    @property
    def vocabulary(self) -> None:
        """None: no network vocabulary (each TF-IDF member keeps its own n-grams)."""
        return None

    def calibrated(self, combined: np.ndarray) -> np.ndarray:
        """Combined probabilities with the temperature (single-label tasks); labels'
        probabilities (multilabel) and values (regression) as they are."""
        return tempered(combined, self.temperature) if self.task.single_label else combined

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Class ids (N,) for probabilities (N, C): the arg-max, shifted for the metric;
        multilabel: indicators (N, C) of the labels at 0.5 or above; regression: the values
        (N,)."""
        return decided(self.task, self.classes, probabilities, self.decision_shift)

    def predict(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, None]:
        """Probabilities (N, C), class ids (N,), no modality weights."""
        scores = self.probabilities(self.inputs(rows))
        return scores, self.decide(scores), None

    def predict_items(self, items: list[Item]) -> tuple[np.ndarray, np.ndarray, None]:
        """The same for in-memory items (decoded images, strings): encoders run live."""
        scores = self.probabilities(MemberInputs.from_items(items, self.config, self.encoders,
                                                            self.live))
        return scores, self.decide(scores), None

    @property
    def modality_kinds(self) -> dict[str, str]:
        """The input columns some member reads -> "image" | "text" | "tabular"."""
        read = set().union(*(m.modalities for m in self.members))
        data = self.config.data
        columns = {"image": data.image_cols, "text": data.text_cols,
                   "tabular": data.tabular_cols}
        return dict(sorted((c, kind) for kind in read for c in columns[kind]))

    def targets(self, rows: pd.DataFrame) -> torch.Tensor:
        return self.task.encode(rows["_target"].tolist(), self.classes)

    def evaluate(self, rows: pd.DataFrame) -> dict[str, Any]:
        scores, decoded, _ = self.predict(rows)
        return self.task.metrics(self.targets(rows).numpy(), decoded, scores, self.classes)


    # ------------------------------------------------------------------ folder
    def save(self, directory: str | Path) -> Path:
        """Members' arrays and the stacker in one safetensors file, how they combine in
        ensemble.json, members' own files in members/<i>/ (a network's fold models)."""
        arrays = {f"member{i}.{k}": v for i, m in enumerate(self.members)
                  for k, v in m.arrays.items()}
        if self.stacker is not None:
            arrays |= {f"stacker.{k}": v for k, v in self.stacker.state().items()}
        spec = {"method": self.method, "weights": self.weights.tolist(),
                "temperature": self.temperature,
                "decision_shift": None if self.decision_shift is None
                else self.decision_shift.tolist(),
                "members": [m.entry() for m in self.members]}
        networks = Path(directory) / MEMBERS_DIR
        shutil.rmtree(networks, ignore_errors=True)  # an earlier save's members
        for i, member in enumerate(self.members):
            member.save(networks / str(i))
        fingerprints = {name: e.fingerprint for name, e in self.encoders_by_name().items()}
        self.folder = ModelFolder(directory).save_ensemble(
            self.config, self.classes, spec=spec,
            tensors={k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()},
            fingerprints=fingerprints, metrics=self.metrics)
        return self.folder

    @classmethod
    def load(cls, directory: str | Path) -> EnsembleModel:
        folder = ModelFolder(directory)
        try:
            return cls._load(folder)
        except (KeyError, TypeError, ValueError, IndexError) as error:  # an edited file
            raise CheckpointError(
                f"{folder.path / 'ensemble.json'} does not describe the arrays in "
                f"{folder.path / 'model.safetensors'} ({type(error).__name__}: {error}); "
                "re-save or retrain") from error

    @classmethod
    def _load(cls, folder: ModelFolder) -> EnsembleModel:
        definition, spec, tensors = folder.ensemble()
        arrays = {k: v.numpy() for k, v in tensors.items()}
        classes = definition.classes
        shared: dict[str, Encoder] = {}  # frozen encoders the network members read
        members: list[Member] = []
        for i, entry in enumerate(spec["members"]):
            prefix, directory = f"member{i}.", folder.path / MEMBERS_DIR / str(i)
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            if "network" in entry:
                members.append(NetworkMember.load(str(entry["network"]), directory,
                                                  int(entry["folds"]), classes, shared))
            elif "trees" in entry:
                members.append(TreeMember.load(entry, directory, classes, own))
            else:
                members.append(linear_kind(entry["view"]).from_entry(entry, classes, own))
        if spec["method"] not in ("stacking", "selection") or len(spec["weights"]) != len(members):
            raise ValueError("method must be stacking or selection, with one weight per member")
        stacker: Stacker | ValueStacker | None = None
        if spec["method"] == "stacking":
            kind = ValueStacker if classes is None else Stacker
            stacker = kind.from_state({k[len("stacker."):]: v for k, v in arrays.items()
                                       if k.startswith("stacker.")})
        shift = spec.get("decision_shift")  # absent from folders saved before it existed
        if shift is not None and len(shift) != len(classes or []):
            raise ValueError("decision_shift must hold one number per class")
        model = cls(definition.config, definition.classes, members, spec["method"],
                    np.asarray(spec["weights"]), stacker, float(spec["temperature"]),
                    None if shift is None else np.asarray(shift, dtype=float),
                    folder.metrics(), folder=folder.path)
        folder.check_fingerprints(model.encoders_by_name(), definition)
        return model

    def encoders_by_name(self) -> dict[str, Encoder]:
        """The linear members' encoders by view, built (from their packages) when first
        needed. Network members hold theirs, as their own model folders record."""
        return {m.view.name: encoder_for(m.view, self.encoders) for m in self.members
                if isinstance(m, LinearMember) and m.view.encoder is not None}


def decided(task: Task, classes: list[str] | None, probabilities: np.ndarray,
            shift: np.ndarray | None) -> np.ndarray:
    """What ``predict`` answers for the combined outputs: class ids (N,), label indicators
    (N, C) or values (N,)."""
    if classes is None:
        return probabilities[:, 0]
    if task.multilabel:
        return (probabilities >= 0.5).astype(np.int64)
    return decide(probabilities, shift)


def metric_score(task: Task, config: Config, classes: list[str] | None):
    """(y, probabilities[, labels]) -> the selection metric, higher is better."""
    from mmfuse.scoring import greater_is_better

    metric = selection_metric(config)
    sign = 1.0 if greater_is_better(metric) else -1.0
    by_labels = label_score(metric, len(classes)) if task.single_label and classes else None

    def score(y: np.ndarray, probabilities: np.ndarray, labels: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> float:
        """``labels`` (N,): the decided class ids, when not the arg-max; ``weights`` (N,):
        each row counted that often."""
        if labels is None:
            labels = decided(task, classes, probabilities, None)
        if by_labels is not None:  # called thousands of times by ensemble selection
            return by_labels(y, labels, weights)
        values = task.metrics(y, labels, probabilities, classes, sample_weight=weights)
        return sign * float(values[metric])

    return score
