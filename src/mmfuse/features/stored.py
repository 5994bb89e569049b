"""Features that stay in the feature cache's shard files: where each item's tensors lie, and
reading only the rows of a batch.

A shard is a safetensors file: 8 bytes of header length, a JSON header giving every tensor's
dtype, shape and byte range, then the raw data. Reading that header (the format is the
library's documented layout) tells where each item's pooled vector and token matrix lie, so a
training table of any size is a few integers per item in memory; a batch's rows are read with
``os.preadv`` straight into the batch's tensor.

Why not memory maps: pages of a mapped file that a process has touched count in its resident
set until the kernel reclaims them, so an epoch over a 20 GB table mapped in memory looks (to
``ps``, to a container's memory limit) like 20 GB of memory; ``preadv`` reads through the page
cache, which the kernel gives back whenever it needs to, and costs one system call per row
(a few microseconds, against milliseconds of training per batch).
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
OPEN_FILES = 512  # file descriptors kept open (least recently used closed first)


class CorruptShard(ValueError):
    """A shard whose header cannot be read or that is shorter than its header says."""


def shard_header(path: Path) -> tuple[dict[str, dict], int]:
    """({tensor name: {"dtype", "shape", "data_offsets"}}, where the data begins)."""
    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise CorruptShard("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", start)
        if length > 100_000_000:
            raise CorruptShard(f"states a {length}-byte header")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CorruptShard(f"its header is not JSON ({error})") from error
    header.pop("__metadata__", None)
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if os.path.getsize(path) < 8 + length + end:
        raise CorruptShard(f"truncated: {os.path.getsize(path)} bytes, its header needs "
                           f"{8 + length + end}")
    return header, 8 + length


@dataclass
class Locations:
    """Where one tensor of each of U items lies: (U,) shard number (-1: in no shard yet),
    byte offset and, for token matrices, the item's token count. 12-16 bytes an item."""

    file: np.ndarray  # (U,) int32 into ``StoredFeatures.files``
    offset: np.ndarray  # (U,) int64, absolute in the file
    length: np.ndarray | None  # (U,) int32 token rows; None for pooled vectors

    @classmethod
    def empty(cls, items: int, with_lengths: bool) -> Locations:
        return cls(np.full(items, -1, np.int32), np.zeros(items, np.int64),
                   np.zeros(items, np.int32) if with_lengths else None)

    @property
    def found(self) -> np.ndarray:
        return self.file >= 0


def digest_array(hex_digests: list[str]) -> np.ndarray:
    """(U,) 16-byte digests, sortable and searchable with numpy (a few bytes per item)."""
    return np.array([bytes.fromhex(d) for d in hex_digests], dtype="S16")


class StoredFeatures:
    """The pooled vectors (and token matrices) of U items, read from shard files on demand.

    Item ``U`` (one past the last) is the all-zero row used by rows whose modality is missing.
    """

    def __init__(self, files: list[str], dim: int, pooled: Locations,
                 tokens: Locations | None, dtype: torch.dtype = torch.float32,
                 token_dtype: torch.dtype = torch.float16) -> None:
        self.files, self.dim, self.pooled, self.tokens = files, dim, pooled, tokens
        self.dtype, self.token_dtype = dtype, token_dtype
        lengths = tokens.length if tokens is not None else None
        self.width = int(lengths.max()) if lengths is not None and len(lengths) else 1
        self._open: OrderedDict[int, int] = OrderedDict()

    @property
    def items(self) -> int:
        return len(self.pooled.file)

    @property
    def nbytes(self) -> int:
        """What holding every item in memory would take."""
        size = self.items * self.dim * self.dtype.itemsize
        if self.tokens is not None:
            size += self.items * self.width * (self.dim * self.token_dtype.itemsize + 1)
        return size

    def read_pooled(self, slots: np.ndarray) -> torch.Tensor:
        """(B, D) pooled vectors of items ``slots`` (U: zeros)."""
        out = torch.zeros(len(slots), self.dim, dtype=self.dtype)
        row_bytes = self.dim * self.dtype.itemsize
        for row, buffer in self._rows(out, slots, self.pooled, row_bytes):
            self._read(buffer, self.pooled, slots[row], row_bytes)
        return out

    def read_tokens(self, slots: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) token features (T: the widest item of all U) and (B, T) their mask."""
        where = self.tokens
        if where is None or where.length is None:
            raise ValueError("these features were located without tokens")
        out = torch.zeros(len(slots), self.width, self.dim, dtype=self.token_dtype)
        mask = torch.zeros(len(slots), self.width, dtype=torch.bool)
        token_bytes = self.dim * self.token_dtype.itemsize
        for row, buffer in self._rows(out, slots, where, token_bytes * self.width):
            length = int(where.length[slots[row]])
            self._read(buffer, where, slots[row], length * token_bytes)
            mask[row, :length] = True
        return out, mask

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Every item (and the zero row) in memory: pooled (U + 1, D), tokens (U + 1, T, D),
        mask (U + 1, T)."""
        slots = np.arange(self.items + 1)
        pooled = self.read_pooled(slots)
        tokens, mask = self.read_tokens(slots) if self.tokens is not None else (None, None)
        return pooled, tokens, mask

    # ------------------------------------------------------------------ reading
    def _rows(self, out: torch.Tensor, slots: np.ndarray, where: Locations,
              row_bytes: int) -> Iterator[tuple[int, memoryview]]:
        """(row, writable bytes of ``out``'s row) for every row whose item is stored."""
        view = memoryview(out.numpy()).cast("B")
        for row, slot in enumerate(slots):
            if slot < self.items and where.file[slot] >= 0:
                yield row, view[row * row_bytes:(row + 1) * row_bytes]

    def _read(self, buffer: memoryview, where: Locations, slot: int, size: int) -> None:
        fd = self._descriptor(int(where.file[slot]))
        got = os.preadv(fd, [buffer[:size]], int(where.offset[slot]))
        if got != size:
            raise OSError(f"{self.files[where.file[slot]]}: read {got} of {size} bytes "
                          "(the feature cache changed under a running job)")

    def _descriptor(self, file: int) -> int:
        fd = self._open.get(file)
        if fd is None:
            if len(self._open) >= OPEN_FILES:
                os.close(self._open.popitem(last=False)[1])
            fd = self._open[file] = os.open(self.files[file], os.O_RDONLY)
        else:
            self._open.move_to_end(file)
        return fd

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1])

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """DataLoader workers get the locations, not this process's open files."""
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


@dataclass
class StoredTable:
    """A FeatureTable whose features stay on disk: ``index`` (N,) row -> item (U: missing),
    ``present`` (N,) bool. ``fetch`` reads only the rows asked for."""

    features: StoredFeatures
    index: torch.Tensor
    present: torch.Tensor

    def fetch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        slots = self.index[rows].numpy()
        out = {"pooled": self.features.read_pooled(slots), "present": self.present[rows]}
        if self.features.tokens is not None:
            tokens, out["token_mask"] = self.features.read_tokens(slots)
            out["tokens"] = tokens.float()
        return out
