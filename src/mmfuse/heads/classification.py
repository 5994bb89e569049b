"""Single-label classification over C classes, optionally class-weighted."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmfuse.heads.base import HEADS, ShiftedDecision


@HEADS.register("classification", "one of C classes; softmax cross-entropy")
class ClassificationHead(ShiftedDecision):
    def __init__(
        self, in_dim: int, n_outputs: int, dropout: float, class_weights: torch.Tensor | None = None
    ) -> None:
        super().__init__(in_dim, n_outputs, dropout)
        weights = class_weights if class_weights is not None else torch.ones(n_outputs)
        self.register_buffer("class_weights", weights.float())
        # Added to the tempered logits before the arg-max: the label decided for the selection
        # metric (tasks/decision.py), fitted with the temperature on held-out rows; zeros
        # (the arg-max) until then, and in checkpoints saved before it existed.
        self.register_buffer("decision_shift", torch.zeros(n_outputs))

    def loss(self, logits, target):
        return F.cross_entropy(logits, target.long(), weight=self.class_weights)

    def probabilities(self, logits):
        return (logits / self.temperature).softmax(-1)

    def decode(self, logits):
        if not self.decision_shift.any():
            return logits.argmax(-1)
        return (logits / self.temperature + self.decision_shift).argmax(-1)
