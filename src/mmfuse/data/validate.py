"""Check a manifest before any training: every problem found at once, with file, row and column."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.config import DataConfig
from mmfuse.data.images import ImageDecodeError, check_image
from mmfuse.data.photos import joined, parse_photos
from mmfuse.data.tabular import as_category, as_number
from mmfuse.errors import DataValidationError, Problem
from mmfuse.progress import track
from mmfuse.tasks import get_task

SKIP_HINT = (
    "Fix these rows, or pass --on-bad-rows skip (Python: DataConfig(on_bad_rows='skip')) "
    "to drop them; the dropped rows are then listed in the run folder's bad_rows.csv."
)


def is_blank(value: Any) -> bool:
    return _missing(value) or (isinstance(value, str | list) and not (
        value.strip() if isinstance(value, str) else value))


def cells(frame: pd.DataFrame, column: str) -> list[Any]:
    """A column's values with every missing marker (None, NaN, pd.NA, NaT) as ``None``.

    ``None`` is mmfuse's one representation of a missing modality. ``validate_frame`` stores
    it in object columns, but pandas may turn it back into NaN when a frame is copied, sliced
    or assigned to (pandas 3 infers the ``str`` dtype for text columns), so readers of image
    and text cells go through here.
    """
    return [None if _missing(v) else v for v in frame[column].tolist()]


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str | list) and bool(pd.isna(value)))


def as_object_column(values: list[Any], index: pd.Index) -> pd.Series:
    """Strings and ``None`` kept as they are (no inferred ``str`` dtype turning None into NaN)."""
    return pd.Series(values, index=index, dtype=object)


def check_columns(frame: pd.DataFrame, wanted: dict[str, str]) -> None:
    """Raise (before looking at rows) when a named column is absent. ``wanted``: column -> flag."""
    source = frame.attrs.get("source", "<DataFrame>")
    problems = []
    for column, flag in wanted.items():
        if column not in frame.columns:
            close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(
                Problem(
                    source,
                    None,
                    column,
                    f"column not found; the columns are: {', '.join(map(str, frame.columns))}."
                    f"{hint} Name the right one with {flag}.",
                )
            )
    if problems:
        raise DataValidationError(problems)


def validate_frame(
    frame: pd.DataFrame,
    data: DataConfig,
    modalities: list[str],
    known_labels: list[str] | None = None,
    require_labels: bool = True,
) -> pd.DataFrame:
    """Return the usable rows with image paths resolved to absolute paths and targets parsed.

    Adds ``_row`` (1-based row number in the source) and ``_target`` (when labels are present).
    Bad rows raise DataValidationError, or are dropped and listed in ``attrs['skipped']`` when
    ``data.on_bad_rows == 'skip'``.
    """
    source = frame.attrs.get("source", "<DataFrame>")
    base_dir = Path(frame.attrs.get("base_dir", "."))
    image_cols = data.image_cols if "image" in modalities else []
    text_cols = data.text_cols if "text" in modalities else []
    wanted = ({c: "--image-col" for c in image_cols} | {c: "--text-col" for c in text_cols}
              | {c: "--num-col" for c in data.num_cols} | {c: "--cat-col" for c in data.cat_cols})
    has_labels = data.label_col in frame.columns
    if require_labels:
        wanted[data.label_col] = "--label-col"
    check_columns(frame, wanted)

    first_row = int(frame.attrs.get("first_row", 0))  # a chunk of a bigger manifest
    frame = frame.reset_index(drop=True).copy()
    frame["_row"] = range(first_row + 1, first_row + len(frame) + 1)
    if len(frame) == 0:
        raise DataValidationError([Problem(source, None, None, "the manifest has no rows")])
    found = Findings(source, first_row)

    image_errors = _check_images(frame, image_cols, base_dir)
    for column in image_cols:
        frame[column] = as_object_column(
            _cells(frame, column, "image path", data.allow_missing, found,
                   _image_read(base_dir, image_errors)), frame.index)
    for column in text_cols:
        frame[column] = as_object_column(
            _cells(frame, column, "text", data.allow_missing, found, lambda v: (str(v), None)),
            frame.index)
    for column in data.num_cols:
        frame[column] = pd.Series(_numbers(frame, column, found), index=frame.index,
                                  dtype=float)
    for column in data.cat_cols:
        frame[column] = as_object_column([as_category(v) for v in cells(frame, column)],
                                         frame.index)
    if data.weight_col and data.weight_col in frame.columns:  # needed to fit only: rows.py
        frame["_weight"] = pd.Series(_weights(frame, data.weight_col, found), index=frame.index,
                                     dtype=float)
    if data.allow_missing:
        columns = image_cols + text_cols
        empty = frame[columns].isna().all(axis=1) if columns else pd.Series(dtype=bool)
        for index in empty[empty].index:
            found.report(int(index), None, "every image and text cell of this row is empty")
    if has_labels:
        frame["_target"] = as_object_column(
            _targets(frame, data, known_labels, require_labels, found), frame.index)

    if found.problems:
        if data.on_bad_rows != "skip":
            raise DataValidationError(found.problems, SKIP_HINT)
        frame = frame.drop(index=sorted(found.bad_rows)).reset_index(drop=True)
        if len(frame) == 0:
            raise DataValidationError(found.problems, "Every row is bad; nothing is left to use.")
    frame.attrs.update(source=source, base_dir=str(base_dir), skipped=found.problems,
                       validated=True)
    return frame


class Findings:
    """The problems found so far, each with its file, row and column, and the bad rows."""

    def __init__(self, source: str, first_row: int) -> None:
        self.source, self.first_row = source, first_row
        self.problems: list[Problem] = []
        self.bad_rows: set[int] = set()

    def report(self, index: int, column: str | None, message: str) -> None:
        self.problems.append(Problem(self.source, self.first_row + index + 1, column, message))
        self.bad_rows.add(index)


def _cells(frame: pd.DataFrame, column: str, what: str, allow_missing: bool, found: Findings,
           read: Callable[[Any], tuple[str, str | None]]) -> list[str | None]:
    """A modality column's cells: ``read(value)`` -> (cell, problem or None); None where empty
    (reported unless missing modalities are allowed)."""
    out: list[str | None] = []
    for index, value in enumerate(cells(frame, column)):
        if is_blank(value):
            out.append(None)
            if not allow_missing:
                found.report(index, column, f"{what} is empty (allow missing modalities with "
                             "--allow-missing)")
            continue
        cell, problem = read(value)
        if problem:
            found.report(index, column, problem)
        out.append(cell)
    return out


def _numbers(frame: pd.DataFrame, column: str, found: Findings) -> list[float]:
    """A numeric column's cells as floats, NaN where empty (a missing number is a value);
    a cell that is not a number is reported."""
    out = []
    for index, value in enumerate(cells(frame, column)):
        try:
            number = as_number(value)
        except ValueError:
            found.report(index, column, f"{str(value)[:40]!r} is not a number (leave the cell "
                         "empty for a missing value, or name the column with --cat-col)")
            number = None
        out.append(np.nan if number is None else number)
    return out


def _weights(frame: pd.DataFrame, column: str, found: Findings) -> list[float]:
    """Row weights: numbers of at least 0, none missing, not all 0 (each bad one reported)."""
    out = []
    for index, value in enumerate(cells(frame, column)):
        try:
            weight = as_number(value)
        except ValueError:
            weight = None
        if weight is None or weight < 0:
            found.report(index, column, f"the row weight {str(value)[:40]!r} is not a number of "
                         "at least 0")
        out.append(weight if weight is not None and weight >= 0 else 0.0)
    if out and not any(out) and not found.problems:
        found.report(0, column, "every row weight is 0: nothing would be learned")
    return out


def _image_read(base_dir: Path, errors: dict[str, str]) -> Callable[[Any], tuple[str, str | None]]:
    """An image cell (one photo, or several: ``data/photos.py``) -> its absolute path(s) as
    one cell, and why it cannot be read (if so), naming the photo. A cell named by many rows
    (a product's photo, a VQA image) is read once."""
    seen: dict[str, tuple[str, str | None]] = {}

    def read(value: Any) -> tuple[str, str | None]:
        if isinstance(value, str):
            if value not in seen:
                seen[value] = read_cell(value)
            return seen[value]
        return read_cell(value)

    def read_cell(value: Any) -> tuple[str, str | None]:
        try:
            paths = [_resolve(p, base_dir) for p in parse_photos(value)]
        except ValueError as error:
            return str(value), f"cannot read the photos of this cell: {error}"
        if not paths:
            return str(value), "the cell names no photo"
        problems = [(i, errors[p]) for i, p in enumerate(paths) if p in errors]
        if len(paths) > 1:
            problems = [(i, f"photo {i + 1} of {len(paths)}: {e}") for i, e in problems]
        return joined(paths), "; ".join(e for _, e in problems) or None
    return read


def _targets(frame: pd.DataFrame, data: DataConfig, known_labels: list[str] | None,
             require_labels: bool, found: Findings) -> list[Any]:
    """Parsed labels (None where missing or unusable); labels unseen in training reported."""
    targets: list[Any] = []
    known = set(known_labels) if known_labels is not None else None
    task = get_task(data.task)
    for index, value in enumerate(frame[data.label_col].tolist()):
        if is_blank(value):
            targets.append(None)
            if require_labels:
                found.report(index, data.label_col, "label is missing")
            continue
        try:
            target = task.parse_label(value, data.label_sep)
        except ValueError as error:
            targets.append(None)
            found.report(index, data.label_col, str(error))
            continue
        targets.append(target)
        unseen = [t for t in task.labels_in(target) if known is not None and t not in known]
        if unseen:
            found.report(index, data.label_col,
                         f"label {', '.join(map(repr, unseen))} was not seen in training; "
                         f"known labels: {', '.join(sorted(known or [])[:15])}")
    return targets


def problems_frame(problems: list[Problem]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"file": p.file, "row": p.row, "column": p.column, "problem": p.message}
         for p in problems],
        columns=["file", "row", "column", "problem"],
    )


CHECK_CHUNK = 32  # images checked by one thread's task


def _resolve(value: Any, base_dir: Path) -> str:
    return _resolved(str(value).strip(), base_dir)


@functools.lru_cache(maxsize=1 << 16)
def _resolved(value: str, base_dir: Path) -> str:
    """Remembered: a photo named by many rows (a product's, a VQA image's) is resolved once,
    not once a row (``Path.resolve`` asks the file system; ~14 µs a call)."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _photos_or_none(value: Any) -> list[str]:
    """The photos a cell names; none where it cannot be read (reported with its row)."""
    try:
        return parse_photos(value)
    except ValueError:
        return []


def _check_images(frame: pd.DataFrame, columns: list[str], base_dir: Path) -> dict[str, str]:
    """Decode each distinct image once, as far as needed to know it decodes: in chunks of
    ``CHECK_CHUNK`` over threads (Pillow releases the GIL while decoding a JPEG; a PNG's CRC
    walk is Python, where a future per image cost 3x the check itself)."""
    paths = sorted({_resolve(p, base_dir) for c in columns for v in frame[c] if not is_blank(v)
                    for p in _photos_or_none(v)})

    def check(chunk: list[str]) -> list[tuple[str, str]]:
        problems = []
        for path in chunk:
            try:
                check_image(path)
            except ImageDecodeError as error:
                problems.append((path, str(error)))
        return problems

    chunks = [paths[i:i + CHECK_CHUNK] for i in range(0, len(paths), CHECK_CHUNK)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(track(pool.map(check, chunks), total=len(chunks),
                           description="Checking images"))
    return dict(problem for problems in found for problem in problems)
