"""Gated multimodal unit (Arevalo et al., 2017), generalised to M modalities.

h_m = tanh(W_m x_m); z = softmax over modalities of G [h_1; ...; h_M], one gate per hidden
unit as in the paper's GMU; fused = sum_m z_m * h_m.
"""

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


@FUSIONS.register("gated", "gated multimodal unit: per-example, per-unit gates over modalities")
class GatedFusion(Fusion):
    """Gates per hidden unit, read from the modalities' hidden vectors.

    One weight per modality would have to serve every unit, so a weak modality's useful
    units would come in with its noise; gates read from the raw features would be the
    largest layer and over-fit small data. Per-unit gates on the hidden vectors score higher
    out of fold on MATH-V and emoji (``benchmarks/fusions.py``).
    """

    exposes_weights = True

    def __init__(self, input_dims: dict[str, int], hidden_dim: int, dropout: float) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        self.project = nn.ModuleDict(
            {m: projection(input_dims[m], hidden_dim) for m in self.modalities}
        )
        units = len(self.modalities) * hidden_dim
        self.gate_dropout = nn.Dropout(dropout)
        self.gate = nn.Linear(units, units)
        self.mix = mlp_block(hidden_dim, hidden_dim, dropout)

    def forward(self, features, present) -> FusionOutput:
        hidden = torch.stack(
            [torch.tanh(self.project[m](features[m].pooled)) for m in self.modalities], dim=1
        )  # (B, M, H)
        logits = self.gate(self.gate_dropout(hidden.flatten(1))).view_as(hidden)
        mask = self.stacked_presence(present).unsqueeze(-1)  # (B, M, 1)
        gates = masked_softmax(logits, mask, dim=1)  # (B, M, H), each unit's sums to 1
        fused = (gates * hidden).sum(1)  # (B, H)
        # Each modality's weight: its mean share of the fused units.
        return FusionOutput(self.mix(fused), gates.mean(-1))
