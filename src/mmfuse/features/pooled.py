"""Cells of several items, pooled: a cell's photos, or a long text's windows.

Each item is encoded and cached on its own, as any cell of one item is; a cell's pooled
features are its items' mean and its tokens theirs side by side, so a fusion reads a listing
of five photos, or a description of three windows, as one input. The pooled table is held in
memory: a cell's mean is not written to the feature cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmfuse.features.batches import FeatureTable, Source


def pooled_parts(table_of: Callable[[list[str]], Source], dim: int, values: list[str | None],
                 parts: dict[str, list[str]], with_tokens: bool) -> FeatureTable:
    """The table of ``values`` (None: missing) whose cells are made of ``parts`` (cell ->
    its items); ``table_of(items)`` gives the items' own features (the cache's table)."""
    cells = sorted(parts)
    singles = sorted({item for cell in cells for item in parts[cell]})
    where = {item: i for i, item in enumerate(singles)}
    found = table_of(singles).fetch(torch.arange(len(singles)))  # pooled (S, D), tokens (S, T, D)
    members = [torch.tensor([where[item] for item in parts[cell]]) for cell in cells]
    pooled = torch.zeros(len(cells) + 1, dim)  # the last row: a missing cell
    for j, rows in enumerate(members):
        pooled[j] = found["pooled"][rows].mean(0)
    tokens = mask = None
    if with_tokens:
        width = max(int(found["token_mask"][rows].sum()) for rows in members)
        tokens = torch.zeros(len(cells) + 1, width, dim, dtype=torch.float16)
        mask = torch.zeros(len(cells) + 1, width, dtype=torch.bool)
        for j, rows in enumerate(members):
            kept = found["tokens"][rows][found["token_mask"][rows]]  # (items x T, D)
            tokens[j, : len(kept)], mask[j, : len(kept)] = kept.half(), True
    slot = {cell: j for j, cell in enumerate(cells)}
    index = torch.tensor([slot[v] if v is not None else len(cells) for v in values])
    present = torch.tensor([v is not None for v in values], dtype=torch.bool)
    return FeatureTable(pooled, tokens, mask, index, present)
