"""A small convolutional network trained from scratch: fast on CPU, no pretrained weights."""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.config import EncoderConfig
from mmfuse.data.images import ImageTransform
from mmfuse.encoders.base import IMAGE_ENCODERS, Encoder, ImageEncoder


class SmallCNN(ImageEncoder):
    """(B, 3, S, S) -> pooled (B, C) and region tokens (B, (S/16)^2, C); C = widths[-1]."""

    pretrained = False

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.body = nn.Sequential(*layers)
        self.output_dim = channels
        self.transform = ImageTransform(image_size, resample="bilinear")
        self.fingerprint = f"small-cnn:{'-'.join(map(str, widths))}"

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.body(pixels)  # (B, C, S/2^k, S/2^k)


@IMAGE_ENCODERS.register("small-cnn", "4-block CNN trained from scratch, 256-d")
def small_cnn(cfg: EncoderConfig) -> Encoder:
    widths = tuple(cfg.options.get("widths", (32, 64, 128, 256)))
    return SmallCNN(cfg.image_size or 64, widths)
