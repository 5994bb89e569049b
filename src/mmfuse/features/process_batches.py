"""Each process's share of every global batch, so that N processes follow one process's path.

Every process draws the same global batches (same seeded sampler) and takes a contiguous
slice of each, sizes differing by at most one row. A process whose slice of a short last batch
is empty gets one row of the batch with weight 0, so it still joins the gradient all-reduce.
``share`` says how much of the global mean loss a process's mean loss is: summed over the
processes (DDP averages, hence the factor N), the weighted means give the global batch's mean
exactly, with no row counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.data import BatchSampler, Sampler


def bounds(length: int, rank: int, processes: int) -> tuple[int, int]:
    """[start, end) of process ``rank``'s rows among ``length``."""
    return length * rank // processes, length * (rank + 1) // processes


@dataclass(frozen=True)
class Share:
    """This process's part of one global batch."""

    global_rows: int  # rows in the global batch
    start: int  # first of this process's rows in it
    rows: int  # this process's real rows (0: it carries one padding row of weight 0)
    processes: int

    @property
    def loss_weight(self) -> float:
        """Factor on the process's mean loss: rows / global_rows, times N (DDP averages)."""
        return self.rows / self.global_rows * self.processes


class ProcessBatches(Sampler[list[int]]):
    """Yields this process's row indices of each batch of ``batches`` (a BatchSampler)."""

    def __init__(self, batches: BatchSampler, rank: int, processes: int) -> None:
        self.batches, self.rank, self.processes = batches, rank, processes
        self.shares: list[Share] = []  # filled while iterating, one per yielded batch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        self.shares = []
        for batch in self.batches:
            start, end = bounds(len(batch), self.rank, self.processes)
            self.shares.append(Share(len(batch), start, end - start, self.processes))
            yield batch[start:end] if end > start else batch[:1]
