"""Image <-> text search in a shared space (a dual encoder); it ranks, it does not predict."""

from __future__ import annotations

from typing import Any

from mmfuse.tasks.base import Task


class Retrieval(Task):
    name = "retrieval"
    head = ""  # projection heads of the dual encoder, not a registered head
    selection_metric = headline_metric = "mean_recall"
    metric_names = ("mean_recall", *(f"{d}_r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)),
                    *(f"{d}_{s}_rank" for d in ("t2i", "i2t") for s in ("median", "mean")))
    predicts = False
    model_kind = "dual_encoder"
    paired = True
    stratified = False
    single_label = False
    why_not = ("a retrieval model ranks, it does not classify. Use `mmfuse index` and "
               "`mmfuse search`, or `mmfuse zero-shot` to classify images by label prompts.")

    def fit_classes(self, targets: list[Any]) -> list[str] | None:
        return None
