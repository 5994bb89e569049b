"""What an ensemble member's computation looks like as a module, for one exported graph.

Each member kind gives its ``graph()``: a module that says which (column, encoder) inputs it
reads, which inputs of its own it takes (TF-IDF n-gram ids, tabular features) and how it
turns them into probabilities. The ensemble's graph (``serving/ensemble_graph.py``) feeds
every member through a ``Reader``, so a frozen encoder read by several members runs once.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mmfuse.encoders.base import Encoder
from mmfuse.ensemble.inputs import MemberInputs
from mmfuse.types import EncoderOutput


class Reader(Protocol):
    """A member graph's inputs, during one forward pass."""

    def own(self, name: str) -> torch.Tensor:
        """A member's own input by name (``MemberGraph.own_inputs``)."""

    def encoded(self, column: str, encoder: Encoder) -> EncoderOutput:
        """``encoder``'s features of ``column`` (computed once per pass)."""

    def prepared(self, column: str, encoder: Encoder) -> dict[str, torch.Tensor]:
        """``column``'s inputs as ``encoder`` prepares them (for an encoder being trained)."""


class MemberGraph(nn.Module):
    """A member's computation: (B, C) probabilities, or (B, 1) values for regression."""

    def reads(self) -> list[tuple[str, Encoder]]:
        """The (column, encoder) pairs whose prepared inputs the graph reads."""
        return []

    def own_inputs(self, inputs: MemberInputs) -> dict[str, torch.Tensor]:
        """The graph's own inputs for the rows of ``inputs``, by name."""
        return {}

    def forward(self, reader: Reader) -> torch.Tensor:  # type: ignore[override]
        raise NotImplementedError
