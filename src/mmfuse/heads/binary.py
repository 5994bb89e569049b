"""Binary decisions with one logit (used by image-text matching)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmfuse.heads.base import HEADS, ShiftedDecision


@HEADS.register("binary", "yes/no with one logit; sigmoid cross-entropy")
class BinaryHead(ShiftedDecision):
    """Logits (B, 1); ``probabilities`` gives (B, 2) = [P(class 0), P(class 1)]."""

    def __init__(
        self, in_dim: int, n_outputs: int, dropout: float, pos_weight: float = 1.0,
        threshold: float = 0.5,
    ) -> None:
        super().__init__(in_dim, 1, dropout)
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))
        self.threshold = threshold
        # As the classification head's, over (class 0, class 1): added to the log-probabilities
        # before the arg-max once calibration chose it; zeros (the threshold) until then.
        self.register_buffer("decision_shift", torch.zeros(2))

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(
            logits.squeeze(-1), target.float(), pos_weight=self.pos_weight
        )

    def probabilities(self, logits):
        positive = (logits.squeeze(-1) / self.temperature).sigmoid()
        return torch.stack([1 - positive, positive], dim=-1)

    def decode(self, logits):
        if not self.decision_shift.any():
            return (self.probabilities(logits)[:, 1] >= self.threshold).long()
        # log P(1) - log P(0) is the tempered logit: the arg-max of the shifted logs
        shifted = logits.squeeze(-1) / self.temperature + self.decision_shift[1] \
            - self.decision_shift[0]
        return (shifted > 0).long()
