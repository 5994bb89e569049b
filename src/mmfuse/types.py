"""Shared tensor types and tiny blocks that encoders, fusions and models all use."""

from __future__ import annotations

from typing import NamedTuple

import torch


class EncoderOutput(NamedTuple):
    pooled: torch.Tensor  # (B, D)
    tokens: torch.Tensor  # (B, T, D): image regions or text tokens
    token_mask: torch.Tensor  # (B, T) bool, True where a token is real


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D), averaging real tokens only."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
