"""Any local Hugging Face vision model as an image encoder: ViT, DeiT, DINOv2, ConvNeXt, Swin,
or the vision tower of a CLIP / SigLIP folder, named as ``hf:/path/to/folder``.

Its preprocessing is the folder's own image processor (resize, crop, normalise as the model
was trained), described in the cache key and so in the run folder's ``meta.json``. The pooled
feature is the model's pooled output (a CLIP-style folder's: its projected image features);
the tokens are its last hidden states (patches, or a feature map's cells), in the pooled
feature's space.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image

from mmfuse.config import EncoderConfig
from mmfuse.encoders.base import IMAGE_ENCODERS, Encoder, ImageEncoder
from mmfuse.encoders.hf_folder import (
    SAFE,
    folder_fingerprint,
    load_failed,
    local_folder,
    transformers_offline,
)
from mmfuse.types import EncoderOutput


class ProcessorTransform:
    """A folder's image processor as mmfuse's image transform: a PIL image -> (3, S, S)."""

    def __init__(self, processor: object) -> None:
        self.processor = processor
        blank = processor(images=Image.new("RGB", (8, 8)), return_tensors="pt")["pixel_values"]
        self.size = int(blank.shape[-1])
        if blank.shape[-2] != self.size:
            raise ValueError(f"the image processor gives {tuple(blank.shape[-2:])} pixels; "
                             "mmfuse reads square inputs")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def describe(self) -> str:
        settings = json.dumps(self.processor.to_dict(), sort_keys=True, default=str)
        digest = hashlib.blake2b(settings.encode(), digest_size=8).hexdigest()
        return f"{type(self.processor).__name__}/{self.size}px/{digest}"


class HFImageEncoder(ImageEncoder):
    """(B, 3, S, S) as the folder's processor makes them -> pooled (B, D), tokens (B, T, D)."""

    pretrained = True

    def __init__(self, folder: Path) -> None:
        super().__init__()
        transformers_offline()
        from transformers import AutoImageProcessor, AutoModel

        try:
            processor = AutoImageProcessor.from_pretrained(folder, **SAFE)
            model = AutoModel.from_pretrained(folder, use_safetensors=True, **SAFE)
            self.transform = ProcessorTransform(processor)
        except (OSError, ValueError) as error:
            raise load_failed(folder, error, "preprocessor_config.json") from error
        # CLIP, SigLIP: the vision tower, its projection, and the scale of the pair logits
        # (a dual encoder made from the folder uses it: models/dual_encoder.py)
        self.logit_scale: float | None = None
        if hasattr(model, "vision_model"):
            self.model = model.vision_model
            self.projection = getattr(model, "visual_projection", None)
            if hasattr(model, "logit_scale"):
                self.logit_scale = float(model.logit_scale.detach())
        else:
            self.model, self.projection = model, None
        self.output_dim = int(self._pooled_dim(model.config))
        self.fingerprint = f"hf-vision:{folder_fingerprint(folder)}"

    def _pooled_dim(self, config: object) -> int:
        if self.projection is not None:
            return self.projection.out_features
        vision = getattr(config, "vision_config", config)
        sizes = getattr(vision, "hidden_sizes", None)  # ConvNeXt: one per stage
        return sizes[-1] if sizes else vision.hidden_size

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        out = self.model(pixel_values=pixels)
        states = out.last_hidden_state
        if states.dim() == 4:  # a feature map (B, D, h, w): its cells are the tokens
            states = states.flatten(2).transpose(1, 2)
        pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None \
            else states.mean(1)
        pooled = pooled.flatten(1)  # ConvNeXt's (B, D, 1, 1)
        if self.projection is not None:
            states = self.model.post_layernorm(states) if hasattr(self.model, "post_layernorm") \
                else states
            pooled, states = self.projection(pooled), self.projection(states)
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        return EncoderOutput(pooled, states, mask)


@IMAGE_ENCODERS.register("hf", "any local Hugging Face vision model folder (ViT, DINOv2, "
                               "ConvNeXt, Swin, CLIP/SigLIP's vision tower), as hf:/path")
def hf_folder(cfg: EncoderConfig, folder: str) -> Encoder:
    return HFImageEncoder(local_folder(folder))
