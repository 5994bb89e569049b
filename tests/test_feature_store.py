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
from mmfuse.features.cache import FeatureCache
from mmfuse.features.loaders import Prefetched
from mmfuse.features.stored import StoredTable


def test_a_table_on_disk_reads_what_memory_holds(tmp_path: Path) -> None:
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


@pytest.mark.parametrize("fusion", ["concat", "cross-attention"])
def test_training_from_disk_equals_training_from_memory(tmp_path: Path, monkeypatch,
                                                        fusion: str) -> None:
    rows = make_rows(tmp_path, 45)  # 40 training rows: two batches of 16 and one of 8
    rows.loc[[3, 17], "caption"] = None  # mixed holes
    rows.loc[[8], "image"] = None
    twin = tmp_path / "twin.png"  # the same bytes under another name: one item in the cache
    twin.write_bytes((tmp_path / rows.loc[4, "image"]).read_bytes())
    rows.loc[5, "image"] = twin.name
    probabilities, reads, ahead = [], [], []
    fetch, prefetched = StoredTable.fetch, Prefetched.__iter__
    monkeypatch.setattr(StoredTable, "fetch", lambda self, r: reads.append(len(r)) or fetch(self, r))
    monkeypatch.setattr(Prefetched, "__iter__", lambda self: ahead.append(1) or prefetched(self))
    # In memory; on disk; on disk, read ahead in a thread (as when the page cache is short).
    for in_memory, memory_left in ((cache_module.IN_MEMORY_BYTES, 1e12), (0, 1e12), (0, 0)):
        monkeypatch.setattr(cache_module, "IN_MEMORY_BYTES", in_memory)
        monkeypatch.setattr(loaders, "available_memory", lambda left=memory_left: left)
        reads.clear(), ahead.clear()
        predictor = Predictor(frozen_config(tmp_path, fusion)).fit(rows, base_dir=tmp_path)
        probabilities.append(predictor.predict_proba(rows, base_dir=tmp_path).to_numpy())
        assert bool(reads) == (in_memory == 0) and bool(ahead) == (memory_left == 0)
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
