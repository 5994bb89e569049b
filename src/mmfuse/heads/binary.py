"""Binary decisions with one logit (used by image-text matching)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmfuse.heads.base import HEADS, Head


@HEADS.register("binary", "yes/no with one logit; sigmoid cross-entropy")
class BinaryHead(Head):
    """Logits (B, 1); ``probabilities`` gives (B, 2) = [P(class 0), P(class 1)]."""

    def __init__(
        self, in_dim: int, n_outputs: int, dropout: float, pos_weight: float = 1.0,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(in_dim, 1, dropout)
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))
        self.threshold = threshold

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(
            logits.squeeze(-1), target.float(), pos_weight=self.pos_weight
        )

    def probabilities(self, logits):
        positive = (logits.squeeze(-1) / self.temperature).sigmoid()
        return torch.stack([1 - positive, positive], dim=-1)

    def decode(self, logits):
        return (self.probabilities(logits)[:, 1] >= self.threshold).long()
