"""Predictions on in-memory inputs (decoded images, strings): what the server and export use.

No files are read here: images arrive decoded, texts as strings; encoders run live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from mmfuse.errors import MmfuseError
from mmfuse.features.batches import Batch
from mmfuse.models.multimodal import ModelOutput
from mmfuse.predictor import Predictor
from mmfuse.tasks import get_task

Item = dict[str, Image.Image | str | None]  # modality (column) -> decoded image, text or None


class MissingModalityError(MmfuseError):
    """A request lacks a modality the model cannot do without."""


@dataclass
class ModelCard:
    task: str
    labels: list[str] | None
    image_columns: list[str]
    text_columns: list[str]
    accepts_missing: bool
    description: dict[str, Any]


class InferenceEngine:
    """Wraps a fitted Predictor: ``predict(items)`` -> one result dict per item."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.model = predictor.model_.eval()
        config = predictor.config
        kinds = predictor.model_.modality_kinds
        self.image_columns = [m for m, k in kinds.items() if k == "image"]
        self.text_columns = [m for m, k in kinds.items() if k == "text"]
        # Missing inputs are answered only by models that learned to predict without them.
        self.accepts_missing = config.data.allow_missing or config.train.modality_dropout > 0
        self.card = ModelCard(
            task=config.data.task, labels=predictor.classes_,
            image_columns=self.image_columns, text_columns=self.text_columns,
            accepts_missing=self.accepts_missing,
            description={
                "fusion": config.model.fusion,
                "image_encoder": config.model.image_encoder.name,
                "text_encoder": config.model.text_encoder.name,
                "modalities": predictor.model_.modalities,
                "metrics": {k: v for k, v in predictor.metrics_.get(
                    "validation", {}).items() if isinstance(v, int | float)},
            },
        )

    def check(self, item: Item) -> None:
        missing = [m for m in self.model.modalities if item.get(m) in (None, "")]
        if len(missing) == len(self.model.modalities):
            raise MissingModalityError("the request has neither an image nor a text")
        if missing and not self.accepts_missing:
            raise MissingModalityError(
                f"this model needs every input; missing: {', '.join(missing)}. Train with "
                "--modality-dropout (or --allow-missing) to predict from one modality alone."
            )

    def batch(self, items: list[Item]) -> Batch:
        """Model inputs for B items: each modality's encoder preprocesses what is present."""
        batch: Batch = {}
        for m in self.model.modalities:
            encoder = self.model.encoder_for(m)
            values = [item.get(m) for item in items]
            present = torch.tensor([v not in (None, "") for v in values])
            if encoder.kind == "image":
                size = encoder.transform.size
                pixels = [encoder.transform(v) if isinstance(v, Image.Image)
                          else torch.zeros(3, size, size) for v in values]
                inputs = encoder.prepare(pixels)
            else:
                inputs = encoder.prepare([v if isinstance(v, str) and v else "" for v in values])
            batch[m] = {**inputs, "present": present}
        return batch

    @torch.inference_mode()
    def predict(self, items: list[Item]) -> list[dict[str, Any]]:
        for item in items:
            self.check(item)
        return self._results(self.model(self.batch(items)))

    def _results(self, output: ModelOutput) -> list[dict[str, Any]]:
        """One dict per row of a model output: prediction, probabilities, modality weights."""
        scores = self.model.head.probabilities(output.logits)
        decoded = self.model.head.decode(output.logits)
        task = get_task(self.card.task)
        results = []
        for i in range(output.logits.shape[0]):
            result = task.answer(decoded[i], scores[i], self.predictor.classes_)
            if output.modality_weights is not None:
                result["modality_weights"] = dict(
                    zip(self.model.modalities, output.modality_weights[i].tolist(), strict=True))
            results.append(result)
        return results

    @torch.inference_mode()
    def explain(self, item: Item) -> dict[str, Any]:
        """Prediction plus each modality's share, by hiding it (and the fusion's own weights)."""
        from mmfuse.evaluation.explain import ablation_shares

        self.check(item)
        batch = self.batch([item])
        output = self.model(batch)
        result = self._results(output)[0]
        probabilities = self.model.head.probabilities(output.logits)[0]
        target = int(probabilities.argmax()) if probabilities.numel() > 1 else 0
        result["ablation_shares"] = ablation_shares(self.predictor, batch, target,
                                                    float(probabilities[target]))
        return result
