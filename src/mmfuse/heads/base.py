"""The head contract: a linear map from the fused vector that owns its loss and decoding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmfuse.registry import Registry
from mmfuse.tasks.decision import fit_shift, label_score


class Head(nn.Module):
    """(B, H) fused -> (B, n_outputs) logits; ``loss``, ``probabilities`` and ``decode`` on top.

    Heads are linear on purpose: late fusion relies on it (a weighted average of per-modality
    representations then gives the weighted average of per-modality logits).
    """

    def __init__(self, in_dim: int, n_outputs: int, dropout: float) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, n_outputs)
        # Temperature scaling (fitted after training on validation data) softens or sharpens
        # probabilities without changing any decision of a multiclass head.
        self.register_buffer("temperature", torch.tensor(1.0))

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(fused))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, n_outputs) scores in [0, 1]; regression returns its predictions."""
        raise NotImplementedError

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictions: class ids (B,), 0/1 indicators (B, C), or values (B,)."""
        raise NotImplementedError

    def fit_decision(self, probabilities: np.ndarray, targets: np.ndarray, metric: str) -> float:
        """Choose the label decision for ``metric`` on held-out rows' calibrated
        ``probabilities`` (N, C) and class ids ``targets`` (N,); returns its alpha
        (``tasks/decision.py``), 0 where the head decides no other way (the default)."""
        return 0.0


class ShiftedDecision(Head):
    """A head whose decided label is the arg-max of its log-probabilities plus a per-class
    ``decision_shift`` (C,) (``tasks/decision.py``), fitted with the temperature on held-out
    rows; zeros (the plain arg-max) until then, and in checkpoints saved before it existed."""

    def fit_decision(self, probabilities: np.ndarray, targets: np.ndarray, metric: str) -> float:
        by_labels = label_score(metric, probabilities.shape[-1])
        if by_labels is None:
            return 0.0
        shift, alpha = fit_shift(probabilities, targets.astype(int), by_labels)
        self.decision_shift.copy_(torch.from_numpy(shift))
        return alpha


HEADS: Registry[Head] = Registry("head")
