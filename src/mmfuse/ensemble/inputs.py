"""What linear and tree members read, for N rows: the rows' joined texts, their numeric and
categorical columns and each encoder view's frozen features. From validated rows the features
come from the feature cache; from in-memory items (the server) the encoders run live. Each is
computed once and shared by every member (and every fold: ``take`` selects rows without
recomputing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from mmfuse.config import Config, EncoderConfig
from mmfuse.data.rows import row_weights
from mmfuse.data.tabular import TabularEncoding
from mmfuse.data.validate import cells
from mmfuse.encoders import create_encoder
from mmfuse.encoders.base import Encoder
from mmfuse.features.assembly import rows_table
from mmfuse.features.cache import FeatureCache
from mmfuse.features.items import Item, is_present, pooled_features

Column = Callable[[str], list]  # input column -> its N values (None where missing)


@dataclass
class View:
    """What a member reads: ``kind`` "tfidf-char" | "tfidf-word" (the texts) | "image" |
    "text" (an encoder's features, with the encoder's config) | "zero-shot" (a CLIP-style
    folder's image features, for a head started from its class prompts) | "tabular" (the
    numeric and categorical columns, for a linear model) | "tabular-trees" (the same, for
    trees)."""

    kind: str
    encoder: EncoderConfig | None = None

    @property
    def name(self) -> str:
        return self.kind if self.encoder is None else f"{self.kind}: {self.encoder.name}"

    @property
    def modality(self) -> str:
        """What the view reads: "image", "text" or "tabular" (the numeric and categorical
        columns)."""
        if self.kind.startswith("tabular"):
            return "tabular"
        return self.encoder_kind

    @property
    def encoder_kind(self) -> str:
        """The kind of encoder whose features the view reads: "image" or "text"."""
        return "image" if self.kind in ("image", "zero-shot") else "text"

    @property
    def features_key(self) -> str:
        """Names the encoder's features: views that read one encoder share them."""
        assert self.encoder is not None
        return f"{self.encoder_kind}: {self.encoder.name}"


class MemberInputs:
    """``texts()`` (N,) and ``dense(view)`` (N, D x columns), computed on first use;
    ``take(positions)`` is the same for a subset of the rows. Network members read the
    validated ``rows`` or the in-memory ``items`` themselves (one of them is set)."""

    def __init__(self, config: Config, encoders: dict[str, Encoder],
                 features: Callable[[Encoder, str], torch.Tensor], column: Column,
                 positions: np.ndarray | None = None, *, rows: pd.DataFrame | None = None,
                 items: list[Item] | None = None) -> None:
        self.config, self.encoders = config, encoders
        self.features, self.column = features, column  # (encoder, column) -> (N, D)
        self.positions = positions
        self.rows, self.items = rows, items
        self.memo: dict[str, object] = {}

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, config: Config, cache: FeatureCache,
                  encoders: dict[str, Encoder]) -> MemberInputs:
        def features(encoder: Encoder, column: str) -> torch.Tensor:
            table = rows_table(cache, encoder, rows, column, with_tokens=False)
            return table.fetch(torch.arange(len(table.index)))["pooled"]

        return cls(config, encoders, features, lambda column: cells(rows, column), rows=rows)

    @classmethod
    def from_items(cls, items: list[Item], config: Config, encoders: dict[str, Encoder],
                   live: Callable[[list[Encoder]], None]) -> MemberInputs:
        """``live`` readies encoders that run on items (``HoldsFeatureCache.live``)."""
        def features(encoder: Encoder, column: str) -> torch.Tensor:
            live([encoder])
            return pooled_features(encoder, [item.get(column) for item in items])

        return cls(config, encoders, features,
                   lambda column: [v if is_present(v := item.get(column)) else None
                                   for item in items], items=items)

    def take(self, positions: np.ndarray) -> MemberInputs:
        """The same inputs for rows ``positions`` (into these rows); shares what is computed."""
        subset = MemberInputs(
            self.config, self.encoders, self.features, self.column,
            positions if self.positions is None else self.positions[positions],
            rows=None if self.rows is None else self.rows.iloc[positions],
            items=None if self.items is None else [self.items[i] for i in positions])
        subset.memo = self.memo
        return subset

    def texts(self) -> list[str]:
        """Each row's texts joined (missing ones empty)."""
        if "texts" not in self.memo:
            columns = [self.column(c) for c in self.config.data.text_cols]
            self.memo["texts"] = np.array(
                [" | ".join(t for t in parts if t) for parts in zip(*columns, strict=True)],
                dtype=object)
        return self._select(self.memo["texts"]).tolist()

    def table(self) -> pd.DataFrame:
        """The rows' numeric and categorical columns, as read (missing: None, or NaN in a
        column of numbers: validated rows keep theirs as floats, so no cell is parsed
        again)."""
        if "table" not in self.memo:
            self.memo["table"] = pd.DataFrame(
                {c: pd.Series(self.column(c)) for c in self.config.data.tabular_cols})
        table = self.memo["table"]
        return table if self.positions is None else table.iloc[self.positions]  # type: ignore

    def tabular_encoding(self) -> TabularEncoding:
        """The numeric and categorical columns' scaling and levels, fitted on these rows."""
        data = self.config.data
        return TabularEncoding(data.num_cols, data.cat_cols).fit(self.table())

    def weights(self) -> np.ndarray | None:
        """(N,) the rows' weights (``--weight-col``) for fitting; None without."""
        return None if self.rows is None else row_weights(self.rows, self.config.data)

    def dense(self, view: View) -> np.ndarray:
        """(N, D x columns) frozen features of the view's encoder, per column side by side
        (a missing cell: zeros)."""
        if view.features_key not in self.memo:
            encoder = encoder_for(view, self.encoders)
            data = self.config.data
            columns = data.image_cols if view.encoder_kind == "image" else data.text_cols
            self.memo[view.features_key] = np.concatenate(
                [self.features(encoder, c).numpy() for c in columns], axis=1).astype(np.float32)
        return self._select(self.memo[view.features_key])

    def _select(self, values: np.ndarray) -> np.ndarray:
        return values if self.positions is None else values[self.positions]


def encoder_for(view: View, encoders: dict[str, Encoder]) -> Encoder:
    """The view's encoder, built (from its package) once per model and kept in ``encoders``."""
    if view.encoder is None:
        raise ValueError(f"{view.name} reads no encoder")
    if view.features_key not in encoders:
        encoders[view.features_key] = create_encoder(view.encoder_kind, view.encoder)
    return encoders[view.features_key]
