"""Encoders: vision/* and text/*. Importing this package registers every built-in encoder."""

from mmfuse.encoders.base import (
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    Encoder,
    create_encoder,
)
from mmfuse.encoders.text import gru, hf, ngram  # noqa: F401  (registration)
from mmfuse.encoders.vision import efficientnet_lite, small_cnn  # noqa: F401  (registration)

__all__ = ["IMAGE_ENCODERS", "TEXT_ENCODERS", "Encoder", "create_encoder"]
