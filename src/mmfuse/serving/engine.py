"""Predictions on in-memory inputs (decoded images, strings): what the server and export use.

No files are read here: images arrive decoded, texts as strings; encoders run live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmfuse.errors import MmfuseError
from mmfuse.features.items import Item, is_present
from mmfuse.predictor import Predictor
from mmfuse.tasks import get_task

__all__ = ["InferenceEngine", "Item", "MissingModalityError"]


class MissingModalityError(MmfuseError):
    """A request lacks a modality the model cannot do without."""


@dataclass
class ModelCard:
    task: str
    labels: list[str] | None
    image_columns: list[str]
    text_columns: list[str]
    tabular_columns: list[str]  # numbers and categories: a missing one is a value
    accepts_missing: bool
    description: dict[str, Any]


class InferenceEngine:
    """Wraps a fitted Predictor of any kind (a network or an ensemble): ``predict(items)`` ->
    one result dict per item."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.fitted = predictor.fitted_
        config = self.config = predictor.config
        kinds = self.fitted.modality_kinds
        self.modalities = list(kinds)
        self.image_columns = [m for m, k in kinds.items() if k == "image"]
        self.text_columns = [m for m, k in kinds.items() if k == "text"]
        # a network's one tabular modality reads every numeric and categorical column; an
        # ensemble names the columns its members read
        self.tabular_columns = sorted(config.data.tabular_cols) if \
            "tabular" in kinds.values() else []
        # Missing inputs are answered only by models that learned to predict without them.
        self.accepts_missing = config.data.allow_missing or config.train.modality_dropout > 0
        self.card = ModelCard(
            task=config.data.task, labels=predictor.classes_,
            image_columns=self.image_columns, text_columns=self.text_columns,
            tabular_columns=self.tabular_columns,
            accepts_missing=self.accepts_missing,
            description={**self.fitted.components(),
                         "modalities": self.modalities,
                         "metrics": {k: v for k, v in predictor.metrics_.get(
                             "validation", {}).items() if isinstance(v, int | float)}},
        )


    def check(self, item: Item) -> None:
        """A missing image or text is refused unless the model learned without one; an
        empty number or category is a value the model has seen."""
        reads = self.image_columns + self.text_columns
        missing = [m for m in reads if not is_present(item.get(m))]
        if not any(is_present(item.get(c)) for c in reads + self.tabular_columns):
            raise MissingModalityError("the request has neither an image nor a text; this "
                                       f"model reads: {', '.join(reads + self.tabular_columns)}")
        if missing and not self.accepts_missing:
            raise MissingModalityError(
                f"this model needs every input; missing: {', '.join(missing)}. Train with "
                "--modality-dropout (or --allow-missing) to predict from one modality alone."
            )

    def predict(self, items: list[Item]) -> list[dict[str, Any]]:
        for item in items:
            self.check(item)
        return self._results(*self.fitted.predict_items(items))

    def _results(self, scores: np.ndarray, decoded: np.ndarray, weights: np.ndarray | None
                 ) -> list[dict[str, Any]]:
        """One dict per row: prediction, probabilities, the fusion's modality weights."""
        task = get_task(self.card.task)
        results = []
        for i in range(len(scores)):
            result = task.answer(torch.as_tensor(decoded[i]), torch.as_tensor(scores[i]),
                                 self.predictor.classes_)
            if weights is not None:
                result["modality_weights"] = dict(
                    zip(self.modalities, weights[i].tolist(), strict=True))
            results.append(result)
        return results

    def explain(self, item: Item) -> dict[str, Any]:
        """Prediction plus each modality's share, by hiding it (and the fusion's own weights)."""
        from mmfuse.evaluation.explain import explained_class, shares_by_hiding

        self.check(item)
        outputs = self.fitted.predict_items([item])
        result = self._results(*outputs)[0]
        scores = outputs[0][0]
        target = explained_class(scores, outputs[1][0])

        def score_without(modality: str) -> float:
            return float(self.fitted.predict_items([{**item, modality: None}])[0][0, target])

        present = [m for m in self.modalities if is_present(item.get(m))]
        result["ablation_shares"] = shares_by_hiding(present, float(scores[target]), score_without)
        return result
