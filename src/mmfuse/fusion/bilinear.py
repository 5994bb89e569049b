"""Low-rank bilinear (multiplicative) pooling, in the manner of MFB (Yu et al., 2017).

z = sum over k rank slices of the elementwise product of per-modality projections, so every
output unit multiplies image and text evidence instead of adding it.
"""

from __future__ import annotations

from torch import nn

from mmfuse.fusion.base import FUSIONS, Fusion, FusionOutput, mlp_block, projection


@FUSIONS.register("bilinear", "low-rank multiplicative pooling across modalities")
class BilinearFusion(Fusion):
    def __init__(
        self, input_dims: dict[str, int], hidden_dim: int, dropout: float, rank: int = 4
    ) -> None:
        super().__init__(input_dims, hidden_dim, dropout)
        self.rank = rank
        self.project = nn.ModuleDict(
            {m: projection(input_dims[m], hidden_dim * rank) for m in self.modalities}
        )
        self.norm = nn.LayerNorm(hidden_dim)
        self.mix = nn.Sequential(nn.Dropout(dropout), mlp_block(hidden_dim, hidden_dim, dropout))

    def forward(self, features, present) -> FusionOutput:
        first, *rest = self.modalities
        product = self.project[first](features[first].pooled)  # (B, H * k)
        for m in rest:
            product = product * self.project[m](features[m].pooled)
        pooled = product.view(product.shape[0], -1, self.rank).sum(-1)  # (B, H)
        return FusionOutput(self.mix(self.norm(pooled)), None)
