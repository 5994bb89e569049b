"""DataLoaders over a MultimodalDataset: whole batches from ``__getitems__``."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from mmfuse.features.batches import DiskOrder, MultimodalDataset, unwrap
from mmfuse.features.encoding import worth_workers
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
        # on a GPU, batches in page-locked memory copy to the device without a staging copy
        pin_memory=torch.cuda.is_available(),
    )


def read_ahead(loader: DataLoader) -> DataLoader | Prefetched:
    """``loader`` read one batch ahead in a thread when its batches come from a disk table
    too large for the page cache to hold (most reads wait on the disk): for predicting and
    validating, which read rows in the table's order. Measured on 2 cores, one epoch of
    concat with rows in random order: with the features in the page cache, reading ahead
    costs 30 % of the rows/s (the reading thread's Python competes for the interpreter lock);
    with most reads going to the disk, it gives 50 % more. Training reads in blocks instead
    (``Shuffled``), without a thread."""
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
    for 3 million rows) where this keeps one tensor (8 bytes a row).

    With ``disk`` (features that stay on disk), the rows are shuffled in blocks instead, as
    WebDataset and MosaicML's streaming datasets do for data larger than memory: the rows
    (or draws), in the order their features lie on disk, are cut into blocks of BLOCK; the
    blocks are shuffled, and the rows of each GROUP of blocks are shuffled together. A batch
    thus mixes rows from GROUP places of the table (a manifest sorted by label still gives
    mixed batches), and each group's features are read ahead as a few stretches of disk
    instead of one random read a row. Measured in benchmarks/train_memory.py.
    """

    CHUNK = 65536
    BLOCK = 2048  # rows: one shard of the feature cache
    GROUP = 16  # blocks whose rows are shuffled together

    def __init__(self, rows: int, generator: torch.Generator,
                 weights: torch.Tensor | None = None, disk: DiskOrder | None = None) -> None:
        self.rows, self.generator, self.disk = rows, generator, disk
        self.weights = torch.as_tensor(weights, dtype=torch.double) if weights is not None else None

    def __len__(self) -> int:
        return self.rows

    def __iter__(self) -> Iterator[int]:
        draws = (torch.multinomial(self.weights, self.rows, True, generator=self.generator)
                 if self.weights is not None else None)
        if self.disk is not None:
            yield from self._in_blocks(draws, self.disk)
            return
        order = draws if draws is not None else torch.randperm(self.rows, generator=self.generator)
        for start in range(0, self.rows, self.CHUNK):
            yield from order[start:start + self.CHUNK].tolist()

    def _in_blocks(self, draws: torch.Tensor | None, disk: DiskOrder) -> Iterator[int]:
        sequence = disk.order
        if draws is not None:  # the draws, in the order of the disk
            rank = torch.empty(self.rows, dtype=torch.long)
            rank[disk.order] = torch.arange(self.rows)
            sequence = draws[torch.argsort(rank[draws], stable=True)]
        blocks = torch.randperm(math.ceil(len(sequence) / self.BLOCK), generator=self.generator)
        groups = [torch.cat([sequence[b * self.BLOCK:(b + 1) * self.BLOCK] for b in ids])
                  for ids in blocks.split(self.GROUP)]
        for number, group in enumerate(groups):
            if number == 0:
                disk.will_need(group)
            if number + 1 < len(groups):  # read while this group trains
                disk.will_need(groups[number + 1])
            yield from group[torch.randperm(len(group), generator=self.generator)].tolist()


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
