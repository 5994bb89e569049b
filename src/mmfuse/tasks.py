"""What each task is and can do: its metrics and the commands that apply to it.

One table, read by every command that behaves differently per task, so that a command either
works on a task or refuses it in one sentence from here (never a KeyError deep inside).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmfuse.errors import ConfigError, MmfuseError


@dataclass(frozen=True)
class Task:
    name: str
    selection_metric: str  # what model selection (early stopping, auto mode) maximises/minimises
    headline_metric: str  # the one number robustness curves and reports follow
    scores_classes: bool = True  # probabilities per class: predict, explain, export, calibration
    paired: bool = False  # rows are (image, caption) pairs; no label column
    why_not: str = ""  # the sentence that refuses what does not apply

    def require_class_scores(self, action: str) -> None:
        """Refuse ``action`` (predict, explain, export, report) on a task without class scores."""
        if not self.scores_classes:
            raise MmfuseError(f"cannot {action}: {self.why_not}")


TASKS = {task.name: task for task in (
    Task("classification", "macro_f1", "accuracy"),
    Task("binary", "macro_f1", "accuracy"),
    Task("multilabel", "macro_f1", "macro_f1"),
    Task("regression", "rmse", "rmse"),
    Task("matching", "auroc", "auroc", paired=True),
    Task("retrieval", "mean_recall", "mean_recall", scores_classes=False, paired=True,
         why_not="a retrieval model ranks, it does not classify. Use `mmfuse index` and "
                 "`mmfuse search`, or `mmfuse zero-shot` to classify images by label prompts."),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASKS[name]
