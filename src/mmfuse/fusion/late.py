"""Late fusion: a full tower per modality, combined by learned (masked) softmax weights.

Heads are linear and the weights sum to 1, so the head's logits are exactly the weighted
average of the logits each modality's tower would give alone: decision-level fusion. The
weights are fitted once more on the early-stopping rows after training (rows the towers did
not fit), as late fusion is classically weighed (training/decision_weights.py).
"""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.fusion.base import (
    FUSIONS,
    Fusion,
    FusionOutput,
    masked_softmax,
    tower,
)


@FUSIONS.register("late", "one tower per modality, logits averaged with learned weights")
class LateFusion(Fusion):
    exposes_weights = True
    weighs_on_held_out_rows = True

    def __init__(self, input_dims: dict[str, int], hidden_dim: int, dropout: float) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        self.towers = nn.ModuleDict(
            {m: tower(input_dims[m], hidden_dim, dropout) for m in self.modalities}
        )
        self.scores = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, features, present) -> FusionOutput:
        towers = torch.stack(
            [self.towers[m](features[m].pooled) for m in self.modalities], dim=1
        )  # (B, M, H)
        mask = self.stacked_presence(present)
        weights = masked_softmax(self.scores.expand_as(mask), mask)  # (B, M)
        return FusionOutput((weights.unsqueeze(-1) * towers).sum(1), weights)
