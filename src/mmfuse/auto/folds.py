"""The rows every auto-mode candidate is fitted and judged on, and the judge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmfuse.auto.judge import Judge
from mmfuse.config import Config
from mmfuse.data.rows import given_weights
from mmfuse.model_kinds import kind_for
from mmfuse.tasks import get_task
from mmfuse.training.stacking import fold_splits

SMALL_DATA_ROWS = 5000  # up to this many rows, candidates are judged by k-fold validation


@dataclass
class Fold:
    """Rows a candidate is fitted on (early stopping on an inner split of them) and the rows
    it is judged on: ``positions`` of ``held`` among the judging rows."""

    train: pd.DataFrame
    held: pd.DataFrame
    positions: np.ndarray


def validation_folds(config: Config, train: pd.DataFrame, val: pd.DataFrame, folds: int,
                     metric: str) -> tuple[list[Fold], Judge]:
    """The folds every candidate is judged on, and the judge.

    Large data: the one validation split (judging rows: the validation rows). Small data (up
    to ``SMALL_DATA_ROWS`` rows): ``folds`` folds over all rows (judging rows: every row), so
    that a choice among many candidates does not hang on the luck of a few hundred validation
    rows; the chosen network is then refitted on the split.
    """
    rows = pd.concat([train, val], ignore_index=True)
    rows.attrs = dict(train.attrs)
    classes = kind_for(config).fit_classes(config, rows)
    task = get_task(config.data.task)
    if len(rows) > SMALL_DATA_ROWS or folds < 2:
        judged, splits = val, [Fold(train, val, np.arange(len(val)))]
    else:
        judged, splits = rows, []
        targets = task.encode(rows["_target"].tolist(), classes)
        for fit_index, held_index in fold_splits(targets, folds, config.train.seed):
            held = rows.iloc[held_index].copy()
            held.attrs["skipped"] = []  # bad rows are reported once, with the training rows'
            splits.append(Fold(rows.iloc[fit_index], held, np.asarray(held_index)))
    judge = Judge(task, metric, task.encode(judged["_target"].tolist(), classes).numpy(),
                  classes, given_weights(judged))
    return splits, judge
