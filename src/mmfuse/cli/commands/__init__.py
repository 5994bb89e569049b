"""The subcommands, a module per group; importing this package registers them all on `app`,
the groups a user meets first listed first in `mmfuse --help` (then any other group)."""

import importlib

from mmfuse.registry import import_modules

ORDER = ("training", "prediction", "evaluation", "retrieval", "serving")
for group in ORDER:
    importlib.import_module(f"{__name__}.{group}")
import_modules(__name__, __path__)
