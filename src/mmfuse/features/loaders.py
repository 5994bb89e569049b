"""DataLoaders over a MultimodalDataset: whole batches from ``__getitems__``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
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
    return Prefetched(loader) if outgrows_memory(dataset) else loader


def outgrows_memory(dataset: MultimodalDataset) -> bool:
    """Its disk tables are more than half the memory the kernel could give the page cache:
    random rows of them mostly wait on the disk."""
    return dataset.disk_bytes > available_memory() / 2


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

        def read_ahead() -> None:
            try:
                for batch in self.loader:
                    while not stop.is_set():
                        try:
                            ready.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                ready.put(done)
            except BaseException as error:  # raised again in the consuming thread
                ready.put(error)

        thread = threading.Thread(target=read_ahead, name="mmfuse-prefetch", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()


class ShardWindows(Sampler[int]):
    """A seeded permutation of the rows of a table too large for the page cache, in an order
    the disk can serve: the shards in random order, ``WINDOW`` at a time, the rows of a
    window's shards shuffled together. While one window trains, ``soon`` has the kernel read
    what the next window needs in the background (its shard files whole, and the other
    tables' rows), so rows are read from memory instead of one random disk read each. A shard
    holds items in content-hash order, which has nothing to do with labels or rows, so a
    window of 16 shards (32k items) mixes rows as a global shuffle does. ``shard_of_row``
    (N,): -1 for rows without the table's input."""

    WINDOW = 16

    def __init__(self, shard_of_row: np.ndarray, soon: Callable[[np.ndarray], None],
                 generator: torch.Generator) -> None:
        self.shard_of_row, self.soon, self.generator = shard_of_row, soon, generator

    def __len__(self) -> int:
        return len(self.shard_of_row)

    def __iter__(self) -> Iterator[int]:
        by_shard = np.argsort(self.shard_of_row, kind="stable")
        shards, starts = np.unique(self.shard_of_row[by_shard], return_index=True)
        ends = np.append(starts[1:], len(by_shard))
        order = torch.randperm(len(shards), generator=self.generator).numpy()
        windows = [np.concatenate([by_shard[starts[s]:ends[s]] for s in order[i:i + self.WINDOW]])
                   for i in range(0, len(order), self.WINDOW)]
        if windows:
            self.soon(windows[0])
        for number, rows in enumerate(windows):
            if number + 1 < len(windows):
                self.soon(windows[number + 1])  # read while this window trains
            yield from rows[torch.randperm(len(rows), generator=self.generator).numpy()].tolist()
