"""DataLoaders over a MultimodalDataset: whole batches from ``__getitems__``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

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


def read_ahead(loader: DataLoader) -> DataLoader | Prefetched:
    """``loader`` read one batch ahead in a thread when its batches come from a disk table
    too large for the page cache to hold (most reads wait on the disk). Measured on 2 cores,
    one epoch of concat: with the features in the page cache, reading ahead costs 30 % of the
    rows/s (the reading thread's Python competes for the interpreter lock); with most reads
    going to the disk, it gives 50 % more."""
    dataset = loader.dataset
    if not isinstance(dataset, MultimodalDataset) or loader.num_workers:
        return loader
    return Prefetched(loader) if dataset.disk_bytes > available_memory() / 2 else loader


def available_memory() -> float:
    """Bytes the kernel says it could give (page cache included); infinity if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


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


class Prefetched:
    """A DataLoader iterated one batch ahead in a background thread, for batches read from
    disk: the reads (mostly waiting on the disk, the GIL released) overlap the model's
    compute. Worker processes would also prefetch, but on few cores they compete with the
    compute (measured on 2 cores: 20 % fewer rows/s than no prefetching at all)."""

    def __init__(self, loader: DataLoader, depth: int = 2) -> None:
        self.loader, self.depth = loader, depth
        self.batch_sampler = getattr(loader, "batch_sampler", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        ready: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()
        done = object()

        def offer(item: object) -> bool:
            """Put ``item`` when there is room; False once the consumer has left. Every put
            waits this way: a blocking put of the last batch, the end or an error would hang
            ``join`` below when the consumer leaves early with the queue full."""
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self.loader:
                    if not offer(batch):
                        return
                offer(done)
            except BaseException as error:  # raised again in the consuming thread
                offer(error)

        thread = threading.Thread(target=produce, name="mmfuse-prefetch", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()
