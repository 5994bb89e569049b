"""A small MLP over a row's numbers and categories: the tabular tower of a network.

Numbers enter scaled (median / IQR of the training rows) beside a missing flag each;
categories through an embedding per column whose rows are the training levels, "other"
(rare and unseen levels) and "missing" (``data/tabular.py``). The scaling and the levels are
fitted on the training rows (``fit``) and saved beside the weights; the module's sizes come
from the columns alone, so a saved model is rebuilt from its config before its state loads.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.config import EncoderConfig
from mmfuse.data.tabular import MAX_LEVELS, TabularEncoding
from mmfuse.encoders.base import TABULAR_ENCODERS, Encoder
from mmfuse.types import EncoderOutput

ROWS_PER_COLUMN = MAX_LEVELS + 2  # levels, other, missing


class TabularMLP(Encoder):
    """numbers (B, 2 x n_num) and categories (B, n_cat) ids -> pooled (B, D), one token."""

    kind = "tabular"
    pretrained = False

    def __init__(self, num_cols: list[str], cat_cols: list[str], embed_dim: int = 8,
                 hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.columns = [*num_cols, *cat_cols]
        self.encoding = TabularEncoding(list(num_cols), list(cat_cols))
        self.embeddings = nn.ModuleList(nn.Embedding(ROWS_PER_COLUMN, embed_dim)
                                        for _ in cat_cols)
        width = 2 * len(num_cols) + embed_dim * len(cat_cols)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden))
        self.output_dim = hidden
        self.fingerprint = f"tabular-mlp:{len(num_cols)}:{len(cat_cols)}:{embed_dim}:{hidden}"

    def fit(self, values: pd.DataFrame) -> TabularMLP:
        """The scaling and category levels of the training rows."""
        self.encoding.fit(values)
        return self

    def fitted_state(self) -> dict:
        return self.encoding.to_dict()

    def load_fitted_state(self, state: dict) -> None:
        encoding = TabularEncoding.from_dict(state)
        if encoding.num_cols != self.encoding.num_cols or \
                encoding.cat_cols != self.encoding.cat_cols:
            raise ValueError("the saved tabular scaling is for other columns than the config's")
        self.encoding = encoding

    @property
    def preprocessing(self) -> str:
        return json.dumps(self.encoding.entry(), sort_keys=True)

    def prepare(self, values: pd.DataFrame) -> dict[str, torch.Tensor]:
        """B rows of the columns -> ``numbers`` (B, 2 x n_num) and ``categories`` (B, n_cat)."""
        n_num = len(self.encoding.num_cols)
        dense = self.encoding.dense(values)[:, : 2 * n_num]  # scaled numbers and missing flags
        ids = self.encoding.codes(values)[:, n_num:]  # NaN: missing
        missing = np.array([len(self.encoding.levels[c]) + 1 for c in self.encoding.cat_cols])
        ids = np.where(np.isnan(ids), missing, ids).astype(np.int64)
        return {"numbers": torch.from_numpy(dense), "categories": torch.from_numpy(ids)}

    def forward(self, numbers: torch.Tensor, categories: torch.Tensor) -> EncoderOutput:
        parts = [numbers] + [embedding(categories[:, j])
                             for j, embedding in enumerate(self.embeddings)]
        pooled = self.mlp(torch.cat(parts, dim=1))  # (B, D)
        tokens = pooled.unsqueeze(1)  # (B, 1, D): the row is one token for attention fusions
        return EncoderOutput(pooled, tokens, torch.ones(tokens.shape[:2], dtype=torch.bool,
                                                        device=tokens.device))


@TABULAR_ENCODERS.register("tabular-mlp", "numbers (robust-scaled, missing flags) and category "
                           "embeddings through a small MLP")
def tabular_mlp(cfg: EncoderConfig, num_cols: list[str], cat_cols: list[str]) -> Encoder:
    return TabularMLP(num_cols, cat_cols, embed_dim=int(cfg.options.get("embed_dim", 8)),
                      hidden=int(cfg.options.get("hidden", 64)),
                      dropout=float(cfg.options.get("dropout", 0.1)))
