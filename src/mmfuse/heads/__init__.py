"""Task heads. Importing this package registers all of them."""

from mmfuse.heads import binary, classification, multilabel, regression  # noqa: F401
from mmfuse.heads.base import HEADS, Head

__all__ = ["HEADS", "Head"]
