"""Multilabel classification: any subset of C labels per row."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmfuse.heads.base import HEADS, Head


@HEADS.register("multilabel", "any subset of C labels; per-label sigmoid cross-entropy")
class MultilabelHead(Head):
    def __init__(
        self, in_dim: int, n_outputs: int, dropout: float, threshold: float = 0.5,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__(in_dim, n_outputs, dropout)
        self.threshold = threshold
        self.register_buffer(
            "pos_weight", pos_weight.float() if pos_weight is not None else torch.ones(n_outputs)
        )

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(
            logits, target.float(), pos_weight=self.pos_weight
        )

    def probabilities(self, logits):
        return (logits / self.temperature).sigmoid()

    def decode(self, logits):
        return (self.probabilities(logits) >= self.threshold).long()
