"""A dual encoder: each tower's features projected into one shared, L2-normalised space."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mmfuse.encoders.base import Encoder, run_encoder
from mmfuse.fusion.base import projection
from mmfuse.models.multimodal import ModelOutput


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature (CLIP's, capped at 100).

    ``target`` is (B, 2): the image group and text group of each pair. Pairs that share an
    image (several captions of one photo) or a text (one caption on several photos) are not
    negatives of each other: they are masked out of the softmax, not pushed apart.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, B): image i vs text j, already scaled."""
        images, texts = target[:, 0], target[:, 1]
        shared = (images[:, None] == images[None, :]) | (texts[:, None] == texts[None, :])
        diagonal = torch.eye(len(target), dtype=torch.bool, device=logits.device)
        masked = logits.masked_fill(shared & ~diagonal, float("-inf"))
        labels = torch.arange(len(target), device=logits.device)
        return (F.cross_entropy(masked, labels) + F.cross_entropy(masked.T, labels)) / 2


class DualEncoder(nn.Module):
    """Image and text towers with projection heads; ``forward`` gives (B, B) pair logits."""

    def __init__(
        self, encoders: dict[str, Encoder], image_col: str, text_col: str, embed_dim: int,
        dropout: float, *, logit_scale: float | None = None,
    ) -> None:
        """``logit_scale``: towers that already share one space (a CLIP-style folder's,
        trained together) with their log scale: no projection heads are added."""
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.columns = {"image": image_col, "text": text_col}
        self.head = ContrastiveLoss()
        if logit_scale is not None:
            self.project = nn.ModuleDict({kind: nn.Identity() for kind in encoders})
            self.embed_dim = encoders["image"].output_dim
            self.head.log_scale.data.fill_(logit_scale)
            return
        self.project = nn.ModuleDict({
            kind: nn.Sequential(
                projection(encoder.output_dim, embed_dim), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(embed_dim, embed_dim),
            )
            for kind, encoder in encoders.items()
        })
        self.embed_dim = embed_dim

    @property
    def modalities(self) -> list[str]:
        return sorted(self.columns.values())

    @property
    def modality_kinds(self) -> dict[str, str]:
        """Column -> "image" | "text", as a fusion model's."""
        return {column: kind for kind, column in sorted(self.columns.items(),
                                                         key=lambda item: item[1])}

    def encoder_for(self, column: str) -> Encoder:
        kind = "image" if column == self.columns["image"] else "text"
        return self.encoders[kind]  # type: ignore[return-value]

    def embed(self, kind: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One tower: (B, embed_dim), unit length."""
        features = run_encoder(self.encoders[kind], inputs).pooled  # type: ignore[arg-type]
        return F.normalize(self.project[kind](features), dim=-1)

    def forward(self, batch: dict[str, dict[str, torch.Tensor]]) -> ModelOutput:
        images = self.embed("image", batch[self.columns["image"]])  # (B, E)
        texts = self.embed("text", batch[self.columns["text"]])  # (B, E)
        return ModelOutput(self.head.scale() * images @ texts.T, None)  # (B, B)
