"""Exactly two labels; one logit (sigmoid)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from mmfuse.tasks.base import Task


class Binary(Task):
    name = "binary"
    head = "binary"
    metric_names = (*Task.metric_names, "f1")

    def fit_classes(self, targets: list[Any]) -> list[str] | None:
        classes = sorted(set(targets))
        if len(classes) != 2:
            raise ValueError(f"task '{self.name}' needs exactly 2 labels, found {classes}")
        return classes

    def head_options(self, targets: list[Any], classes: list[str] | None,
                     mode: str) -> dict[str, Any]:
        if self.imbalance_mode(targets, mode) != "weight" or classes is None:
            return {}
        counts = Counter(targets)
        return {"pos_weight": counts[classes[0]] / max(1, counts[classes[1]])}

    def evidence(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.cat([-logits, logits], dim=-1)  # (B, 1) -> log-odds of (no, yes)

    def metrics(self, y_true: np.ndarray, decoded: np.ndarray, scores: np.ndarray,
                classes: list[str], sample_weight: np.ndarray | None = None) -> dict[str, Any]:
        from mmfuse.tasks.metrics import class_metrics

        return class_metrics(y_true, decoded, scores, classes, positive_only=True,
                             sample_weight=sample_weight)
