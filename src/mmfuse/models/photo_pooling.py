"""Attention pooling over a cell's photos, for an image encoder that is being trained.

A listing's photos are not equally telling (the front of a house, a label, a close-up), so a
trained model learns which to weigh: a score per photo from its features, a softmax over the
cell's real photos. A frozen encoder's cells are pooled by their mean in the feature cache
instead; the scores start at zero, so pooling starts as that mean.
"""

from __future__ import annotations

import torch
from torch import nn


class PhotoPooling(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def weights(self, per_photo: torch.Tensor, photo_mask: torch.Tensor) -> torch.Tensor:
        """(B, K, D) photos' features, (B, K) real ones -> (B, K) weights summing to 1 over a
        cell's real photos (all zero for a cell with none)."""
        scores = self.score(per_photo).squeeze(-1).masked_fill(~photo_mask, float("-inf"))
        return torch.softmax(scores, dim=1).nan_to_num(0.0)  # a cell of no photo: all -inf

    def forward(self, per_photo: torch.Tensor, photo_mask: torch.Tensor) -> torch.Tensor:
        """(B, K, D), (B, K) -> (B, D) the cells' features."""
        weights = self.weights(per_photo, photo_mask)
        return (weights.unsqueeze(-1) * per_photo).sum(1)
