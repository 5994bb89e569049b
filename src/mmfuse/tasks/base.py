"""The task contract: everything that differs between tasks, in one class per task.

A task parses a label cell, fits the classes, encodes targets for the loss, decodes the head's
output into labels, names its head and metrics, says how to split and weigh rows, and which
commands apply to it. Nothing outside this package compares task names.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from mmfuse.errors import MmfuseError

IMBALANCE_RATIO_FOR_WEIGHTS = 10.0  # "auto": weight the loss only when imbalance is severe


def all_tasks() -> list[type[Task]]:
    """Every named Task subclass, however deep (matching extends binary)."""
    found, todo = [], list(Task.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [cls for cls in found if cls.name]


class Task:
    """Defaults are those of single-label classification."""

    name = ""
    head = ""  # registered head name
    selection_metric = "macro_f1"  # what early stopping and auto mode optimise
    headline_metric = "accuracy"  # the one number robustness curves and reports follow
    predicts = True  # one prediction per row: predict, explain, export, report apply
    model_kind = "single"  # the network it trains (model_kinds.py)
    paired = False  # rows are (image, caption) pairs; no label column
    draws_negatives = False  # mismatched pairs are drawn from the true ones (matching)
    stratified = True  # validation split stratified by label
    single_label = True  # one label per row with a confidence: temperature and reliability apply
    multilabel = False  # any subset of the labels per row
    why_not = ""  # the sentence that refuses what does not apply
    # what ``metrics`` reports and ``train.metric`` may select (scoring.METRICS says which way)
    metric_names: tuple[str, ...] = (
        "accuracy", "macro_f1", "micro_f1", "macro_precision", "macro_recall",
        "micro_precision", "micro_recall", "auroc", "ece")

    # -------------------------------------------------------------- labels
    def parse_label(self, value: Any, sep: str) -> Any:
        """The target of one label cell. Raises ValueError for an unusable value."""
        return str(value).strip()

    def labels_in(self, target: Any) -> list[str]:
        """The class names a parsed target uses (to report labels unseen in training)."""
        return [target]

    def fit_classes(self, targets: list[Any]) -> list[str] | None:
        """Sorted class names. Raises ValueError (with the reason) when they cannot work."""
        classes = sorted(set(targets))
        if len(classes) < 2:
            raise ValueError(f"only one label ({classes}) in training")
        return classes

    def encode(self, targets: list[Any], classes: list[str] | None) -> torch.Tensor:
        """Targets for the loss: class ids (N,) here."""
        index = {c: i for i, c in enumerate(classes or [])}
        return torch.tensor([index[t] for t in targets], dtype=torch.long)

    def decode(self, decoded: np.ndarray, classes: list[str] | None) -> np.ndarray:
        """The head's decoded output (class ids) -> labels, one per row."""
        return np.asarray(classes, dtype=object)[decoded]

    def answer(self, decoded: Any, scores: torch.Tensor, classes: list[str] | None) -> dict:
        """One row's prediction as the HTTP API returns it."""
        return {"prediction": classes[int(decoded)] if classes else None,
                "probabilities": dict(zip(classes or [], scores.tolist(), strict=True))}

    # -------------------------------------------------------------- training
    def stratify_by(self, targets: list[Any]) -> list[Any] | None:
        return targets if self.stratified else None

    def imbalance_mode(self, targets: list[Any], mode: str) -> str:
        """'weight' | 'sample' | 'none'; "auto" weighs the loss when imbalance is severe."""
        if mode != "auto":
            return mode
        counts = Counter(targets)
        return "weight" if max(counts.values()) / min(counts.values()) >= \
            IMBALANCE_RATIO_FOR_WEIGHTS else "none"

    def head_options(self, targets: list[Any], classes: list[str] | None,
                     mode: str) -> dict[str, Any]:
        """Keyword options of the head fitted to the training targets (class weights)."""
        if self.imbalance_mode(targets, mode) != "weight":
            return {}
        counts = Counter(targets)
        n, k = len(targets), len(classes or [])
        weights = [n / (k * counts[c]) if counts[c] else 0.0 for c in classes or []]
        return {"class_weights": torch.tensor(weights)}

    def sample_weights(self, targets: list[Any], mode: str) -> torch.Tensor | None:
        """Per-row sampling weights for balanced sampling, or None."""
        if self.imbalance_mode(targets, mode) != "sample":
            return None
        keys = [tuple(t) if isinstance(t, list) else t for t in targets]
        counts = Counter(keys)
        return torch.tensor([1.0 / counts[k] for k in keys], dtype=torch.double)

    def evidence(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) log-odds of each class, what attributions explain: unlike probabilities
        they do not saturate, so a confident prediction still shows where its evidence is."""
        if logits.shape[-1] < 2:
            return logits
        others = logits.unsqueeze(1).expand(-1, logits.shape[1], -1)  # (B, C, C)
        eye = torch.eye(logits.shape[1], dtype=torch.bool, device=logits.device)
        rest = others.masked_fill(eye, float("-inf")).logsumexp(-1)  # (B, C)
        return logits - rest

    # -------------------------------------------------------------- what applies
    def metrics(self, y_true: np.ndarray, decoded: np.ndarray, scores: np.ndarray,
                classes: list[str], sample_weight: np.ndarray | None = None) -> dict[str, Any]:
        """Metrics of the outputs; with ``sample_weight`` (N,), each row counted that often."""
        from mmfuse.tasks.metrics import class_metrics

        return class_metrics(y_true, decoded, scores, classes, sample_weight=sample_weight)

    def require_predictions(self, action: str) -> None:
        """Refuse ``action`` (predict, explain, export, report) on a task that only ranks."""
        if not self.predicts:
            raise MmfuseError(f"cannot {action}: {self.why_not}")
