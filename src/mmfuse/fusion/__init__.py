"""Fusion strategies, one per file. Importing this package registers all of them."""

from mmfuse.fusion.base import FUSIONS, Fusion, FusionOutput
from mmfuse.registry import import_modules

import_modules(__name__, __path__)

__all__ = ["FUSIONS", "Fusion", "FusionOutput"]
