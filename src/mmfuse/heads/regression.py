"""Regression of one number; trained on standardised targets, decoded back to the data's scale."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmfuse.heads.base import HEADS, Head


@HEADS.register("regression", "one real value; mean squared error on standardised targets")
class RegressionHead(Head):
    def __init__(
        self, in_dim: int, n_outputs: int, dropout: float, mean: float = 0.0, std: float = 1.0
    ) -> None:
        super().__init__(in_dim, 1, dropout)
        self.register_buffer("target_mean", torch.tensor(float(mean)))
        self.register_buffer("target_std", torch.tensor(float(std) or 1.0))

    def loss(self, logits, target):
        standardised = (target.float() - self.target_mean) / self.target_std
        return F.mse_loss(logits.squeeze(-1), standardised)

    def probabilities(self, logits):
        return self.decode(logits).unsqueeze(-1)

    def decode(self, logits):
        return logits.squeeze(-1) * self.target_std + self.target_mean
