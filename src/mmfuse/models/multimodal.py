"""The composition: encoders -> (missing-modality substitution) -> fusion -> head."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mmfuse.encoders.base import Encoder, photo_features, run_encoder
from mmfuse.fusion.base import Fusion
from mmfuse.heads.base import Head
from mmfuse.models.photo_pooling import PhotoPooling
from mmfuse.types import EncoderOutput

ENCODED_KEYS = ("pooled", "tokens", "token_mask")


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, n_outputs)
    modality_weights: torch.Tensor | None  # (B, M), modalities in sorted order, or None


class MultimodalModel(nn.Module):
    """Fuses one or more image and text columns (each a *modality*) into one prediction.

    ``modality_kinds`` maps modality name (the column) -> "image" | "text"; columns of one kind
    share that kind's encoder. A batch maps each modality to a dict holding ``present`` (B,)
    and either the encoder's inputs (``pixels`` or ``input_ids``/``attention_mask``) or
    precomputed features (``pooled`` and, for token fusions, ``tokens``/``token_mask``) from the
    feature cache. Absent modalities get a learned placeholder vector, so every fusion can
    predict from what is there. Cells of several photos read by a trained image encoder
    (``pixels`` (B, K, 3, S, S) with ``photo_mask`` (B, K)) are pooled by learned attention.
    """

    def __init__(
        self,
        encoders: dict[str, Encoder],
        modality_kinds: dict[str, str],
        fusion: Fusion,
        head: Head,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.modality_kinds = dict(sorted(modality_kinds.items()))
        self.fusion = fusion
        self.head = head
        self.missing = nn.ParameterDict(
            {
                module_key(m): nn.Parameter(torch.zeros(encoders[kind].output_dim))
                for m, kind in self.modality_kinds.items()
            }
        )
        # for image encoders being trained (a frozen one's cells are pooled in the cache)
        self.photo_pool = nn.ModuleDict(
            {module_key(m): PhotoPooling(encoders[kind].output_dim)
             for m, kind in self.modality_kinds.items()
             if kind == "image" and not encoders[kind].frozen})

    @property
    def modalities(self) -> list[str]:
        return list(self.modality_kinds)

    def encoder_for(self, modality: str) -> Encoder:
        return self.encoders[self.modality_kinds[modality]]  # type: ignore[return-value]

    def encode(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, EncoderOutput]:
        encoded = {}
        for m in self.modalities:
            inputs = batch[m]
            if module_key(m) in self.photo_pool and "pixels" in inputs:
                out = self._photos(m, inputs)
            else:
                out = run_encoder(self.encoder_for(m), inputs)
            present = inputs["present"].unsqueeze(-1)  # (B, 1)
            placeholder = self.missing[module_key(m)].to(out.pooled.dtype)
            encoded[m] = out._replace(pooled=torch.where(present, out.pooled, placeholder))
        return encoded

    def _photos(self, modality: str, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """A trained image encoder's output for cells of photos, pooled by attention."""
        pool = self.photo_pool[module_key(modality)]
        if "photo_mask" not in inputs:
            # one photo per cell: pooling is the identity, kept in the graph so that every
            # parameter takes part in each step (DDP requires it)
            out = self.encoder_for(modality)(pixels=inputs["pixels"])
            return out._replace(pooled=pool(out.pooled.unsqueeze(1), torch.ones_like(
                inputs["present"]).unsqueeze(1)))
        per_photo, out = photo_features(self.encoder_for(modality), inputs["pixels"],
                                        inputs["photo_mask"])
        return out._replace(pooled=pool(per_photo, inputs["photo_mask"]))

    def forward(self, batch: dict[str, dict[str, torch.Tensor]]) -> ModelOutput:
        encoded = self.encode(batch)
        present = {m: batch[m]["present"] for m in self.modalities}
        fused, weights = self.fusion(encoded, present)
        return ModelOutput(self.head(fused), weights)


def module_key(modality: str) -> str:
    """Module names may not contain dots; column names may."""
    return modality.replace(".", "_")


def frozen_pretrained_prefixes(model: MultimodalModel) -> list[str]:
    """State-dict prefixes of encoders reloaded from their package, so never saved again."""
    return [
        f"encoders.{kind}."
        for kind, encoder in model.encoders.items()
        if encoder.frozen and encoder.pretrained  # type: ignore[union-attr]
    ]


# State that older checkpoints lack (names or prefixes); a model loading one keeps the value
# it was built with (photo pooling: the mean).
ADDED_LATER = ("head.decision_shift", "photo_pool.")


def persistent_state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """Everything that training changed: fusion, head, placeholders, trainable encoders."""
    skip = tuple(frozen_pretrained_prefixes(model))
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}


def load_persistent_state(model: MultimodalModel, state: dict[str, torch.Tensor]) -> None:
    from mmfuse.errors import CheckpointError

    shapes = model.state_dict()
    wrong = [f"{k} is {tuple(v.shape)}, the model wants {tuple(shapes[k].shape)}"
             for k, v in state.items() if k in shapes and shapes[k].shape != v.shape]
    if wrong:
        raise CheckpointError(
            "the saved weights do not fit the model that config.yaml and labels.json describe "
            f"({'; '.join(wrong[:3])}): was one of these files edited, or taken from another "
            "run?")
    missing, unexpected = model.load_state_dict(state, strict=False)
    skip = tuple(frozen_pretrained_prefixes(model))
    missing = [k for k in missing if not k.startswith(skip) and not k.startswith(ADDED_LATER)]
    if missing or unexpected:
        raise CheckpointError(
            "the saved weights do not fit the model built from config.yaml "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
