"""Errors a user can act on. The CLI prints these without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class MmfuseError(Exception):
    """Base class: the message says what is wrong, where, and what to do."""


class ConfigError(MmfuseError):
    """An unknown component name, an impossible combination of settings."""


class NotFittedError(MmfuseError, AttributeError):
    """A fitted attribute asked of an unfitted estimator (an AttributeError, as scikit-learn's)."""


class CheckpointError(MmfuseError):
    """A checkpoint folder that is missing files, truncated, or from an incompatible version."""


@dataclass(frozen=True)
class Problem:
    """One bad cell or row of a manifest. ``row`` is 1-based over data rows (header excluded)."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


class DataValidationError(MmfuseError):
    """Every problem found in a manifest, reported together."""

    MAX_SHOWN = 20

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[: self.MAX_SHOWN])
        more = len(problems) - self.MAX_SHOWN
        if more > 0:
            shown += f"\n  ... and {more} more"
        message = f"{len(problems)} problem(s) in the data:\n{shown}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)
