"""Features that stay in the feature cache's shard files: where each item's tensors lie, and
reading only the rows of a batch.

A shard is a safetensors file: 8 bytes of header length, a JSON header giving every tensor's
dtype, shape and byte range, then the raw data. Reading that header (the format is the
library's documented layout) tells where each item's pooled vector and token matrix lie; the
cache writes the same facts beside each shard as a NumPy index, which reads 50x faster. So a
training table of any size is a few integers per item in memory; a batch's rows are read with
``os.preadv`` straight into the batch's tensor (by one thread at a time: the training loop,
or the thread reading the next batch ahead, see features/loaders.py).

Why not memory maps: pages of a mapped file that a process has touched count in its resident
set until the kernel reclaims them, so an epoch over a 20 GB table mapped in memory looks (to
``ps``, to a container's memory limit) like 20 GB of memory; ``preadv`` reads through the page
cache, which the kernel gives back whenever it needs to, and costs one system call per row
(a few microseconds, against milliseconds of training per batch).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# Descriptors kept open per table: half of what the process may open (shards of 2,048 items:
# 3 million rows are ~1,500 files per encoder).
OPEN_FILES = max(64, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4)
# A read-ahead hint covers a shard's wanted items from the first to the last when that stretch
# is at most this many times their bytes: more would fill the page cache with unwanted rows.
SPAN_SLACK = 4


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


# One tensor of a shard: the item's digest, pooled vector or token matrix, safetensors dtype,
# rows (1 for a pooled vector), width, and where its bytes begin and end in the file.
ENTRY = np.dtype([("digest", "S16"), ("pooled", "?"), ("dtype", "S4"), ("rows", "<i4"),
                  ("dim", "<i4"), ("start", "<i8"), ("end", "<i8")])


def index_path(shard: Path) -> Path:
    """The shard's entries as a NumPy file beside it: ``shard-x.safetensors`` ->
    ``shard-x.index.npy``. Reading a shard's 2,048 entries from it took 0.2 ms on 2 cores,
    parsing its JSON header 11 ms (building a dict per entry is the cost; at 3 million rows
    locating from headers took 64 s)."""
    return shard.with_suffix(".index.npy")


def header_entries(path: Path) -> np.ndarray:
    """(E,) ENTRY of every tensor in the shard named ``<digest>.pooled`` / ``.tokens``."""
    header, data_start = shard_header(path)
    entries = []
    for name, entry in header.items():
        digest, _, part = name.partition(".")
        # (a digest is written without its trailing zero bytes, as numpy's "S16" gives it)
        if part not in ("pooled", "tokens") or len(digest) > 32 or not entry["shape"]:
            continue  # not written by the feature cache
        with contextlib.suppress(ValueError):  # a digest that is not hexadecimal: ditto
            entries.append((bytes.fromhex(digest), part == "pooled", entry["dtype"],
                            entry["shape"][0] if part == "tokens" else 1, entry["shape"][-1],
                            data_start + entry["data_offsets"][0],
                            data_start + entry["data_offsets"][1]))
    return np.array(entries, dtype=ENTRY)


def shard_entries(path: Path) -> np.ndarray:
    """(E,) ENTRY of a shard, from its index file if that is whole and fits the shard (a
    shard shorter than its entries need is corrupt), else from its header (and the index
    file is written for next time, when the folder allows)."""
    try:
        entries = np.load(index_path(path), allow_pickle=False)
        if entries.dtype == ENTRY and os.path.getsize(path) >= entries["end"].max(initial=0):
            return entries
    except (OSError, ValueError, EOFError):
        pass
    entries = header_entries(path)
    with contextlib.suppress(OSError):
        write_index(path, entries)
    return entries


def write_index(shard: Path, entries: np.ndarray) -> None:
    """Atomically, as the shard itself is written."""
    temporary = shard.with_suffix(f".{uuid.uuid4().hex}.tmp")
    with open(temporary, "wb") as handle:
        np.save(handle, entries, allow_pickle=False)
    os.replace(temporary, index_path(shard))


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
        self._open: dict[int, int] = {}  # file number -> descriptor
        self._lock = threading.Lock()

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
        self._read_rows(out, slots, self.pooled)
        return out

    def read_tokens(self, slots: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) token features (T: the widest item of all U) and (B, T) their mask."""
        where = self.tokens
        if where is None or where.length is None:
            raise ValueError("these features were located without tokens")
        out = torch.zeros(len(slots), self.width, self.dim, dtype=self.token_dtype)
        lengths = torch.from_numpy(self._read_rows(out, slots, where))
        return out, torch.arange(self.width)[None, :] < lengths[:, None]

    def positions(self, slots: np.ndarray) -> np.ndarray:
        """(B,) where items ``slots`` lie, as one sortable number each (shard, then offset);
        missing inputs last."""
        found = (slots < self.items)
        found[found] = self.pooled.file[slots[found]] >= 0
        where = np.full(len(slots), np.iinfo(np.int64).max, dtype=np.int64)
        picked = slots[found]
        where[found] = (self.pooled.file[picked].astype(np.int64) << 40) + self.pooled.offset[picked]
        return where

    def will_need(self, slots: np.ndarray) -> None:
        """Ask the kernel to start reading items ``slots`` into the page cache now
        (``posix_fadvise(WILLNEED)``, one stretch per shard file), so that the reads of the
        batches to come find them there. A shard whose wanted items lie far apart (the
        stretch over ``SPAN_SLACK`` times what is wanted) is left to be read row by row."""
        if not hasattr(os, "posix_fadvise"):
            return
        slots = slots[slots < self.items]
        for where in (self.pooled, self.tokens):
            if where is None:
                continue
            picked = slots[where.file[slots] >= 0]
            if not len(picked):
                continue
            files, starts = where.file[picked], where.offset[picked]
            unit = self.dim * (self.token_dtype.itemsize if where.length is not None
                               else self.dtype.itemsize)
            sizes = unit * (where.length[picked].astype(np.int64) if where.length is not None
                            else np.ones(len(picked), np.int64))
            order = np.lexsort((starts, files))
            files, starts, sizes = files[order], starts[order], sizes[order]
            firsts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
            for file, start, end, wanted in zip(
                    files[firsts].tolist(), np.minimum.reduceat(starts, firsts).tolist(),
                    np.maximum.reduceat(starts + sizes, firsts).tolist(),
                    np.add.reduceat(sizes, firsts).tolist(), strict=True):
                if end - start <= SPAN_SLACK * wanted:
                    fd, temporary = self._descriptor(file)
                    try:
                        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_WILLNEED)
                    finally:
                        if temporary:
                            os.close(fd)

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Every item (and the zero row) in memory: pooled (U + 1, D), tokens (U + 1, T, D),
        mask (U + 1, T)."""
        slots = np.arange(self.items + 1)
        pooled = self.read_pooled(slots)
        tokens, mask = self.read_tokens(slots) if self.tokens is not None else (None, None)
        return pooled, tokens, mask

    # ------------------------------------------------------------------ reading
    def _read_rows(self, out: torch.Tensor, slots: np.ndarray, where: Locations) -> np.ndarray:
        """Fill row r of ``out`` (B, ...) with item ``slots[r]``'s tensor; returns (B,) how
        many vectors each row got (token count, 1 for a pooled vector, 0 for a missing input)."""
        view = memoryview(out.numpy()).cast("B")
        row_bytes = view.nbytes // max(len(slots), 1)
        unit = row_bytes // (self.width if where.length is not None else 1)
        counts = np.zeros(len(slots), dtype=np.int64)
        for row, slot in enumerate(slots.tolist()):
            if slot >= self.items or where.file[slot] < 0:
                continue  # the zero row: a missing input
            counts[row] = int(where.length[slot]) if where.length is not None else 1
            size = unit * int(counts[row])
            file = int(where.file[slot])
            fd, temporary = self._descriptor(file)
            try:
                got = os.preadv(fd, [view[row * row_bytes:row * row_bytes + size]],
                                int(where.offset[slot]))
            finally:
                if temporary:
                    os.close(fd)
            if got != size:
                raise OSError(f"{self.files[file]}: read {got} of {size} bytes (the feature "
                              "cache changed under a running job)")
        return counts

    def _descriptor(self, file: int) -> tuple[int, bool]:
        """(an open file descriptor, whether the caller must close it). Files stay open while
        the process may open more; past that each read opens its own."""
        fd = self._open.get(file)
        if fd is not None:
            return fd, False
        with self._lock:
            if file not in self._open and len(self._open) < OPEN_FILES:
                self._open[file] = os.open(self.files[file], os.O_RDONLY)
            fd = self._open.get(file)
        return (fd, False) if fd is not None else (os.open(self.files[file], os.O_RDONLY), True)

    def close(self) -> None:
        with self._lock:
            while self._open:
                os.close(self._open.popitem()[1])

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """DataLoader workers get the locations, not this process's open files."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_open", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open, self._lock = {}, threading.Lock()


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
