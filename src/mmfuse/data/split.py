"""Seeded, stratified train/validation split."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split


def split_by_group(
    frame: pd.DataFrame, fraction: float, seed: int, groups: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split so that no group (e.g. one image with several captions) lands on both sides."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train_index, val_index = next(splitter.split(frame, groups=groups))
    return frame.iloc[train_index], frame.iloc[val_index]


def split_frame(
    frame: pd.DataFrame, fraction: float, seed: int, stratify_on: pd.Series | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off ``fraction`` of rows for validation, stratified when every class has 2+ rows."""
    stratify = stratify_on
    if stratify is not None:
        counts = stratify.value_counts()
        n_val = max(1, round(len(frame) * fraction))
        if counts.min() < 2 or n_val < len(counts):
            stratify = None
    train, val = train_test_split(
        frame, test_size=fraction, random_state=seed, stratify=stratify, shuffle=True
    )
    return train, val
