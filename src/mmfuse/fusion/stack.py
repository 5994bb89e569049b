"""Stacking: one model per modality, their predictions combined by a meta-learner.

The fused vector is every modality's logits side by side, and the (linear) head on top is the
meta-learner. Trained in two stages by ``training.stacking.fit_stack``: per-modality towers
first (out-of-fold over k folds, then on all rows), the head last on the out-of-fold logits,
so the meta-learner learns how far to trust each modality from predictions on rows its
towers never saw. A useless modality gets a weight near zero instead of dragging the rest down.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.fusion.base import FUSIONS, Fusion, FusionOutput, tower

FOLDS = 5  # the towers are trained FOLDS times out of fold, then once on every row


@FUSIONS.register("stack", "per-modality models; out-of-fold predictions -> meta-learner")
class StackFusion(Fusion):
    needs_outputs = True  # towers predict the task's outputs themselves
    trained_by_stacking = True

    def __init__(
        self, input_dims: dict[str, int], hidden_dim: int, dropout: float, n_outputs: int,
        folds: int = FOLDS,
    ) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        self.n_outputs, self.folds = n_outputs, folds
        self.towers = nn.ModuleDict(  # late fusion's towers, each with its own output layer
            {m: nn.Sequential(*tower(input_dims[m], hidden_dim, dropout),
                              nn.Linear(hidden_dim, n_outputs))
             for m in self.modalities}
        )
        self.output_dim = len(self.modalities) * n_outputs

    def modality_logits(self, features) -> torch.Tensor:
        """(B, M, n_outputs): what each modality's own model predicts."""
        return torch.stack([self.towers[m](features[m].pooled) for m in self.modalities], dim=1)

    def forward(self, features, present) -> FusionOutput:
        logits = self.modality_logits(features)  # (B, M, C)
        # An absent modality says nothing: zero logits, which the meta-learner weighs to nothing.
        logits = logits * self.stacked_presence(present).unsqueeze(-1).to(logits.dtype)
        return FusionOutput(logits.flatten(1), None)  # (B, M * C)
