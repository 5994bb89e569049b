"""On-disk cache of frozen-encoder features, keyed by encoder fingerprint + input content hash.

Each encoder gets a folder named by a hash of its ``cache_key`` (weights fingerprint plus
preprocessing) and the arithmetic its features are computed in (``stored_key``). Features
are appended as safetensors shards written atomically, so a killed run keeps every shard it
finished and concurrent writers never clobber each other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmfuse.encoders.base import Encoder
from mmfuse.encoders.fast_path import arithmetic
from mmfuse.errors import MmfuseError
from mmfuse.features.batches import FeatureTable
from mmfuse.features.encoding import encoded
from mmfuse.features.pooled import pool, pooled_hash, pooled_parts
from mmfuse.features.stored import (
    CorruptShard,
    Locations,
    StoredFeatures,
    StoredTable,
    digest_array,
    header_entries,
    index_path,
    shard_entries,
    write_index,
)
from mmfuse.io import atomic_write_text, save_tensors
from mmfuse.progress import CONSOLE

SHARD_ITEMS = 2048
# A table up to this size is read into memory to train from; a larger one stays on disk.
IN_MEMORY_BYTES = 512 * 2**20
ENTRY_BYTES = 80  # a shard's header entry for one tensor (name, dtype, shape, offsets)


def default_cache_dir() -> Path:
    env = os.environ.get("MMFUSE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfuse" / "features"


def cache_root(cache_dir: str | None) -> Path:
    """The folder a config's ``cache_dir`` names; the default one when it names none, or
    "none" (the feature cache is then off, but images extracted from shards need a place)."""
    return default_cache_dir() if not cache_dir or cache_dir == "none" else Path(cache_dir)


def content_hash(kind: str, value: str) -> str:
    """Images by their bytes (a renamed file is still a hit), texts by their characters."""
    digest = hashlib.blake2b(digest_size=16)
    if kind == "image":
        with open(value, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(value.encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True)
class Together:
    """Processes filling the cache at once (``accelerate launch``): each encodes every
    ``processes``-th new item into shards of its own; ``wait`` is a barrier across them."""

    rank: int
    processes: int
    wait: Callable[[], None]


# Cells -> (position among them, their features), computed from stored items (pooled cells).
Computed = Callable[[list[str]], Iterator[tuple[int, dict[str, torch.Tensor]]]]


class FeatureCache:
    """``table(encoder, values, with_tokens)`` returns a table of features, encoding only what
    is new.

    The disk is the cache: encoding streams into shards (memory holds one shard at a time),
    and a table locates its items in the shards. One that fits ``in_memory_bytes`` is read
    into memory (fastest to train from); a larger one stays on disk and each batch reads its
    rows (features/stored.py), so a table's size is bounded by the disk, not by memory.
    ``root=None`` disables the cache (features are computed and held in memory).
    """

    def __init__(self, root: Path | None, batch_size: int | None = None,
                 num_workers: int = 2, in_memory_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.batch_size = batch_size  # None: the measured best per kind
        self.num_workers = num_workers
        self.in_memory_bytes = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes

    def folder(self, encoder: Encoder) -> Path | None:
        if self.root is None:
            return None
        key = hashlib.blake2b(stored_key(encoder).encode(), digest_size=10).hexdigest()
        return self.root / key

    def table(self, encoder: Encoder, values: list[str | None], with_tokens: bool,
              together: Together | None = None) -> FeatureTable | StoredTable:
        """Features of ``values`` (None: missing) row by row; with ``together``, every
        process of the run must call this with the same values."""
        distinct = sorted({v for v in values if v is not None})
        parts = dict(zip(distinct, encoder.parts_of(distinct), strict=True))
        if not any(len(p) > 1 for p in parts.values()):
            hashes = [content_hash(encoder.kind, v) for v in distinct]
            return self._table(encoder, values, distinct, hashes, with_tokens=with_tokens,
                               together=together)
        if self.folder(encoder) is None:
            return pooled_parts(lambda items: self.table(encoder, items, with_tokens, together),
                                encoder.output_dim, values, parts, with_tokens)
        # Cells of several items (features/pooled.py): the items first, then each cell as
        # an item of its own, computed from them
        singles = sorted({item for items in parts.values() for item in items})
        item_hashes = [content_hash(encoder.kind, v) for v in singles]
        items = self._table(encoder, singles, singles, item_hashes, with_tokens=with_tokens,
                            together=together)
        where = {item: i for i, item in enumerate(singles)}

        def computed(cells: list[str]) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
            for k, cell in enumerate(cells):
                found = items.fetch(torch.tensor([where[item] for item in parts[cell]]))
                yield k, pool(found, with_tokens)

        hashes = [pooled_hash([item_hashes[where[item]] for item in parts[cell]])
                  for cell in distinct]
        return self._table(encoder, values, distinct, hashes, with_tokens=with_tokens,
                           together=together, computed=computed)

    def _table(self, encoder: Encoder, values: list[str | None], distinct: list[str],
               hashes: list[str], *, with_tokens: bool, together: Together | None,
               computed: Computed | None = None) -> FeatureTable | StoredTable:
        """The table of ``values`` whose ``distinct`` ones have content ``hashes``; what is
        not stored yet is encoded (or ``computed`` from stored items)."""
        # Items are distinct contents: two files with the same bytes are one item.
        digests, first, item_of = np.unique(digest_array(hashes), return_index=True,
                                            return_inverse=True)
        slot = {v: int(item_of[i]) for i, v in enumerate(distinct)}
        index = torch.tensor([slot[v] if v is not None else len(digests) for v in values],
                             dtype=torch.long)
        present = torch.tensor([v is not None for v in values], dtype=torch.bool)
        del slot

        def values_of(items: np.ndarray) -> list[str]:
            return [distinct[first[i]] for i in items]

        if self.folder(encoder) is None:  # no cache: encode everything, keep it in memory
            return FeatureTable(*self._in_memory(encoder, values_of(np.arange(len(digests))),
                                                 with_tokens), index, present)
        # New items are encoded in the order of their first row, so that the cache of a new
        # table lies in the table's order for every modality (see features/loaders.Shuffled).
        first_row = np.full(len(digests), len(values), dtype=np.int64)
        np.minimum.at(first_row, index[present].numpy(), np.flatnonzero(present.numpy()))
        stored = self.stored(encoder, digests, values_of, with_tokens=with_tokens,
                             together=together, priority=first_row, computed=computed)
        if stored.nbytes > self.in_memory_bytes:
            return StoredTable(stored, index, present)
        pooled, tokens, mask = stored.load()
        stored.close()
        return FeatureTable(pooled, tokens, mask, index, present)

    def stored(self, encoder: Encoder, digests: np.ndarray,
               values_of: Callable[[np.ndarray], list[str]], *, with_tokens: bool,
               together: Together | None = None, priority: np.ndarray | None = None,
               computed: Computed | None = None) -> StoredFeatures:
        """The stored features of the items with these (U,) digests, encoding those not yet
        in the cache (``values_of(positions)`` gives their inputs) in the order of ``priority``
        (U,), if given."""
        folder = self.folder(encoder)
        if folder is None:
            raise ValueError("the feature cache is off")
        stored = self._locate(encoder, folder, digests, with_tokens)
        todo = np.flatnonzero(~self._complete(stored))
        if priority is not None:
            todo = todo[np.argsort(priority[todo], kind="stable")]
        if together is not None and together.processes > 1:
            together.wait()  # everyone has seen the same cache before anyone adds to it
            mine = todo[together.rank::together.processes]
            if len(mine):
                self._encode(encoder, folder, values_of(mine), digests[mine],
                             with_tokens=with_tokens, process=together.rank, computed=computed)
            together.wait()
        elif len(todo):
            self._encode(encoder, folder, values_of(todo), digests[todo],
                         with_tokens=with_tokens, process=0, computed=computed)
        if len(todo):
            stored.close()
            stored = self._locate(encoder, folder, digests, with_tokens)
            if not self._complete(stored).all():
                raise MmfuseError(f"feature cache {folder}: features written a moment ago are "
                                  "gone (is another job deleting files there?)")
        return stored

    @staticmethod
    def _complete(stored: StoredFeatures) -> np.ndarray:
        found = stored.pooled.found
        return found & stored.tokens.found if stored.tokens is not None else found

    def _locate(self, encoder: Encoder, folder: Path, digests: np.ndarray,
                with_tokens: bool) -> StoredFeatures:
        """Where the shards of ``folder`` hold each of the (U,) items (the first copy)."""
        order = np.argsort(digests)
        ordered = digests[order]
        pooled = Locations.empty(len(digests), with_lengths=False)
        tokens = Locations.empty(len(digests), with_lengths=True) if with_tokens else None
        files: list[str] = []
        for shard in sorted(folder.glob("shard-*.safetensors")) if folder.exists() else ():
            try:
                entries = shard_entries(shard)
            except (CorruptShard, OSError) as error:
                # only lost work: its features are computed (and written) again
                CONSOLE.print(f"[yellow]feature cache: {shard} is corrupt ({error}); "
                              "discarded, its features are computed again[/]")
                shard.unlink(missing_ok=True)
                index_path(shard).unlink(missing_ok=True)
                continue
            files.append(str(shard))
            if not len(ordered):
                continue
            position = np.minimum(np.searchsorted(ordered, entries["digest"]), len(ordered) - 1)
            # what _encoded writes: pooled vectors in float32, token matrices in float16
            usable = ((ordered[position] == entries["digest"]) & (entries["dim"] == encoder.output_dim)
                      & (entries["dtype"] == np.where(entries["pooled"], b"F32", b"F16")))
            for where, pooled_part in ((pooled, True), (tokens, False)):
                if where is None:
                    continue
                chosen = usable & (entries["pooled"] == pooled_part)
                items = order[position[chosen]]
                new = where.file[items] < 0  # an item in several shards: the first copy
                where.file[items[new]] = len(files) - 1
                where.offset[items[new]] = entries["start"][chosen][new]
                if where.length is not None:
                    where.length[items[new]] = entries["rows"][chosen][new]
        return StoredFeatures(files, encoder.output_dim, pooled, tokens)

    def _in_memory(self, encoder: Encoder, values: list[str], with_tokens: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """pooled (U + 1, D), tokens (U + 1, T, D) and mask (U + 1, T), computed now."""
        found: list[dict[str, torch.Tensor]] = [{}] * len(values)
        for position, parts in self._encoded(encoder, values, with_tokens):
            found[position] = parts
        pooled = torch.zeros(len(values) + 1, encoder.output_dim)
        for i, parts in enumerate(found):
            pooled[i] = parts["pooled"]
        if not with_tokens:
            return pooled, None, None
        width = max([parts["tokens"].shape[0] for parts in found] or [1])
        tokens = torch.zeros(len(values) + 1, width, encoder.output_dim, dtype=torch.float16)
        mask = torch.zeros(len(values) + 1, width, dtype=torch.bool)
        for i, parts in enumerate(found):
            tokens[i, : parts["tokens"].shape[0]] = parts["tokens"]
            mask[i, : parts["tokens"].shape[0]] = True
        return pooled, tokens, mask

    def _encode(self, encoder: Encoder, folder: Path, values: list[str], digests: np.ndarray,
                *, with_tokens: bool, process: int, computed: Computed | None = None) -> None:
        """Encode ``values`` (or compute them from stored items: ``computed``) into new
        shards of ``folder`` (``SHARD_ITEMS`` at a time)."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "key.txt", stored_key(encoder) + "\n")
        # Before any work: the pooled vectors alone must fit; after the first shard, what its
        # items took on disk (token matrices included) must fit for the rest.
        room_for(folder, encoder.kind, len(values), encoder.output_dim * 4 + ENTRY_BYTES)
        pending: dict[str, torch.Tensor] = {}
        measured = False
        produced = computed(values) if computed is not None else self._encoded(
            encoder, values, with_tokens)
        try:
            for position, parts in produced:
                digest = digests[position].hex()
                pending.update({f"{digest}.{k}": v for k, v in parts.items()})
                if len(pending) >= SHARD_ITEMS:
                    shard = self._flush(folder, pending, process)
                    if not measured:
                        items, measured = position + 1, True
                        room_for(folder, encoder.kind, len(values) - items,
                                 shard.stat().st_size // items)
        finally:  # what was encoded is kept, whatever stopped the rest (a bad image, Ctrl-C)
            self._flush(folder, pending, process)

    def _encoded(self, encoder: Encoder, values: list[str], with_tokens: bool
                 ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """``values`` through ``encoder`` (``encoding.py``), in this cache's batches and workers,
        its fast-path graphs kept beside the features."""
        return encoded(encoder, values, with_tokens, graphs=self.root,
                       batch_size=self.batch_size, num_workers=self.num_workers)

    @staticmethod
    def _flush(folder: Path, pending: dict[str, torch.Tensor], process: int) -> Path:
        shard = folder / f"shard-{uuid.uuid4().hex}.safetensors"
        if pending:  # the writer is noted: a run's processes each add shards of their own
            save_tensors(shard, pending, metadata={"process": str(process)})
            write_index(shard, header_entries(shard))
        pending.clear()
        return shard


def stored_key(encoder: Encoder) -> str:
    """What a folder of features is keyed by: the encoder's weights and preprocessing
    (``cache_key``) and, where it is not float32, the arithmetic of its fast path."""
    computed_in = arithmetic(encoder)
    return encoder.cache_key + ("" if computed_in == "float32" else f"|{computed_in}")


def room_for(folder: Path, kind: str, items: int, item_bytes: int) -> None:
    """Refuse, with the numbers, to start encoding what the cache's disk cannot hold."""
    needed, free = items * item_bytes, shutil.disk_usage(folder).free
    if needed > free:
        raise MmfuseError(
            f"the feature cache {folder} needs about {needed / 1e9:.1f} GB more for "
            f"{items:,} {kind}s ({item_bytes:,} bytes each), and its disk has "
            f"{free / 1e9:.1f} GB free: point --cache-dir (or $MMFUSE_CACHE) at a bigger disk, "
            "or free some space")
