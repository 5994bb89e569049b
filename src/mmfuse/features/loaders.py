"""DataLoaders over a MultimodalDataset: whole batches from ``__getitems__``."""

from __future__ import annotations

from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

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
