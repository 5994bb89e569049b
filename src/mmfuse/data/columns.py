"""What the columns a config does not name look like, and the flag that would read each.

A new user's table has more than the image and text columns they named: prices, brands,
notes, a second photo. ``unused_column_hints`` names each of them with the flag that would use
it (``price looks numeric: --num-col price``), so nothing is ignored silently; ids and the
label are never proposed as features.
"""

from __future__ import annotations

import re

import pandas as pd

from mmfuse.config import DataConfig
from mmfuse.data.tabular import as_number
from mmfuse.data.validate import is_blank

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key|index)($|[_\W])|Id$", re.IGNORECASE)
SAMPLE_ROWS = 2_000
MAX_CATEGORY_SHARE = 0.05  # distinct values at most 5 % of the rows (or 20): a category
WORDS_OF_TEXT = 3  # cells of three or more words on average: a text


def unused_column_hints(frame: pd.DataFrame, data: DataConfig) -> list[str]:
    """One phrase per column the config does not use, in the frame's order."""
    used = set(data.named_columns())
    sample = frame.head(SAMPLE_ROWS)
    return [_hint(str(c), sample[c]) for c in frame.columns
            if c not in used and not str(c).startswith("_")]


def _hint(name: str, values: pd.Series) -> str:
    present = [v for v in values.tolist() if not is_blank(v)]
    if not present:
        return f"{name} is empty"
    texts = [str(v).strip() for v in present]
    if all(t.lower().endswith(IMAGE_SUFFIXES) for t in texts):
        return f"{name} looks like image paths: --image-col {name}"
    distinct = len(set(texts))
    if ID_NAME.search(name) or (distinct == len(texts) > 20 and _looks_like_a_key(texts)):
        return f"{name} looks like an id (not a feature)"
    if _all_numbers(present):
        return f"{name} looks numeric: --num-col {name}"
    if distinct <= max(20, MAX_CATEGORY_SHARE * len(texts)):
        return f"{name} looks categorical: --cat-col {name}"
    if sum(len(t.split()) for t in texts) / len(texts) >= WORDS_OF_TEXT:
        return f"{name} looks like text: --text-col {name}"
    return f"{name} looks categorical: --cat-col {name}"


def _all_numbers(values: list) -> bool:
    try:
        return all(as_number(v) is not None for v in values)
    except ValueError:
        return False


def _looks_like_a_key(texts: list[str]) -> bool:
    """Unique single tokens (sku-0042, 1041): a row's key, not something it says."""
    return all(len(t.split()) == 1 for t in texts)
