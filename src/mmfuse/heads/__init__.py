"""Task heads, one per file. Importing this package registers all of them."""

from mmfuse.heads.base import HEADS, Head
from mmfuse.registry import import_modules

import_modules(__name__, __path__)

__all__ = ["HEADS", "Head"]
