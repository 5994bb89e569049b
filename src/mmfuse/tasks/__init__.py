"""Tasks: one class per file, found by name. Adding a task is its module here, its head
(``heads/``) and a test; importing this package collects every ``Task`` subclass with a name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse.errors import ConfigError
from mmfuse.registry import import_modules
from mmfuse.tasks.base import Task, all_tasks
from mmfuse.tasks.matching import NO, YES

if TYPE_CHECKING:
    from mmfuse.config import Config

import_modules(__name__, __path__)
TASKS: dict[str, Task] = {cls.name: cls() for cls in all_tasks()}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def selection_metric(config: Config) -> str:
    """What model selection optimises: ``--metric``, else the task's own."""
    return config.train.metric or get_task(config.data.task).selection_metric


__all__ = ["NO", "TASKS", "YES", "Task", "get_task", "selection_metric"]
