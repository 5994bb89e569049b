"""One label per row among C classes (softmax)."""

from __future__ import annotations

from mmfuse.tasks.base import Task


class Classification(Task):
    name = "classification"
    head = "classification"
