"""Fusion strategies, one per file. Importing this package registers all of them."""

from mmfuse.fusion import (  # noqa: F401  (registration)
    bilinear,
    concat,
    cross_attention,
    gated,
    late,
    stack,
    weighted,
)
from mmfuse.fusion.base import FUSIONS, Fusion, FusionOutput

__all__ = ["FUSIONS", "Fusion", "FusionOutput"]
