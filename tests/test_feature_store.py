"""Features that stay on disk: a table larger than memory is read batch by batch from the
cache's shards and gives what the same table read into memory gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_rows
from safetensors import safe_open

from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.encoders import create_encoder
from mmfuse.features import cache as cache_module
from mmfuse.features import loaders
from mmfuse.features.batches import DiskOrder, MultimodalDataset
from mmfuse.features.cache import FeatureCache
from mmfuse.features.loaders import Prefetched
from mmfuse.features.stored import StoredTable


def test_a_table_on_disk_reads_what_memory_holds(tmp_path: Path, float32: None) -> None:
    encoder = create_encoder("text", EncoderConfig("minilm", max_length=16))
    texts = ["a red square", None, "a blue circle", "a red square",
             "a much longer sentence about a green triangle on the left", "x"]
    # Encoded in two sessions: the table spans two shards.
    FeatureCache(tmp_path, batch_size=2).table(encoder, texts[:3], with_tokens=True)
    on_disk = FeatureCache(tmp_path, in_memory_bytes=0).table(encoder, texts, with_tokens=True)
    in_memory = FeatureCache(tmp_path).table(encoder, texts, with_tokens=True)
    assert isinstance(on_disk, StoredTable) and not isinstance(in_memory, StoredTable)
    assert len(list(tmp_path.glob("*/shard-*.safetensors"))) == 2
    rows = torch.tensor([5, 1, 0, 3, 0, 4])  # any order, a missing text, a repeated row
    disk, memory = on_disk.fetch(rows), in_memory.fetch(rows)
    assert disk.keys() == memory.keys()
    for name in disk:
        torch.testing.assert_close(disk[name], memory[name], rtol=0, atol=0)
    assert not disk["pooled"][1].any() and not disk["token_mask"][1].any()  # the missing text
    # ... and both hold what the encoder computes now, in the untouched model.
    with torch.inference_mode():
        fresh = encoder.eval()(**encoder.prepare(["a red square"])).pooled[0]
    torch.testing.assert_close(disk["pooled"][2], fresh, atol=1e-5, rtol=0)  # row 0


def test_every_shard_entry_is_located_once(tmp_path: Path) -> None:
    encoder = create_encoder("text", EncoderConfig("minilm", max_length=16))
    texts = [f"text number {i}" for i in range(7)]
    FeatureCache(tmp_path, batch_size=3).table(encoder, texts[:4], with_tokens=False)
    table = FeatureCache(tmp_path, in_memory_bytes=0).table(encoder, texts, with_tokens=False)
    written = {}
    for shard in tmp_path.glob("*/shard-*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            written |= {name: handle.get_tensor(name) for name in handle.keys()}
    assert len(written) == 7  # the second call encoded only the three new texts
    located = table.fetch(torch.arange(7))["pooled"]
    from mmfuse.features.cache import content_hash
    for i, text in enumerate(texts):
        torch.testing.assert_close(located[i], written[f"{content_hash('text', text)}.pooled"],
                                   rtol=0, atol=0)


def frozen_config(tmp_path: Path, fusion: str) -> Config:
    return Config(
        data=DataConfig(image_cols=["image"], text_cols=["caption"], label_col="label",
                        allow_missing=True),
        model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0", image_size=32),
                          text_encoder=EncoderConfig("minilm", max_length=16),
                          fusion=fusion, hidden_dim=16),
        train=TrainConfig(epochs=2, batch_size=16, num_workers=0, modality_dropout=0.2),
        cache_dir=str(tmp_path / "cache"),
    )


def test_shards_are_located_from_their_index_files(tmp_path: Path, monkeypatch) -> None:
    """Each shard is written with an index of its entries; locating reads that instead of the
    shard's header, and finds what the header says. An index that is missing or broken is
    replaced from the header."""
    from mmfuse.features import stored as stored_module
    from mmfuse.features.cache import content_hash

    encoder = create_encoder("text", EncoderConfig("minilm", max_length=16))
    # one text whose digest ends in a zero byte (its name in the shard is 2 digits shorter)
    zero_ended = next(f"text {i}" for i in range(10_000)
                      if content_hash("text", f"text {i}").endswith("00"))
    texts = [f"text number {i}" for i in range(6)] + [zero_ended]
    FeatureCache(tmp_path, batch_size=3).table(encoder, texts[:4], with_tokens=True)
    FeatureCache(tmp_path, batch_size=3).table(encoder, texts, with_tokens=True)
    shards = sorted(tmp_path.glob("*/shard-*.safetensors"))
    indexes = [stored_module.index_path(shard) for shard in shards]
    assert len(shards) == 2 and all(index.exists() for index in indexes)

    def located() -> tuple:
        features = FeatureCache(tmp_path, in_memory_bytes=0).table(
            encoder, texts, with_tokens=True).features
        return tuple(np.concatenate([getattr(where, field) for where in (features.pooled,
                                     features.tokens) for field in ("file", "offset")]))

    headers = []
    real_header = stored_module.shard_header
    monkeypatch.setattr(stored_module, "shard_header",
                        lambda path: headers.append(path) or real_header(path))
    from_indexes = located()
    assert headers == [] and -1 not in from_indexes  # every item found, no header parsed
    indexes[0].unlink()
    indexes[1].write_bytes(b"not an index")
    assert located() == from_indexes and len(headers) == 2  # from the headers, ...
    assert all(index.exists() for index in indexes)
    headers.clear()
    assert located() == from_indexes and headers == []  # ... which wrote the indexes again


@pytest.mark.parametrize("fusion", ["concat", "cross-attention"])
def test_training_from_disk_equals_training_from_memory(tmp_path: Path, monkeypatch,
                                                        fusion: str) -> None:
    rows = make_rows(tmp_path, 45)  # 40 training rows: two batches of 16 and one of 8
    rows.loc[[3, 17], "caption"] = None  # mixed holes
    rows.loc[[8], "image"] = None
    twin = tmp_path / "twin.png"  # the same bytes under another name: one item in the cache
    twin.write_bytes((tmp_path / rows.loc[4, "image"]).read_bytes())
    rows.loc[5, "image"] = twin.name
    probabilities, reads, ahead, orders = [], [], [], []
    fetch, prefetched = StoredTable.fetch, Prefetched.__iter__
    disk_order = MultimodalDataset.disk_order
    monkeypatch.setattr(StoredTable, "fetch", lambda self, r: reads.append(len(r)) or fetch(self, r))
    monkeypatch.setattr(Prefetched, "__iter__", lambda self: ahead.append(1) or prefetched(self))
    monkeypatch.setattr(MultimodalDataset, "disk_order",
                        lambda self: orders.append(disk_order(self)) or orders[-1])
    # On disk; on disk, read ahead in a thread (as when the page cache is short); in memory,
    # shuffled in the same blocks as on disk (hints: none).
    for in_memory, memory_left in ((0, 1e12), (0, 0), (cache_module.IN_MEMORY_BYTES, 1e12)):
        monkeypatch.setattr(cache_module, "IN_MEMORY_BYTES", in_memory)
        monkeypatch.setattr(loaders, "available_memory", lambda left=memory_left: left)
        if in_memory:
            monkeypatch.setattr(MultimodalDataset, "disk_order", lambda self, disk=orders[0]:
                                DiskOrder(disk.order, lambda rows: None))
        reads.clear(), ahead.clear()
        predictor = Predictor(frozen_config(tmp_path, fusion)).fit(rows, base_dir=tmp_path)
        probabilities.append(predictor.predict_proba(rows, base_dir=tmp_path).to_numpy())
        assert bool(reads) == (in_memory == 0) and bool(ahead) == (memory_left == 0)
    assert orders[0] is not None and torch.equal(orders[0].order, orders[1].order)
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    np.testing.assert_array_equal(probabilities[0], probabilities[2])


def test_reading_ahead_keeps_order_and_errors_and_stops_its_thread() -> None:
    import threading

    class Batches(list):
        batch_sampler = None

    def failing():
        yield from range(3)
        raise OSError("disk gone")

    assert list(Prefetched(Batches(range(10)))) == list(range(10))
    with pytest.raises(OSError, match="disk gone"):
        list(Prefetched(failing()))  # type: ignore[arg-type]
    for batch in Prefetched(Batches(range(100)), depth=1):
        if batch == 2:
            break  # the trainer leaves an epoch at its deadline
    assert not [t for t in threading.enumerate() if t.name == "mmfuse-prefetch"]
    # Leaving early once the reader has read everything and the queue is full: the reader
    # must not wait forever to hand over the end, nor the consumer for the reader.
    reader_done = threading.Event()

    class Finite(Batches):
        def __iter__(self):
            yield from super().__iter__()
            reader_done.set()

    def leave_early() -> None:
        for _ in Prefetched(Finite(range(3)), depth=2):
            reader_done.wait()
            break

    consumer = threading.Thread(target=leave_early, daemon=True)
    consumer.start()
    consumer.join(timeout=60)  # a deadlock, not a speed, is what this catches
    assert not consumer.is_alive()

@pytest.mark.parametrize("weighted", [False, True])
def test_shuffled_draws_what_torch_samplers_draw(weighted: bool) -> None:
    """The trainer's sampler keeps a tensor instead of a list of every row; its order must be
    torch's (a resumed run replays, and nothing about shuffling changed but memory)."""
    from torch.utils.data import RandomSampler, WeightedRandomSampler

    from mmfuse.features.loaders import Shuffled

    weights = torch.rand(70_001) if weighted else None  # more than one chunk, uneven
    ours = list(Shuffled(70_001, torch.Generator().manual_seed(3), weights))
    generator = torch.Generator().manual_seed(3)
    theirs = list(WeightedRandomSampler(weights, 70_001, generator=generator) if weighted
                  else RandomSampler(range(70_001), generator=generator))
    assert ours == theirs


@pytest.mark.parametrize("weighted", [False, True])
def test_rows_on_disk_are_shuffled_in_blocks_read_ahead(monkeypatch, weighted: bool) -> None:
    """Features on disk: every row once an epoch (or torch's weighted draws), seeded; each
    group of blocks of the disk's order is shuffled together and hinted to the kernel before
    its first row is asked for."""
    from collections import Counter

    from torch.utils.data import WeightedRandomSampler

    from mmfuse.features.batches import DiskOrder
    from mmfuse.features.loaders import Shuffled

    monkeypatch.setattr(Shuffled, "BLOCK", 100)
    monkeypatch.setattr(Shuffled, "GROUP", 4)
    rows = 2_050  # 21 blocks, the last uneven: 6 groups, the last of one block
    disk_order = torch.randperm(rows, generator=torch.Generator().manual_seed(0))
    place = torch.empty(rows, dtype=torch.long)
    place[disk_order] = torch.arange(rows)  # row -> position on disk
    weights = torch.rand(rows) if weighted else None
    events: list = []
    disk = DiskOrder(disk_order, lambda rows_: events.append(("hint", rows_.clone())))

    def draw(seed: int) -> list[int]:
        return list(Shuffled(rows, torch.Generator().manual_seed(seed), weights, disk))

    drawn = draw(3)
    if weighted:  # the same draws as torch's sampler, in another order
        generator = torch.Generator().manual_seed(3)
        assert Counter(drawn) == Counter(WeightedRandomSampler(weights, rows, generator=generator))
    else:
        assert sorted(drawn) == list(range(rows))
    assert draw(3) == drawn and draw(4) != drawn
    hints = [rows_ for kind, rows_ in events if kind == "hint"][:6]  # the first epoch's
    assert len(hints) == 6 and sum(map(len, hints)) == rows
    start = 0
    for hint in hints:  # groups follow each other: the rows of one, shuffled, then the next
        group = torch.tensor(drawn[start:start + len(hint)])
        assert sorted(group.tolist()) == sorted(hint.tolist()) and not torch.equal(group, hint)
        blocks = place[group] // 100 if not weighted else None
        assert blocks is None or len(blocks.unique()) <= 4  # from 4 places of the disk at most
        start += len(hint)

    events.clear()
    order = iter(Shuffled(rows, torch.Generator().manual_seed(3), weights, disk))
    first = next(order)
    assert len(events) == 2 and first in events[0][1].tolist()  # this group and the next


def test_a_read_ahead_hint_covers_what_is_wanted(tmp_path: Path, monkeypatch) -> None:
    """One WILLNEED stretch per shard, covering every wanted item's bytes; none where the
    wanted items lie too far apart."""
    import os

    from mmfuse.features import stored as stored_module

    encoder = create_encoder("text", EncoderConfig("minilm", max_length=16))
    texts = [f"text number {i}" for i in range(9)]
    FeatureCache(tmp_path).table(encoder, texts[:5], with_tokens=False)  # two shards: 5 + 4
    table = FeatureCache(tmp_path, in_memory_bytes=0).table(encoder, texts, with_tokens=False)
    features, hints = table.features, []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, start, length, advice: hints.append(
        (os.readlink(f"/proc/self/fd/{fd}"), start, length, advice)))
    slots = table.index[[0, 2, 4, 6, 8]].numpy()
    features.will_need(slots)
    assert len(hints) == 2 and {h[3] for h in hints} == {os.POSIX_FADV_WILLNEED}
    size = encoder.output_dim * 4
    for slot in slots:
        file, offset = features.files[features.pooled.file[slot]], features.pooled.offset[slot]
        assert any(f == file and s <= offset and offset + size <= s + n for f, s, n, _ in hints)
    hints.clear()
    monkeypatch.setattr(stored_module, "SPAN_SLACK", 1)  # only stretches of wanted bytes alone
    offsets = features.pooled.offset[table.index[:5].numpy()]
    apart = table.index[:5].numpy()[[offsets.argmin(), offsets.argmax()]]
    features.will_need(apart)
    assert hints == []


def test_a_cache_without_room_refuses_before_encoding(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from mmfuse.errors import MmfuseError

    encoder = create_encoder("text", EncoderConfig("minilm", max_length=16))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(
        10**12, 10**12 - 10**5, 10**5))  # 100 kB free
    texts = [f"text number {i}" for i in range(100)]
    with pytest.raises(MmfuseError) as refused:
        FeatureCache(tmp_path).table(encoder, texts, with_tokens=False)
    message = " ".join(str(refused.value).split())
    # 100 texts x (384 floats + a header entry) = 0.16 MB > 100 kB, said with the numbers
    assert "100 texts (1,616 bytes each)" in message and "0.0 GB free" in message
    assert "--cache-dir" in message
    assert not list(tmp_path.glob("*/shard-*"))  # nothing was encoded
