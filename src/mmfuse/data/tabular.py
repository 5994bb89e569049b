"""Numeric and categorical columns as model inputs: scaling and category ids fitted on the
training rows, so that prediction maps a cell exactly as training did.

Numbers are centred on the median and divided by the interquartile range (robust to the long
tails of prices and areas), clipped, with a missing indicator beside each; categories keep the
levels seen at least ``MIN_LEVEL_COUNT`` times, pool the rarer ones with levels never seen in
training into one "other" bucket, and give a missing cell a bucket of its own. Missing cells
are values, never errors.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MIN_LEVEL_COUNT = 3  # rarer levels are pooled: an embedding or coefficient of 1-2 rows is noise
MAX_LEVELS = 254  # per column, the most frequent: with "other", HistGradientBoosting's limit
CLIP = 5.0  # scaled numbers beyond +-5 IQRs are clipped: one outlier cannot own a coefficient
OTHER, MISSING = "<other>", "<missing>"


# How tables write a missing number (read case-insensitively); anything else that is not a
# number is a finding.
MISSING_NUMBERS = {"", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a"}
CURRENCY = "$€£¥₹"
THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")  # 1,234,567.89 (not 1,5)


def as_number(value: Any) -> float | None:
    """A cell as a float; None where empty (or written as missing: "NA", "-", ...);
    ValueError where it is not a number. Read as tables write them: "$1,299.00", "12 %"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    else:
        text = str(value).strip().replace("_", "")
        if text.lower() in MISSING_NUMBERS:
            return None
        text = text.strip(CURRENCY).rstrip("%").strip()
        if THOUSANDS.match(text):
            text = text.replace(",", "")
        number = float(text)  # "1e3", "-2.5", "nan" (missing) and "inf" (refused below)
    if np.isnan(number):
        return None
    if not np.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def as_category(value: Any) -> str | None:
    """A cell as a category level (its text); None where empty."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    text = str(value).strip()
    return text or None


@dataclass
class TabularEncoding:
    """The fitted mapping of ``num_cols`` and ``cat_cols`` to model inputs.

    ``dense(frame)`` -> (N, F) float32 for linear models and the tabular tower: per number its
    scaled value and a missing indicator, per category a one-hot over its levels, "other" and
    "missing". ``codes(frame)`` -> (N, n_num + n_cat) for trees: raw numbers (NaN missing),
    then category ids (NaN missing, "other" the last id).
    """

    num_cols: list[str]
    cat_cols: list[str]
    median: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    levels: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> TabularEncoding:
        numbers = self._numbers(frame)  # (N, n_num), NaN missing
        with warnings.catch_warnings():  # an all-missing column: median 0, scale 1
            warnings.simplefilter("ignore", RuntimeWarning)
            q1, median, q3 = np.nanpercentile(numbers, [25, 50, 75], axis=0)
            std = np.nanstd(numbers, axis=0)
        iqr, std = np.nan_to_num(q3 - q1), np.nan_to_num(std)
        # A column with a narrow middle (mostly one value) is scaled by its spread instead.
        scale = np.where(iqr > 1e-9, iqr, np.where(std > 1e-9, std, 1.0))
        self.median = np.nan_to_num(median).astype(np.float32)
        self.scale = scale.astype(np.float32)
        self.levels = {}
        for column in self.cat_cols:
            counts = pd.Series([as_category(v) for v in frame[column]]).value_counts()
            kept = counts[counts >= MIN_LEVEL_COUNT].index[:MAX_LEVELS]
            self.levels[column] = sorted(str(level) for level in kept)
        return self

    def dense(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, F) float32: two columns per number, levels + other + missing per category."""
        numbers = self._numbers(frame)
        missing = np.isnan(numbers)
        scaled = np.clip((np.where(missing, self.median, numbers) - self.median) / self.scale,
                         -CLIP, CLIP)
        parts = [np.stack([scaled, missing], axis=2).reshape(len(frame), -1)]
        for column, ids in zip(self.cat_cols, self._category_ids(frame).T, strict=True):
            width = len(self.levels[column]) + 2  # levels, other, missing
            parts.append(np.eye(width, dtype=np.float32)[np.nan_to_num(ids, nan=width - 1)
                                                          .astype(int)])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, n_num + n_cat) float64: numbers as they are, then category ids."""
        return np.concatenate([self._numbers(frame), self._category_ids(frame)], axis=1)

    @property
    def categorical_mask(self) -> list[bool]:
        """Which columns of ``codes`` are categories (HistGradientBoosting's argument)."""
        return [False] * len(self.num_cols) + [True] * len(self.cat_cols)

    def feature_names(self) -> list[str]:
        """A name per ``dense`` column: ``price``, ``price missing``, ``brand=acme``, ..."""
        names = [n for c in self.num_cols for n in (c, f"{c} missing")]
        for column in self.cat_cols:
            names += [f"{column}={v}" for v in (*self.levels[column], OTHER, MISSING)]
        return names

    # ------------------------------------------------------------------ saved state
    def entry(self) -> dict[str, Any]:
        """What a model's JSON keeps (the arrays go beside, in safetensors)."""
        return {"num_cols": self.num_cols, "cat_cols": self.cat_cols, "levels": self.levels}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"median": self.median, "scale": self.scale}

    @classmethod
    def from_saved(cls, entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> TabularEncoding:
        """ValueError when the entry and the arrays disagree (an edited file)."""
        encoding = cls(list(entry["num_cols"]), list(entry["cat_cols"]),
                       np.asarray(arrays["median"], np.float32),
                       np.asarray(arrays["scale"], np.float32),
                       {str(k): [str(v) for v in vs] for k, vs in entry["levels"].items()})
        n = len(encoding.num_cols)
        if encoding.median.shape != (n,) or encoding.scale.shape != (n,) or \
                set(encoding.levels) != set(encoding.cat_cols) or np.any(encoding.scale <= 0):
            raise ValueError("the tabular scaling does not fit its columns")
        return encoding

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON (a network's tabular tower keeps it beside its weights)."""
        return {**self.entry(), "median": self.median.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TabularEncoding:
        return cls.from_saved(values, {k: np.asarray(values[k], np.float32)
                                       for k in ("median", "scale")})

    # ------------------------------------------------------------------ cells
    def _numbers(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, n_num) float64, NaN where missing. Cells were checked by validation; one that
        is not a number here (an in-memory item) raises ValueError naming its column."""
        out = np.full((len(frame), len(self.num_cols)), np.nan)
        for j, column in enumerate(self.num_cols):
            if pd.api.types.is_numeric_dtype(frame[column]):  # validated rows: floats already
                out[:, j] = frame[column].to_numpy(dtype=np.float64)
                if not np.isfinite(out[:, j][~np.isnan(out[:, j])]).all():
                    raise ValueError(f"column '{column}': a number is not finite")
                continue
            for i, value in enumerate(frame[column].tolist()):
                try:
                    number = as_number(value)
                except ValueError as error:
                    raise ValueError(f"column '{column}': {error}") from error
                out[i, j] = np.nan if number is None else number
        return out

    def _category_ids(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, n_cat) float64: the level's index, len(levels) for "other", NaN for missing."""
        out = np.full((len(frame), len(self.cat_cols)), np.nan)
        for j, column in enumerate(self.cat_cols):
            index = {level: i for i, level in enumerate(self.levels[column])}
            other = len(index)
            for i, value in enumerate(frame[column].tolist()):
                level = as_category(value)
                if level is not None:
                    out[i, j] = index.get(level, other)
        return out
