"""Concatenation: project each modality, concatenate, mix with an MLP."""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.fusion.base import FUSIONS, Fusion, FusionOutput, mlp_block, projection


@FUSIONS.register("concat", "project, concatenate, MLP")
class ConcatFusion(Fusion):
    def __init__(self, input_dims: dict[str, int], hidden_dim: int, dropout: float) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        self.project = nn.ModuleDict({m: projection(input_dims[m], hidden_dim) for m in self.modalities})
        self.mix = nn.Sequential(
            nn.GELU(),
            nn.Dropout(dropout),
            mlp_block(hidden_dim * len(self.modalities), hidden_dim, dropout),
        )

    def forward(self, features, present) -> FusionOutput:
        parts = [self.project[m](features[m].pooled) for m in self.modalities]  # M x (B, H)
        return FusionOutput(self.mix(torch.cat(parts, dim=-1)), None)
