"""The leaderboard of an auto run: one row per candidate, saved in the run folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from mmfuse.errors import MmfuseError
from mmfuse.io import atomic_write_text, read_json, write_json
from mmfuse.scoring import greater_is_better

LEADERBOARD_FILE = "leaderboard.json"
COLUMNS = ("candidate", "status", "val_metric", "folds", "fit_s", "predict_s_per_1k", "weight",
           "method", "chosen")


def ranked(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first; candidates without a score (skipped, failed) last, in the order tried."""
    sign = -1.0 if greater_is_better(metric) else 1.0

    def key(row: dict[str, Any]) -> float:
        value = row.get("val_metric")
        return math.inf if value is None else sign * value

    return sorted(rows, key=key)


def singles_of(rows: list[dict[str, Any]], model: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished single-modality rows that read a modality with the encoder ``model`` (a
    fusion's model section, as a row holds it) uses for that modality."""
    def same_encoder(row: dict[str, Any]) -> bool:
        kind = row["model"]["modalities"][0]
        return kind in model["modalities"] and row["model"][f"{kind}_encoder"] == model[
            f"{kind}_encoder"]

    return [r for r in rows if r.get("single_modality") and r.get("model")
            and r["val_metric"] is not None and same_encoder(r)]


def write_leaderboard(run_dir: Path, metric: str, rows: list[dict[str, Any]], **info: Any) -> None:
    """``leaderboard.json`` (rows and settings) and ``leaderboard.csv`` (rows only)."""
    rows = ranked(rows, metric)
    write_json(run_dir / LEADERBOARD_FILE, {"metric": metric, **info, "rows": rows})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    atomic_write_text(run_dir / "leaderboard.csv", table.to_csv(index=False))


def read_leaderboard(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / LEADERBOARD_FILE
    if not path.exists():
        raise MmfuseError(
            f"{run_dir} has no {LEADERBOARD_FILE}: it was not trained in auto mode "
            "(`mmfuse train` without --fusion/--modalities/--finetune-*)"
        )
    return read_json(path)


def leaderboard_table(board: dict[str, Any]) -> Table:
    metric = board["metric"]
    folds = max([row.get("folds") or 1 for row in board["rows"]] or [1])
    judged = f"out of fold over {folds} folds" if folds > 1 else "validation split"
    encoding = (f"; frozen features {board['frozen_features_s']:.0f} s of them: "
                f"{board['frozen_features']}" if "frozen_features_s" in board else "")
    table = Table(title=f"leaderboard ({metric}, {judged}; preset {board.get('preset')}, "
                        f"{board.get('elapsed_s', 0):.0f} s of {board.get('time_limit_s', 0):.0f} s"
                        f"{encoding})")
    table.add_column("#", justify="right")
    table.add_column("candidate")
    table.add_column(metric, justify="right")
    table.add_column("folds", justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("predict s / 1k rows", justify="right")
    table.add_column("weight in ensemble", justify="right")
    table.add_column("")
    for rank, row in enumerate(ranked(board["rows"], metric), start=1):
        scored = row.get("val_metric") is not None
        table.add_row(
            str(rank) if scored else "-", row["candidate"],
            f"{row['val_metric']:.4f}" if scored else row["status"],
            _folds(row, folds),
            f"{row['fit_s']:.1f}" if row.get("fit_s") is not None else "",
            f"{row['predict_s_per_1k']:.3f}" if row.get("predict_s_per_1k") is not None else "",
            f"{row['weight']:.2f}" if row.get("weight") is not None else row.get("method") or "",
            "[bold green]chosen[/]" if row.get("chosen") else "",
        )
    return table


def _folds(row: dict[str, Any], folds: int) -> str:
    """How many folds judged the row: fewer than the others when time ran short (it was then
    compared with the choice on those folds' rows only)."""
    done = row.get("folds")
    if done is None or row.get("member"):
        return ""
    return f"{done} of {folds}" if done < folds else str(done)
