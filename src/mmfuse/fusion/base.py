"""The fusion contract: Dict[str, EncoderOutput] + presence masks -> one (B, H) vector."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mmfuse.registry import Registry
from mmfuse.types import EncoderOutput


class FusionOutput(NamedTuple):
    fused: torch.Tensor  # (B, H)
    weights: torch.Tensor | None  # (B, M) per-example modality weights, sorted modality order


class Fusion(nn.Module):
    """Base class. ``input_dims`` maps modality name -> encoder output size.

    Modalities are always visited in sorted name order, so weights line up with
    ``self.modalities``. ``present[m]`` is (B,) bool; a fusion that weighs modalities gives an
    absent one weight 0. ``output_dim`` is what the head receives.
    """

    needs_tokens: bool = False  # reads token sequences, not only pooled features
    exposes_weights: bool = False
    needs_outputs: bool = False  # its towers predict the task's outputs themselves (built with n_outputs)
    trained_by_stacking: bool = False  # trained out-of-fold (training/stacking.py), not end to end
    # its modality weights (``scores``) are refitted on the early-stopping rows after training
    # (training/decision_weights.py)
    weighs_on_held_out_rows: bool = False

    def __init__(self, input_dims: dict[str, int], hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.modalities = sorted(input_dims)
        self.input_dims = dict(input_dims)
        self.output_dim = hidden_dim

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, torch.Tensor]
    ) -> FusionOutput:
        raise NotImplementedError

    def stacked_presence(self, present: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([present[m] for m in self.modalities], dim=1)  # (B, M)


FUSIONS: Registry[Fusion] = Registry("fusion")


def projection(in_dim: int, out_dim: int) -> nn.Sequential:
    """LayerNorm first: encoders differ wildly in feature scale (MiniLM vs EfficientNet)."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


def mlp_block(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Dropout(dropout))


def tower(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """One modality's own model: project, then an MLP block; (B, in_dim) -> (B, hidden_dim)."""
    return nn.Sequential(
        projection(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
        mlp_block(hidden_dim, hidden_dim, dropout),
    )


def masked_softmax(scores: torch.Tensor, present: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the modality axis ``dim`` of ``scores`` ((B, M), or (B, M, H) with
    ``dim=1``) where absent modalities (``present`` broadcast to ``scores``) get exactly 0."""
    scores = scores.masked_fill(~present, float("-inf"))
    return torch.softmax(scores, dim=dim).nan_to_num(0.0)
