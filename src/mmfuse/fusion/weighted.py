"""Weighted sum: one learned softmax weight per modality (renormalised when one is missing)."""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.fusion.base import (
    FUSIONS,
    Fusion,
    FusionOutput,
    masked_softmax,
    mlp_block,
    projection,
)


@FUSIONS.register("weighted", "learned softmax weight per modality, weighted sum, MLP")
class WeightedFusion(Fusion):
    exposes_weights = True

    def __init__(self, input_dims: dict[str, int], hidden_dim: int, dropout: float) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        self.project = nn.ModuleDict(
            {m: nn.Sequential(projection(input_dims[m], hidden_dim), nn.GELU())
             for m in self.modalities}
        )
        self.scores = nn.Parameter(torch.zeros(len(self.modalities)))
        self.mix = mlp_block(hidden_dim, hidden_dim, dropout)

    def forward(self, features, present) -> FusionOutput:
        projected = torch.stack(
            [self.project[m](features[m].pooled) for m in self.modalities], dim=1
        )  # (B, M, H)
        mask = self.stacked_presence(present)  # (B, M)
        weights = masked_softmax(self.scores.expand_as(mask), mask)  # (B, M)
        fused = (weights.unsqueeze(-1) * projected).sum(1)  # (B, H)
        return FusionOutput(self.mix(fused), weights)
