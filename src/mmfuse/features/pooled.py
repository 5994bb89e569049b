"""Cells of several items, pooled: a cell's photos, or a long text's windows.

Each item is encoded and cached on its own, as any cell of one item is; a cell's features are
its items' mean (pooled) and theirs side by side (tokens), so a fusion reads a listing of five
photos, or a description of three windows, as one input. With a feature cache, a cell's
features are stored as an item of their own, keyed by its items' digests, so a table of such
cells stays on disk like any other; without one, they are held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from mmfuse.features.batches import FeatureTable, Source


def pooled_hash(item_hashes: list[str]) -> str:
    """A cell's digest from its items' (in order): the same items, the same stored cell."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(("pool:" + ",".join(item_hashes)).encode())
    return digest.hexdigest()


def pool(found: dict[str, torch.Tensor], with_tokens: bool,
         dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """One cell from its K items' features (``found``: pooled (K, D), tokens (K, T, D) and
    token_mask (K, T)): pooled (D,) their mean; tokens (L, D) of ``dtype`` (the cache stores
    float16), theirs side by side."""
    out = {"pooled": found["pooled"].float().mean(0)}
    if with_tokens:
        out["tokens"] = found["tokens"][found["token_mask"]].to(dtype)  # (items x T, D)
    return out


def stacked(cells: list[dict[str, torch.Tensor] | None], dim: int, with_tokens: bool,
            dtype: torch.dtype = torch.float16
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """N cells from ``pool`` (None: a missing one, all zeros) side by side: pooled (N, D),
    and tokens (N, T, D) of ``dtype`` with token_mask (N, T), padded to the longest."""
    pooled = torch.zeros(len(cells), dim)
    for j, cell in enumerate(cells):
        if cell is not None:
            pooled[j] = cell["pooled"]
    if not with_tokens:
        return pooled, None, None
    width = max((len(cell["tokens"]) for cell in cells if cell is not None), default=1)
    tokens = torch.zeros(len(cells), width, dim, dtype=dtype)
    mask = torch.zeros(len(cells), width, dtype=torch.bool)
    for j, cell in enumerate(cells):
        if cell is not None:
            tokens[j, : len(cell["tokens"])], mask[j, : len(cell["tokens"])] = cell["tokens"], True
    return pooled, tokens, mask


def pooled_parts(table_of: Callable[[list[str]], Source], dim: int, values: list[str | None],
                 parts: dict[str, list[str]], with_tokens: bool) -> FeatureTable:
    """In memory: the table of ``values`` (None: missing) whose cells are made of ``parts``
    (cell -> its items); ``table_of(items)`` gives the items' own features."""
    cells = sorted(parts)
    singles = sorted({item for cell in cells for item in parts[cell]})
    where = {item: i for i, item in enumerate(singles)}
    found = table_of(singles)
    pooled_cells = [pool(found.fetch(torch.tensor([where[i] for i in parts[cell]])), with_tokens)
                    for cell in cells]
    # the last row: a missing cell
    pooled, tokens, mask = stacked([*pooled_cells, None], dim, with_tokens)
    slot = {cell: j for j, cell in enumerate(cells)}
    index = torch.tensor([slot[v] if v is not None else len(cells) for v in values])
    present = torch.tensor([v is not None for v in values], dtype=torch.bool)
    return FeatureTable(pooled, tokens, mask, index, present)
