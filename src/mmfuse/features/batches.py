"""Per-modality sources and the dataset that turns row indices into a model batch.

A source serves one modality for a set of rows: either features from the cache (frozen
encoders: a table lookup) or raw inputs decoded on the fly (trainable encoders: images are
decoded in DataLoader workers, overlapping with the model's compute).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mmfuse.data.images import ImageTransform, open_image
from mmfuse.data.photos import PHOTO_SEP, photos
from mmfuse.features.stored import StoredTable

Batch = dict[str, dict[str, torch.Tensor]]


@dataclass
class FeatureTable:
    """Cached features of U distinct inputs and, per row, which one it uses.

    ``pooled`` (U + 1, D) — the last row is zeros, used by rows whose modality is missing;
    ``tokens`` (U + 1, T, D) float16 and ``token_mask`` (U + 1, T) when a fusion needs tokens;
    ``index`` (N,) row -> table row.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None
    token_mask: torch.Tensor | None
    index: torch.Tensor
    present: torch.Tensor  # (N,) bool

    def fetch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        slots = self.index[rows]
        out = {"pooled": self.pooled[slots], "present": self.present[rows]}
        if self.tokens is not None and self.token_mask is not None:
            out["tokens"] = self.tokens[slots].float()
            out["token_mask"] = self.token_mask[slots]
        return out


@dataclass
class RawImages:
    """Image paths (None = missing), decoded and transformed per batch. Where some cell of
    the column holds several photos, every batch is laid out as cells of photos (``photo_batch``),
    so that one dataset's batches share one layout."""

    paths: list[str | None]
    transform: ImageTransform
    prepare: Callable[[list[Any]], dict[str, torch.Tensor]]

    def __post_init__(self) -> None:
        self.several = any(p is not None and PHOTO_SEP in p for p in self.paths)

    def fetch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        picked = [self.paths[i] for i in rows.tolist()]
        if self.several:
            return photo_batch([[self.transform(open_image(f)) for f in photos(p)]
                                if p is not None else [] for p in picked], self.transform.size)
        blank = torch.zeros(3, self.transform.size, self.transform.size)
        out = self.prepare([self.transform(open_image(p)) if p is not None else blank
                            for p in picked])
        out["present"] = torch.tensor([p is not None for p in picked])
        return out


def photo_batch(cells: list[list[torch.Tensor]], size: int) -> dict[str, torch.Tensor]:
    """B cells of 0 to K transformed photos (3, S, S) each -> ``pixels`` (B, K, 3, S, S),
    zeros where a cell has fewer, ``photo_mask`` (B, K) and ``present`` (B,): what a trained
    image encoder reads of cells of several photos (``encoders.base.photo_features``)."""
    width = max(1, *(len(cell) for cell in cells))
    pixels = torch.zeros(len(cells), width, 3, size, size)
    mask = torch.zeros(len(cells), width, dtype=torch.bool)
    for j, cell in enumerate(cells):
        if cell:
            pixels[j, : len(cell)], mask[j, : len(cell)] = torch.stack(cell), True
    return {"pixels": pixels, "photo_mask": mask, "present": mask.any(1)}


@dataclass
class RawTexts:
    """Texts (None = missing), tokenised per batch. ``windows`` (a frozen encoder's
    ``parts_of``): where some text of the column is longer than one window, every batch is
    laid out as texts of windows (``window_batch``), which the encoder reads as the feature
    cache does (their mean); None: each text's first window."""

    texts: list[str | None]
    prepare: Callable[[list[Any]], dict[str, torch.Tensor]]
    windows: Callable[[list[str]], list[list[str]]] | None = None

    def __post_init__(self) -> None:
        self.parts: dict[str, list[str]] | None = None
        if self.windows is not None:
            present = [t for t in self.texts if t]
            parts = dict(zip(present, self.windows(present), strict=True))
            self.parts = parts if any(len(p) > 1 for p in parts.values()) else None

    def fetch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        picked = [self.texts[i] for i in rows.tolist()]
        if self.parts is not None:
            return window_batch([self.parts.get(t, []) if t else [] for t in picked],
                                self.prepare, present=[t is not None for t in picked])
        out = self.prepare([t if t is not None else "" for t in picked])
        out["present"] = torch.tensor([t is not None for t in picked])
        return out


def window_batch(cells: list[list[str]], prepare: Callable[[list[Any]], dict[str, torch.Tensor]],
                 present: list[bool]) -> dict[str, torch.Tensor]:
    """B texts of 0 to W windows each -> every prepared input (B, W, ...) (zeros where a text
    has fewer windows), ``window_mask`` (B, W) and ``present`` (B,)."""
    width = max(1, *(len(cell) for cell in cells))
    flat = [window for cell in cells for window in cell]
    prepared = prepare(flat or [""])
    mask = torch.zeros(len(cells), width, dtype=torch.bool)
    for j, cell in enumerate(cells):
        mask[j, : len(cell)] = True
    out = {}
    for key, value in prepared.items():
        laid = value.new_zeros(len(cells), width, *value.shape[1:])
        laid[mask] = value[: len(flat)]
        out[key] = laid
    return out | {"window_mask": mask, "present": torch.tensor(present)}


@dataclass
class RawTable:
    """The numeric and categorical columns of the rows (missing cells are values), mapped to
    the tabular encoder's inputs per batch."""

    frame: pd.DataFrame
    prepare: Callable[[Any], dict[str, torch.Tensor]]

    def fetch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.prepare(self.frame.iloc[rows.numpy()])
        out["present"] = torch.ones(len(rows), dtype=torch.bool)
        return out


Source = FeatureTable | StoredTable | RawImages | RawTexts | RawTable


@dataclass
class DiskOrder:
    """How a dataset's rows lie on disk: ``order`` (N,) its indices sorted by where the
    largest disk table stores their features; ``will_need(indices)`` starts reading those
    rows' features of every disk table into the page cache."""

    order: torch.Tensor
    will_need: Callable[[torch.Tensor], None]


class MultimodalDataset(Dataset):
    """Rows of a validated frame; ``__getitems__`` builds a whole batch at once.

    Returns ``(batch, target)`` where target is (B,), (B, C) or None when there are no labels.
    """

    def __init__(
        self, sources: dict[str, Source], targets: torch.Tensor | None,
        rows: torch.Tensor | None = None,
    ) -> None:
        self.sources = sources
        self.targets = targets  # aligned with this dataset's indices
        self.rows = rows  # this dataset's index -> the sources' row; None: the identity
        self.length = len(rows) if rows is not None else _source_length(next(iter(sources.values())))

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices: list[int]) -> tuple[Batch, torch.Tensor | None]:
        index = torch.as_tensor(indices, dtype=torch.long)
        rows = self.rows[index] if self.rows is not None else index
        batch = {m: source.fetch(rows) for m, source in self.sources.items()}
        target = self.targets[index] if self.targets is not None else None
        return batch, target

    def subset(self, indices: torch.Tensor | list[int]) -> MultimodalDataset:
        """The same sources seen through a selection of rows (k-fold training), no copying."""
        index = torch.as_tensor(indices, dtype=torch.long)
        rows = self.rows[index] if self.rows is not None else index
        targets = self.targets[index] if self.targets is not None else None
        return MultimodalDataset(self.sources, targets, rows)

    def __getitem__(self, index: int) -> tuple[Batch, torch.Tensor | None]:
        return self.__getitems__([index])

    @property
    def needs_workers(self) -> bool:
        """Decoding images is the slow part worth spreading over worker processes."""
        return any(isinstance(s, RawImages) for s in self.sources.values())

    def disk_order(self) -> DiskOrder | None:
        """None when every modality's features are in memory (or read raw)."""
        tables = [s for s in self.sources.values() if isinstance(s, StoredTable)]
        if not tables:
            return None
        rows = self.rows if self.rows is not None else torch.arange(self.length)
        largest = max(tables, key=lambda t: t.features.nbytes)
        positions = largest.features.positions(largest.index[rows].numpy())
        order = torch.from_numpy(np.argsort(positions, kind="stable"))

        def will_need(indices: torch.Tensor) -> None:
            for table in tables:
                table.features.will_need(table.index[rows[indices]].numpy())

        return DiskOrder(order, will_need)

    @property
    def disk_bytes(self) -> int:
        """Bytes of the features this dataset reads from disk per batch."""
        return sum(s.features.nbytes for s in self.sources.values()
                   if isinstance(s, StoredTable))


def _source_length(source: Source) -> int:
    if isinstance(source, RawImages):
        return len(source.paths)
    if isinstance(source, RawTexts):
        return len(source.texts)
    if isinstance(source, RawTable):
        return len(source.frame)
    return len(source.index)


def unwrap(batch: Any) -> Any:
    """collate_fn: ``__getitems__`` already returns a finished batch."""
    return batch
