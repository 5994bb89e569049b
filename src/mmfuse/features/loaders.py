"""DataLoaders over a MultimodalDataset: whole batches from ``__getitems__``."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from mmfuse.features.batches import MultimodalDataset, unwrap
from mmfuse.features.cache import worth_workers
from mmfuse.features.process_batches import ProcessBatches


def make_loader(
    dataset: MultimodalDataset, batch_size: int, num_workers: int, sampler=None,
    process: tuple[int, int] | None = None,
) -> DataLoader:
    """Batches built by ``__getitems__``; worker processes only when images must be decoded.
    ``process`` = (rank, processes): yield only that process's share of each batch
    (``loader.batch_sampler.shares`` then says how to weigh each)."""
    sampler = sampler if sampler is not None else SequentialSampler(dataset)
    workers = num_workers if worth_workers(dataset.needs_workers, len(dataset)) else 0
    batches = BatchSampler(sampler, batch_size, drop_last=False)
    return DataLoader(
        dataset,
        batch_sampler=ProcessBatches(batches, *process) if process is not None else batches,
        collate_fn=unwrap,
        num_workers=workers,
        persistent_workers=False,
    )


class Shuffled(Sampler[int]):
    """A seeded permutation of ``rows`` (or, with ``weights`` (N,), as many draws with
    replacement), the draws of torch's RandomSampler / WeightedRandomSampler, yielded a chunk
    at a time: those turn the whole order into a Python list first (36 bytes a row, 108 MB
    for 3 million rows) where this keeps one tensor (8 bytes a row)."""

    CHUNK = 65536

    def __init__(self, rows: int, generator: torch.Generator,
                 weights: torch.Tensor | None = None) -> None:
        self.rows, self.generator = rows, generator
        self.weights = torch.as_tensor(weights, dtype=torch.double) if weights is not None else None

    def __len__(self) -> int:
        return self.rows

    def __iter__(self) -> Iterator[int]:
        order = (torch.multinomial(self.weights, self.rows, True, generator=self.generator)
                 if self.weights is not None
                 else torch.randperm(self.rows, generator=self.generator))
        for start in range(0, self.rows, self.CHUNK):
            yield from order[start:start + self.CHUNK].tolist()
