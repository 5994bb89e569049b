"""Multi-head cross-attention: each modality's tokens attend to the other modalities' tokens.

Text tokens attend to image regions and image regions attend to text tokens; each stream is
pooled, and a per-example softmax score decides how much each stream contributes.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.errors import ConfigError
from mmfuse.fusion.base import (
    FUSIONS,
    Fusion,
    FusionOutput,
    masked_softmax,
    mlp_block,
    projection,
)
from mmfuse.types import masked_mean


@FUSIONS.register("cross-attention", "multi-head attention across image regions and text tokens")
class CrossAttentionFusion(Fusion):
    needs_tokens = True
    exposes_weights = True

    def __init__(
        self, input_dims: dict[str, int], hidden_dim: int, dropout: float, heads: int = 4
    ) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        if hidden_dim % heads:
            raise ConfigError(
                f"cross-attention needs hidden_dim divisible by heads ({hidden_dim} % {heads} != 0)"
            )
        self.project = nn.ModuleDict(
            {m: projection(input_dims[m], hidden_dim) for m in self.modalities}
        )
        self.attend = nn.ModuleDict(
            {
                m: nn.MultiheadAttention(hidden_dim, heads, dropout=dropout, batch_first=True)
                for m in self.modalities
            }
        )
        self.norm = nn.ModuleDict({m: nn.LayerNorm(hidden_dim) for m in self.modalities})
        # Always-present key: attention never sees an all-masked row when a modality is missing.
        self.null_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.score = nn.Linear(hidden_dim, 1)
        self.mix = mlp_block(hidden_dim, hidden_dim, dropout)

    def forward(self, features, present) -> FusionOutput:
        tokens, masks = {}, {}
        for m in self.modalities:
            tokens[m] = self.project[m](features[m].tokens)  # (B, T_m, H)
            masks[m] = features[m].token_mask & present[m].unsqueeze(1)  # (B, T_m)
        batch = next(iter(tokens.values())).shape[0]
        null = self.null_token.expand(batch, 1, -1)
        null_mask = torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        pooled = []
        for m in self.modalities:
            others = [o for o in self.modalities if o != m] or [m]  # one modality: self-attention
            keys = torch.cat([null, *[tokens[o] for o in others]], dim=1)  # (B, 1 + sum T, H)
            key_mask = torch.cat([null_mask, *[masks[o] for o in others]], dim=1)
            attended, _ = self.attend[m](tokens[m], keys, keys, key_padding_mask=~key_mask)
            stream = self.norm[m](tokens[m] + attended)  # (B, T_m, H)
            pooled.append(masked_mean(stream, masks[m]))  # (B, H)
        streams = torch.stack(pooled, dim=1)  # (B, M, H)
        weights = masked_softmax(self.score(streams).squeeze(-1), self.stacked_presence(present))
        return FusionOutput(self.mix((weights.unsqueeze(-1) * streams).sum(1)), weights)
