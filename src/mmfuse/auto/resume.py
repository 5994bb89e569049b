"""What an interrupted auto-mode search left in its run folder, and how the next one reads it:
the finished candidates' leaderboard rows, the choice so far and its out-of-fold evidence."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmfuse.auto.judge import Evidence
from mmfuse.auto.leaderboard import LEADERBOARD_FILE, LeaderboardRow, read_leaderboard
from mmfuse.io import load_tensors, save_tensors
from mmfuse.predictor import Predictor
from mmfuse.progress import CONSOLE

EVIDENCE_FILE = "auto-evidence.safetensors"  # the choice's out-of-fold outputs (--resume)


@dataclass
class Resumed:
    """Finished candidates' rows, the choice (None: none yet) and the seconds spent."""

    rows: list[LeaderboardRow]
    best: Predictor | None
    best_name: str | None
    elapsed_s: float
    rows_read: int | None = None  # the rows its candidates read, where not every row


def resumed(run: Path | None) -> Resumed:
    """Candidates an interrupted search finished are kept, not fitted again."""
    if run is None or not (run / LEADERBOARD_FILE).exists():
        return Resumed([], None, None, 0.0)
    board = read_leaderboard(run)
    rows = [r for r in board["rows"] if r.scored]
    chosen = [r for r in rows if r.chosen]
    CONSOLE.print(f"auto: resuming; {len(rows)} candidate(s) already done")
    return Resumed(rows, Predictor.load(run) if chosen else None,
                   chosen[0].candidate if chosen else None,
                   float(board.get("elapsed_s", 0.0)), board.get("rows_read"))


def save_choice(run: Path, predictor: Predictor, evidence: Evidence) -> None:
    """The choice so far and its evidence, so that a resumed search compares with it."""
    predictor.save(run)
    save_tensors(run / EVIDENCE_FILE, {k: torch.from_numpy(np.ascontiguousarray(v))
                                       for k, v in dataclasses.asdict(evidence).items()})


def choice_evidence(run: Path | None) -> Evidence | None:
    """The kept choice's evidence, from an interrupted search's run folder."""
    if run is None or not (run / EVIDENCE_FILE).exists():
        return None
    return Evidence(**{k: v.numpy() for k, v in load_tensors(run / EVIDENCE_FILE).items()})
