"""Robustness: metrics under image, text and tabular-column corruptions, and with a modality
removed."""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfuse.data.images import open_image
from mmfuse.data.photos import joined, photos
from mmfuse.data.validate import as_object_column, cells
from mmfuse.evaluation.corruptions import IMAGE_CORRUPTIONS, TABULAR_CORRUPTIONS, TEXT_CORRUPTIONS
from mmfuse.features.cache import FeatureCache
from mmfuse.predictor import Data, Predictor
from mmfuse.progress import CONSOLE
from mmfuse.scoring import greater_is_better
from mmfuse.tasks import get_task


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """One stream per (corruption, severity, item): results do not depend on row order."""
    return np.random.default_rng([seed, *[zlib.crc32(str(p).encode()) for p in parts]])


def corrupt_rows(
    rows: pd.DataFrame, predictor: Predictor, kind: str, name: str, *, severity: int, seed: int,
    folder: Path,
) -> pd.DataFrame:
    """A copy of ``rows`` with every image (text, or numeric and categorical cell) of the
    model corrupted."""
    data = predictor.config.data
    corrupted = rows.copy()
    if kind == "image":
        function = IMAGE_CORRUPTIONS[name]
        for column in data.image_cols:
            paths = {}
            for path in {p for cell in cells(corrupted, column) if cell is not None
                         for p in photos(cell)}:
                target = folder / f"{name}-{severity}-{zlib.crc32(path.encode()):08x}.png"
                if not target.exists():
                    function(open_image(path), severity, _rng(seed, name, severity, path)).save(
                        target)
                paths[path] = str(target)
            corrupted[column] = as_object_column(
                [joined([paths[p] for p in photos(cell)]) if cell is not None else None
                 for cell in cells(corrupted, column)], corrupted.index)
    elif kind == "tabular":
        for column in data.tabular_cols:
            changed = TABULAR_CORRUPTIONS[name](cells(corrupted, column), severity,
                                                _rng(seed, name, severity, column))
            corrupted[column] = (pd.Series(changed, index=corrupted.index, dtype=float)
                                 if column in data.num_cols else
                                 as_object_column(changed, corrupted.index))
    else:
        function = TEXT_CORRUPTIONS[name]
        for column in data.text_cols:
            corrupted[column] = as_object_column([
                function(t, severity, _rng(seed, name, severity, i)) if t is not None else None
                for i, t in enumerate(cells(corrupted, column))
            ], corrupted.index)
    return corrupted


def robustness(
    predictor: Predictor, data: Data, *, base_dir: str | Path | None = None,
    severities: tuple[int, ...] = (1, 3, 5), seed: int = 0, max_rows: int | None = 2000,
) -> dict[str, Any]:
    """Metric on clean data, under each corruption at each severity, and per modality removed.

    ``summary`` is the mean corrupted metric over the clean metric (1.0: unaffected), for
    higher-is-better metrics; the inverse ratio for errors (rmse).
    """
    rows = predictor.read(data, base_dir=base_dir)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed).reset_index(drop=True)
    metric = get_task(predictor.config.data.task).headline_metric
    score = lambda frame: float(predictor.evaluate_rows(frame)[metric])  # noqa: E731
    clean = score(rows)
    kinds = read_kinds(predictor)
    result: dict[str, Any] = {"metric": metric, "clean": clean, "rows": len(rows),
                              "severities": list(severities), "corruptions": {}}
    with tempfile.TemporaryDirectory(prefix="mmfuse-robustness-") as temp:
        folder = Path(temp)
        with predictor.feature_cache(FeatureCache(folder / "cache")):
            for kind, table in (("image", IMAGE_CORRUPTIONS), ("text", TEXT_CORRUPTIONS),
                                ("tabular", TABULAR_CORRUPTIONS)):
                if kind not in kinds:
                    continue
                result["corruptions"][kind] = {}
                for name in table:
                    curve = {}
                    for severity in severities:
                        CONSOLE.print(f"robustness: {kind} {name} severity {severity}")
                        curve[str(severity)] = score(
                            corrupt_rows(rows, predictor, kind, name, severity=severity,
                                         seed=seed, folder=folder))
                    result["corruptions"][kind][name] = curve
    result["ablation"] = modality_ablation(predictor, rows, metric)
    values = [v for curves in result["corruptions"].values() for c in curves.values()
              for v in c.values()]
    if values and clean:
        mean = float(np.mean(values))
        higher = greater_is_better(metric)
        result["summary"] = mean / clean if higher else clean / mean
    return result


def modality_ablation(predictor: Predictor, rows: pd.DataFrame, metric: str) -> dict[str, float]:
    """The metric with both modalities, and with each one removed (all its cells missing).
    A retrieval pair without one side has nothing to rank: only the first number, then."""
    data = predictor.config.data
    kinds = read_kinds(predictor)
    result = {"both present": float(predictor.evaluate_rows(rows)[metric])}
    if not get_task(data.task).predicts:
        return result
    for kind, columns in (("image", data.image_cols), ("text", data.text_cols),
                          ("tabular", data.tabular_cols)):
        if kind in kinds and len(kinds) > 1:
            removed = rows.copy()
            for column in columns:
                removed[column] = None
            result[f"{kind} missing"] = float(predictor.evaluate_rows(removed)[metric])
    return result


def read_kinds(predictor: Predictor) -> list[str]:
    """"image", "text", "tabular": what the model reads (an ensemble: what its members do)."""
    return sorted(set(predictor.modality_kinds_.values()))
