"""Encoders: vision/*, text/* and tabular/*, one per file. Importing this package registers all
of them."""

from mmfuse.encoders import tabular, text, vision
from mmfuse.encoders.base import (
    IMAGE_ENCODERS,
    TABULAR_ENCODERS,
    TEXT_ENCODERS,
    Encoder,
    create_encoder,
)
from mmfuse.registry import import_modules

import_modules(text.__name__, text.__path__)
import_modules(vision.__name__, vision.__path__)
import_modules(tabular.__name__, tabular.__path__)

__all__ = ["IMAGE_ENCODERS", "TABULAR_ENCODERS", "TEXT_ENCODERS", "Encoder", "create_encoder"]
