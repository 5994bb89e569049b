"""Auto-mode candidate kinds, one per file. Importing this package registers all of them."""

from mmfuse.auto.candidate_kind import CANDIDATE_KINDS, CandidateKind
from mmfuse.registry import import_modules

import_modules(__name__, __path__)

__all__ = ["CANDIDATE_KINDS", "CandidateKind"]
