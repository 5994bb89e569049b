"""The leaderboard of an auto run: one row per candidate, saved in the run folder."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from mmfuse.errors import MmfuseError
from mmfuse.io import atomic_write_text, read_json, write_json
from mmfuse.model_folder import LEADERBOARD_FILE
from mmfuse.scoring import greater_is_better

COLUMNS = ("candidate", "status", "reason", "val_metric", "folds", "fit_s", "predict_s_per_1k",
           "weight", "method", "chosen")


class Status(StrEnum):
    """How a candidate's turn ended."""

    OK = "ok"  # fitted and judged
    MEMBER = "member"  # a member of an ensemble, judged out of fold
    SKIPPED = "skipped"  # not run (``reason`` says why)
    FAILED = "failed"  # raised an error (``reason`` holds it)


@dataclass
class LeaderboardRow:
    """One candidate on the leaderboard. ``val_metric``: its score on the judging rows (None
    when it has none); ``folds``: how many folds judged it; ``weight``: its weight in the
    chosen ensemble; ``model``: a network's model section (what fusions and plans read)."""

    candidate: str
    status: Status = Status.OK
    reason: str = ""
    val_metric: float | None = None
    folds: int | None = None
    fit_s: float | None = None
    predict_s_per_1k: float | None = None
    weight: float | None = None
    method: str | None = None  # an ensemble's combination: "selection" or "stacking"
    chosen: bool = False
    single_modality: bool = False
    member: bool = False
    view: str | None = None  # a linear member's view
    model: dict[str, Any] | None = None

    @property
    def scored(self) -> bool:
        return self.val_metric is not None

    def describe_status(self) -> str:
        """"ok", or the status and why: "skipped: time limit"."""
        return f"{self.status}: {self.reason}" if self.reason else str(self.status)

    def entry(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": str(self.status)}

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> LeaderboardRow:
        """A row as ``entry`` wrote it (or an older run's, whose status held its reason)."""
        fields = {k: v for k, v in entry.items() if k in FIELDS}
        status, _, reason = str(fields.pop("status", "ok")).partition(": ")
        status = "member" if status.startswith("member") else status
        fields["reason"] = fields.get("reason") or reason
        return cls(**fields, status=Status(status))


FIELDS = {f.name for f in dataclasses.fields(LeaderboardRow)}


def ranked(rows: list[LeaderboardRow], metric: str) -> list[LeaderboardRow]:
    """Best first; candidates without a score (skipped, failed) last, in the order tried."""
    sign = -1.0 if greater_is_better(metric) else 1.0
    return sorted(rows, key=lambda row: math.inf if row.val_metric is None
                  else sign * row.val_metric)


def singles_of(rows: list[LeaderboardRow], model: dict[str, Any]) -> list[LeaderboardRow]:
    """The finished single-modality rows that read a modality with the encoder ``model`` (a
    fusion's model section, as a row holds it) uses for that modality."""
    def same_encoder(row: LeaderboardRow) -> bool:
        assert row.model is not None
        kind = row.model["modalities"][0]
        return kind in model["modalities"] and row.model[f"{kind}_encoder"] == model[
            f"{kind}_encoder"]

    return [r for r in rows if r.single_modality and r.model and r.scored and same_encoder(r)]


def write_leaderboard(run_dir: Path, metric: str, rows: list[LeaderboardRow], **info: Any
                      ) -> None:
    """``leaderboard.json`` (rows and settings) and ``leaderboard.csv`` (rows only)."""
    entries = [row.entry() for row in ranked(rows, metric)]
    write_json(run_dir / LEADERBOARD_FILE, {"metric": metric, **info, "rows": entries})
    table = pd.DataFrame(entries, columns=list(COLUMNS))
    atomic_write_text(run_dir / "leaderboard.csv", table.to_csv(index=False))


def read_leaderboard(run_dir: Path) -> dict[str, Any]:
    """The run's leaderboard file: its settings, and ``rows`` as ``LeaderboardRow``s."""
    path = Path(run_dir) / LEADERBOARD_FILE
    if not path.exists():
        raise MmfuseError(
            f"{run_dir} has no {LEADERBOARD_FILE}: it was not trained in auto mode "
            "(`mmfuse train` without --fusion/--modalities/--finetune-*)"
        )
    board = read_json(path)
    return board | {"rows": [LeaderboardRow.from_entry(entry) for entry in board["rows"]]}
