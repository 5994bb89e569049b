"""Does this caption describe this image? Trained from true pairs; negatives are drawn."""

from __future__ import annotations

from typing import Any

from mmfuse.tasks.binary import Binary

YES, NO = "yes", "no"


class Matching(Binary):
    name = "matching"
    selection_metric = headline_metric = "auroc"
    paired = True
    draws_negatives = True
    stratified = False  # split by image instead, so no image is on both sides

    def fit_classes(self, targets: list[Any]) -> list[str] | None:
        return [NO, YES]
