"""The composition of encoders, fusion and head, and the config -> modules builder."""

from mmfuse.models.build import build_model, modality_kinds
from mmfuse.models.multimodal import ModelOutput, MultimodalModel

__all__ = ["ModelOutput", "MultimodalModel", "build_model", "modality_kinds"]
