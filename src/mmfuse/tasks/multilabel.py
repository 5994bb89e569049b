"""Any subset of C labels per row (``a|b`` in one cell); a sigmoid per label."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mmfuse.tasks.base import Task


class Multilabel(Task):
    name = "multilabel"
    head = "multilabel"
    headline_metric = "macro_f1"
    metric_names = ("subset_accuracy", "macro_f1", "micro_f1", "macro_precision",
                    "macro_recall", "auroc")
    stratified = False
    single_label = False
    multilabel = True

    def parse_label(self, value: Any, sep: str) -> list[str]:
        return sorted({part.strip() for part in str(value).split(sep) if part.strip()})

    def labels_in(self, target: Any) -> list[str]:
        return list(target)

    def fit_classes(self, targets: list[Any]) -> list[str] | None:
        return sorted({label for row in targets for label in row})

    def encode(self, targets: list[Any], classes: list[str] | None) -> torch.Tensor:
        """(N, C) indicators."""
        index = {c: i for i, c in enumerate(classes or [])}
        matrix = torch.zeros(len(targets), len(index))
        for row, labels in enumerate(targets):
            matrix[row, [index[label] for label in labels]] = 1.0
        return matrix

    def decode(self, decoded: np.ndarray, classes: list[str] | None) -> np.ndarray:
        names = np.asarray(classes, dtype=object)
        out = np.empty(len(decoded), dtype=object)
        out[:] = [list(names[row.astype(bool)]) for row in decoded]
        return out

    def answer(self, decoded: Any, scores: torch.Tensor, classes: list[str] | None) -> dict:
        names = classes or []
        return {"prediction": [names[j] for j in torch.nonzero(decoded).flatten().tolist()],
                "probabilities": dict(zip(names, scores.tolist(), strict=True))}

    def imbalance_mode(self, targets: list[Any], mode: str) -> str:
        return "none" if mode in ("auto", "weight") else mode  # no per-class loss weights

    def evidence(self, logits: torch.Tensor) -> torch.Tensor:
        return logits  # each label's own log-odds

    def metrics(self, y_true: np.ndarray, decoded: np.ndarray, scores: np.ndarray,
                classes: list[str], sample_weight: np.ndarray | None = None) -> dict[str, Any]:
        from mmfuse.tasks.metrics import multilabel_metrics

        return multilabel_metrics(y_true, decoded, scores, classes, sample_weight)
