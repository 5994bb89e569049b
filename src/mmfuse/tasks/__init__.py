"""Tasks: one class per task, found by name. Adding a task: its module here, its head, a test."""

from __future__ import annotations

from mmfuse.errors import ConfigError
from mmfuse.tasks.base import Task
from mmfuse.tasks.binary import Binary
from mmfuse.tasks.classification import Classification
from mmfuse.tasks.matching import NO, YES, Matching
from mmfuse.tasks.multilabel import Multilabel
from mmfuse.tasks.regression import Regression
from mmfuse.tasks.retrieval import Retrieval

TASKS: dict[str, Task] = {task.name: task for task in (
    Classification(), Multilabel(), Regression(), Binary(), Matching(), Retrieval())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["NO", "TASKS", "YES", "Task", "get_task"]
