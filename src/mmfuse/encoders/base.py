"""The encoder contract shared by every image and text encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmfuse.config import EncoderConfig
from mmfuse.data.images import DECODE_SIDE, ImageTransform
from mmfuse.data.photos import photos
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.errors import ConfigError
from mmfuse.registry import Registry
from mmfuse.types import EncoderOutput, masked_mean


class Encoder(nn.Module):
    """Maps a batch of preprocessed inputs to pooled features and tokens.

    Subclasses set ``kind`` ("image" or "text"), ``output_dim``, ``pretrained`` and a
    ``fingerprint`` of their weights; ``cache_key`` adds the preprocessing so that cached
    features are never reused across different weights or transforms.
    """

    kind: str = ""
    output_dim: int = 0
    pretrained: bool = False
    fingerprint: str = ""
    not_exportable: str = ""  # why ONNX cannot express it; "" when it can
    vocabulary: Vocabulary | None = None  # fitted from training texts (saved as vocabulary.json)
    columns: list[str] = []  # a tabular encoder: the numeric and categorical columns it reads
    # a frozen encoder's faster way to the same features (encoders/fast_path.py), or None
    fast: Callable[..., EncoderOutput] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.frozen = False

    def freeze(self, frozen: bool) -> Encoder:
        self.frozen = frozen
        self.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        # A frozen encoder stays in eval mode: batch-norm statistics and dropout must not move.
        return super().train(mode and not self.frozen)

    @property
    def preprocessing(self) -> str:
        raise NotImplementedError

    @property
    def cache_key(self) -> str:
        return f"{self.fingerprint}|{self.preprocessing}"

    def prepare(self, values: list[Any]) -> dict[str, torch.Tensor]:
        """Raw values (decoded images or strings) -> the keyword inputs of ``forward``."""
        raise NotImplementedError

    def fit(self, values: list[Any]) -> Encoder:
        """Fit state that comes from the training inputs (e.g. n-gram document frequencies)
        before training starts; most encoders have none. Returns self."""
        return self

    def parts_of(self, values: list[str]) -> list[list[str]]:
        """Each cell as the items this encoder reads and the feature cache keeps, whose
        features are averaged: a cell of several photos (``data/photos.py``), a text longer
        than a transformer's window (its windows); most cells are one item."""
        return [[value] for value in values]

    def fitted_state(self) -> dict[str, Any] | None:
        """What ``fit`` learned that the weights do not hold, as JSON (saved in the model
        folder's ``fitted_state.json``); None when there is none (or it is saved elsewhere:
        a text encoder's vocabulary)."""
        return None

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore what ``fitted_state`` returned. ValueError when it does not fit."""
        raise ValueError(f"encoder {type(self).__name__} keeps no fitted state")


class ImageEncoder(Encoder):
    """An encoder over (B, 3, S, S) pixels whose last feature map gives the region tokens.

    Subclasses set ``transform`` and implement ``feature_map``: (B, 3, S, S) -> (B, D, h, w).
    """

    kind = "image"
    transform: ImageTransform

    @property
    def preprocessing(self) -> str:
        return f"{self.transform.describe()}/jpeg-decode-{DECODE_SIDE}px"

    def parts_of(self, values: list[str]) -> list[list[str]]:
        """A cell's photos (one, or several)."""
        return [photos(value) for value in values]

    def prepare(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pixels": torch.stack(values)}  # (B, 3, S, S)

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        tokens = self.feature_map(pixels).flatten(2).transpose(1, 2)  # (B, h*w, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens.mean(1), tokens, mask)


IMAGE_ENCODERS: Registry[Encoder] = Registry("image encoder")
TEXT_ENCODERS: Registry[Encoder] = Registry("text encoder")
TABULAR_ENCODERS: Registry[Encoder] = Registry("tabular encoder")
REGISTRIES = {"image": IMAGE_ENCODERS, "text": TEXT_ENCODERS, "tabular": TABULAR_ENCODERS}


def create_encoder(kind: str, cfg: EncoderConfig, **context: Any) -> Encoder:
    """Build and freeze (or not) an encoder from its config. ``hf:/path`` names a local HF folder.
    ``context``: a text encoder's fitted vocabulary; a tabular encoder's ``num_cols`` and
    ``cat_cols``."""
    registry = REGISTRIES[kind]
    name, argument = cfg.name, None
    if kind in ("image", "text") and cfg.name.startswith("hf:"):
        name, argument = "hf", cfg.name[3:]
    factory = registry.get(name)
    encoder = factory(cfg, argument, **context) if argument else factory(cfg, **context)
    frozen = encoder.pretrained if cfg.frozen is None else cfg.frozen
    if frozen and not encoder.pretrained:
        raise ConfigError(
            f"{kind} encoder '{cfg.name}' is trained from scratch; it cannot be frozen "
            "(set frozen: false or leave it unset)"
        )
    return encoder.freeze(frozen)


def file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """A cheap, stable fingerprint of a weights file: its size and first and last megabyte."""
    digest = hashlib.blake2b(digest_size=8)
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(chunk))
        handle.seek(max(0, size - chunk))
        digest.update(handle.read(chunk))
    return digest.hexdigest()


PART_MASKS = ("photo_mask", "window_mask")  # cells of several photos, texts of several windows


def run_encoder(encoder: Encoder, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
    """Features of one modality's batch: looked up (``pooled`` from the cache) or computed;
    cells of several photos, or long texts' windows, pooled by their mean (as the feature
    cache pools them)."""
    if "pooled" in inputs:
        tokens = inputs.get("tokens")
        return EncoderOutput(
            inputs["pooled"].float(),
            tokens.float() if tokens is not None else None,  # type: ignore[arg-type]
            inputs.get("token_mask"),  # type: ignore[arg-type]
        )
    for key in PART_MASKS:
        if key in inputs:
            mask = inputs[key]
            per_part, out = part_features(
                encoder, {k: v for k, v in inputs.items() if k not in (key, "present")}, mask)
            return out._replace(pooled=masked_mean(per_part, mask))
    return forward_of(encoder)(**{k: v for k, v in inputs.items() if k != "present"})


def forward_of(encoder: Encoder) -> Callable[..., EncoderOutput]:
    """The encoder's fast path where it has one and nothing needs gradients or a trace
    (explanations, ONNX export); the encoder itself otherwise."""
    if (encoder.fast is None or torch.is_grad_enabled() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export() or next(encoder.parameters()).is_cuda):
        return encoder
    return encoder.fast


def photo_features(encoder: Encoder, pixels: torch.Tensor, photo_mask: torch.Tensor
                   ) -> tuple[torch.Tensor, EncoderOutput]:
    """Cells of up to K photos each: ``pixels`` (B, K, 3, S, S), ``photo_mask`` (B, K) True
    where a photo is real (``part_features``)."""
    return part_features(encoder, {"pixels": pixels}, photo_mask)


def part_features(encoder: Encoder, inputs: dict[str, torch.Tensor], mask: torch.Tensor
                  ) -> tuple[torch.Tensor, EncoderOutput]:
    """Cells of up to K parts each (photos, or a text's windows): every input (B, K, ...),
    ``mask`` (B, K) True where a part is real. Only real parts are encoded (a batch-norm sees
    no blank photo). Returns each part's pooled features (B, K, D), zeros where none, and the
    cells' output whose tokens are their parts' side by side: (B, K x T, D) with token_mask
    (B, K x T); its ``pooled`` is left for the caller to pool from the parts' (mean or
    attention)."""
    batch, parts = mask.shape
    out = forward_of(encoder)(**{k: v[mask] for k, v in inputs.items()})  # (N real parts, ...)
    dim, width = out.pooled.shape[-1], out.tokens.shape[1]
    per_part = out.pooled.new_zeros(batch, parts, dim)
    per_part[mask] = out.pooled
    tokens = out.tokens.new_zeros(batch, parts, width, dim)
    tokens[mask] = out.tokens
    token_mask = torch.zeros(batch, parts, width, dtype=torch.bool, device=mask.device)
    token_mask[mask] = out.token_mask
    return per_part, EncoderOutput(per_part[:, 0], tokens.flatten(1, 2), token_mask.flatten(1))
