"""A small convolutional network trained from scratch: fast on CPU, no pretrained weights."""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.config import EncoderConfig
from mmfuse.data.images import ImageTransform
from mmfuse.encoders.base import IMAGE_ENCODERS, Encoder, EncoderOutput


class SmallCNN(Encoder):
    """(B, 3, S, S) -> pooled (B, C) and region tokens (B, (S/16)^2, C); C = widths[-1]."""

    kind = "image"
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

    @property
    def preprocessing(self) -> str:
        return self.transform.describe()

    def prepare(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pixels": torch.stack(values)}

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        grid = self.body(pixels)  # (B, C, h, w)
        tokens = grid.flatten(2).transpose(1, 2)  # (B, h*w, C)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens.mean(1), tokens, mask)


@IMAGE_ENCODERS.register("small-cnn", "4-block CNN trained from scratch, 256-d")
def small_cnn(cfg: EncoderConfig) -> Encoder:
    widths = tuple(cfg.options.get("widths", (32, 64, 128, 256)))
    return SmallCNN(cfg.image_size or 64, widths)
