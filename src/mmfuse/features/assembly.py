"""Dataset assembly: which source serves each modality of a model's rows (the feature cache
for frozen encoders, raw inputs for the rest) and which feature cache a fitted model uses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pandas as pd
import torch

from mmfuse.config import Config
from mmfuse.data.images import UndecodableImages
from mmfuse.data.photos import photos
from mmfuse.data.validate import cells
from mmfuse.encoders.base import Encoder
from mmfuse.encoders.fast_path import attach
from mmfuse.errors import DataValidationError, Problem
from mmfuse.features.batches import (
    FeatureTable,
    MultimodalDataset,
    RawImages,
    RawTable,
    RawTexts,
    Source,
)
from mmfuse.features.cache import FeatureCache, Together, cache_root
from mmfuse.features.stored import StoredTable


def make_dataset(
    frame: pd.DataFrame,
    encoders: dict[str, Encoder],
    cache: FeatureCache,
    with_tokens: bool,
    *,
    targets: torch.Tensor | None = None,
    use_cache: bool = True,
    together: Together | None = None,
) -> MultimodalDataset:
    """Rows of a validated frame, each modality (column) served by its encoder's source:
    frozen encoders from the feature cache, trainable ones (or all, ``use_cache=False``) as
    raw inputs decoded per batch."""
    sources: dict[str, Source] = {}
    for m, encoder in encoders.items():
        if encoder.kind == "tabular":  # several columns, read as they are: never cached
            sources[m] = RawTable(frame[encoder.columns], encoder.prepare)
            continue
        if encoder.frozen and use_cache:
            sources[m] = rows_table(cache, encoder, frame, m, with_tokens=with_tokens,
                                    together=together)
        elif encoder.kind == "image":
            sources[m] = RawImages(cells(frame, m), encoder.transform, encoder.prepare)  # type: ignore[arg-type]
        else:
            # a frozen encoder reads long texts' windows, as its cached features do
            sources[m] = RawTexts(cells(frame, m), encoder.prepare,
                                  encoder.parts_of if encoder.frozen else None)
    return MultimodalDataset(sources, targets)


def rows_table(cache: FeatureCache, encoder: Encoder, frame: pd.DataFrame, column: str, *,
               with_tokens: bool, together: Together | None = None
               ) -> FeatureTable | StoredTable:
    """The cached features of ``frame``'s ``column``, row by row; an image that does not
    decode is reported with its rows (``undecodable_rows``)."""
    try:
        return cache.table(encoder, cells(frame, column), with_tokens, together)
    except UndecodableImages as error:
        raise undecodable_rows(error, [frame], [column]) from None


def undecodable_rows(error: UndecodableImages, frames: list[pd.DataFrame],
                     columns: list[str]) -> DataValidationError:
    """The rows of ``frames`` whose ``columns`` hold an image that did not decode, each
    named as validation names a bad row (a frame's ``_row``: 1-based in its source)."""
    problems = []
    for frame in frames:
        source = str(frame.attrs.get("source", "data"))
        numbers = frame["_row"].tolist() if "_row" in frame else range(1, len(frame) + 1)
        problems += [Problem(source, int(number), column, error.failures[path])
                     for column in columns
                     for number, cell in zip(numbers, cells(frame, column), strict=True)
                     if cell is not None for path in photos(cell) if path in error.failures]
    return DataValidationError(problems, "These images passed the quick check but their "
                                         "pixel data is damaged: replace them, or remove "
                                         "their rows. The features of every other image are "
                                         "kept in the cache.")


def cache_for(config: Config) -> FeatureCache:
    """The feature cache a config names (``cache_dir``; "none": off)."""
    root = None if config.cache_dir == "none" else cache_root(config.cache_dir)
    return FeatureCache(root, num_workers=config.train.num_workers)


class HoldsFeatureCache:
    """For fitted models: one feature cache, made from ``config`` when first needed, so
    features read once serve every split and prediction; swappable for a while."""

    config: Config
    cache: FeatureCache | None

    def feature_cache(self) -> FeatureCache:
        if self.cache is None:
            self.cache = cache_for(self.config)
        return self.cache

    def live(self, encoders: Iterable[Encoder]) -> None:
        """Ready encoders that run on items (no cache): frozen ones take their fast path,
        with its graphs kept beside this model's feature cache."""
        for encoder in encoders:
            attach(encoder, self.feature_cache().root)

    @contextmanager
    def using_cache(self, cache: FeatureCache) -> Iterator[None]:
        """Use another feature cache for a while (e.g. a throw-away one for corrupted inputs)."""
        previous, self.cache = self.cache, cache
        try:
            yield
        finally:
            self.cache = previous
