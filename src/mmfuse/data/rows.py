"""Validated rows for a config: read (a table, a manifest, tar shards), split, paired.

Rows are a DataFrame whose image cells are absolute paths, whose text cells are strings, with
``None`` for a missing modality, ``_row`` (the 1-based row number in the source) and
``_target`` (the parsed label, when there is one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmfuse.config import Config, DataConfig
from mmfuse.data.manifest import as_frame
from mmfuse.data.pairs import make_matching_pairs
from mmfuse.data.shards import is_shard_spec, read_shards, shard_folder
from mmfuse.data.split import split_by_group, split_frame
from mmfuse.data.validate import check_columns, validate_frame
from mmfuse.tasks import get_task

Data = pd.DataFrame | str | Path  # a table, a manifest file, or tar shards (data/shards.py)


def read_rows(
    data: Data, config: Config, extract_root: Path, *, base_dir: str | Path | None = None,
    known_labels: list[str] | None = None, require_labels: bool = True,
    modalities: list[str] | None = None,
) -> pd.DataFrame:
    """Validated rows; rows already validated pass through. Paired tasks (matching,
    retrieval) need no label column. Images of tar shards are extracted under
    ``extract_root`` (the pipeline reads files). ``modalities`` defaults to the model's."""
    if isinstance(data, pd.DataFrame) and data.attrs.get("validated"):
        return data
    paired = get_task(config.data.task).paired
    if is_shard_spec(data):
        data = read_shards(data, config.data, shard_folder(extract_root, data))
    return validate_frame(
        as_frame(data, base_dir), config.data, modalities or config.model.modalities,
        known_labels=None if paired else known_labels,
        require_labels=require_labels and not paired,
    )


def split_rows(rows: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, validation) rows: stratified by label, or (paired tasks) by image, so no
    image is seen in both."""
    data, seed = config.data, config.train.seed
    task = get_task(data.task)
    if task.paired:
        return split_by_group(rows, data.val_fraction, seed, rows[data.image_cols[0]])
    stratify = rows["_target"] if task.stratified else None
    return split_frame(rows, data.val_fraction, seed, stratify)


def with_pairs(rows: pd.DataFrame, config: Config, seed: int) -> pd.DataFrame:
    """Matching learns from true pairs only: mismatched captions are drawn here (other tasks:
    the rows unchanged)."""
    data = config.data
    if not get_task(data.task).draws_negatives:
        return rows
    return make_matching_pairs(rows, data.image_cols[0], data.text_cols[0],
                               negatives=data.negatives,
                               hard_fraction=data.hard_negative_fraction, seed=seed)


def given_weights(rows: pd.DataFrame) -> np.ndarray | None:
    """(N,) the rows' weights (``--weight-col``) where they carry them (validation and test
    rows may not), else None: each row then counts once."""
    return rows["_weight"].to_numpy(dtype=np.float64) if "_weight" in rows else None


def row_weights(rows: pd.DataFrame, data: DataConfig) -> np.ndarray | None:
    """(N,) each training row's weight (``--weight-col``), or None when none is named."""
    if not data.weight_col:
        return None
    if "_weight" not in rows:
        check_columns(rows, {data.weight_col: "--weight-col"})  # says which columns there are
    return given_weights(rows)
