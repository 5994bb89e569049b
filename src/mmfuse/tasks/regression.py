"""One real value per row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mmfuse.tasks.base import Task


class Regression(Task):
    name = "regression"
    head = "regression"
    selection_metric = headline_metric = "rmse"
    metric_names = ("rmse", "mae", "r2")
    stratified = False
    single_label = False

    def parse_label(self, value: Any, sep: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{value!r} is not a number (task is regression)") from error
        if not math.isfinite(number):
            raise ValueError(f"target {value!r} is not a finite number")
        return number

    def labels_in(self, target: Any) -> list[str]:
        return []  # any number is a valid target, seen or not

    def fit_classes(self, targets: list[Any]) -> list[str] | None:
        return None

    def encode(self, targets: list[Any], classes: list[str] | None) -> torch.Tensor:
        return torch.tensor(targets, dtype=torch.float32)

    def decode(self, decoded: np.ndarray, classes: list[str] | None) -> np.ndarray:
        return decoded

    def answer(self, decoded: Any, scores: torch.Tensor, classes: list[str] | None) -> dict:
        return {"prediction": float(decoded)}

    def imbalance_mode(self, targets: list[Any], mode: str) -> str:
        return "none"

    def head_options(self, targets: list[Any], classes: list[str] | None,
                     mode: str) -> dict[str, Any]:
        """The head predicts standardised targets: their mean and spread."""
        values = np.asarray(targets, dtype=np.float64)
        return {"mean": float(values.mean()), "std": float(values.std() or 1.0)}

    def evidence(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def metrics(self, y_true: np.ndarray, decoded: np.ndarray, scores: np.ndarray,
                classes: list[str], sample_weight: np.ndarray | None = None) -> dict[str, Any]:
        from mmfuse.tasks.metrics import regression_metrics

        return regression_metrics(y_true, decoded, sample_weight)
