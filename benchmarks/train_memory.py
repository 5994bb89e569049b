"""Peak memory and speed of training from the feature cache as the table grows 30x.

For each size, synthetic features with the real encoders' dimensions (EfficientNet-Lite0:
1,280 floats, MiniLM: 384) are written straight into the feature cache's shards, as encoding
would write them, so no image is decoded; then a fresh process builds the training table from
the cache (every table on disk: ``in_memory_bytes=0``, so every size takes the same path) and
trains one epoch of ``concat`` (the real encoders are loaded, their features read from the
cache), validating on the same 10,000 rows at every size. Between the two steps the cache is dropped
from the page cache, so every size starts cold. Each step runs in a process of its own; peak
RSS is the training process's VmHWM.

What is not measured here: the manifest itself. A training run also holds its rows (paths,
texts, labels: ~150-300 bytes a row in pandas) and hashes every input once.

Run: .venv/bin/python -m benchmarks.train_memory [--sizes 100000,1000000,3000000]
     [--folder /big/disk]   (writes benchmarks/results/train_memory.json; needs ~6.7 GB of
     free disk per million rows, deleted after each size; --smoke: one tiny size, writes
     nothing)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result

SIZES = (100_000, 1_000_000, 3_000_000)
VALIDATION_ROWS = 10_000
CLASSES = 10
SHARD_ITEMS = 2048


def config(folder: Path):
    from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, TrainConfig

    return Config(
        data=DataConfig(image_cols=["image"], text_cols=["text"], label_col="label"),
        model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0"),
                          text_encoder=EncoderConfig("minilm"), fusion="concat"),
        train=TrainConfig(epochs=1),
        cache_dir=str(folder),
    )


def digests(modality: str, rows: int):
    """(rows,) 16-byte synthetic content digests, the same for every size's first rows."""
    return np.array([hashlib.blake2b(f"{modality}:{i}".encode(), digest_size=16).digest()
                     for i in range(rows)], dtype="S16")


def encoders(folder: Path) -> tuple:
    import pandas as pd

    from mmfuse.fitted_model import FittedModel

    classes = [str(c) for c in range(CLASSES)]
    fitted = FittedModel.build(config(folder), pd.DataFrame({"_target": classes}), classes)
    return fitted, {m: fitted.model.encoder_for(m) for m in fitted.model.modalities}


def generate(folder: Path, rows: int) -> None:
    """Shards of synthetic pooled features in each encoder's cache folder."""
    import torch

    from mmfuse.features.cache import FeatureCache

    _, by_modality = encoders(folder)
    cache = FeatureCache(folder)
    rng = np.random.default_rng(0)
    for modality, encoder in by_modality.items():
        target = cache.folder(encoder)
        target.mkdir(parents=True, exist_ok=True)
        names = digests(modality, rows)
        for start in range(0, rows, SHARD_ITEMS):
            block = torch.from_numpy(rng.standard_normal(
                (min(SHARD_ITEMS, rows - start), encoder.output_dim), dtype=np.float32))
            FeatureCache._flush(target, {f"{d.hex()}.pooled": row for d, row in
                                         zip(names[start:start + SHARD_ITEMS], block, strict=False)}, 0)


def evict(folder: Path) -> None:
    """Written to disk and dropped from the page cache: every size starts cold, as a cache
    written by an earlier run does (a fresh one is whatever part of it the page cache kept)."""
    os.sync()
    for shard in folder.rglob("*.safetensors"):
        fd = os.open(shard, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def train_one_epoch(folder: Path, rows: int) -> dict:
    """One epoch of concat from tables on disk; prints a JSON line with the figures."""
    import torch

    from mmfuse.features.batches import MultimodalDataset
    from mmfuse.features.cache import FeatureCache
    from mmfuse.features.stored import StoredTable
    from mmfuse.training.inference import run_model
    from mmfuse.training.trainer import train

    torch.manual_seed(0)
    fitted, by_modality = encoders(folder)
    cache = FeatureCache(folder, in_memory_bytes=0)
    started = time.perf_counter()

    def never(_items):
        raise AssertionError("every item is in the cache")

    stored = {m: cache.stored(e, digests(m, rows), never, with_tokens=False)
              for m, e in by_modality.items()}
    located = time.perf_counter() - started
    index, present = torch.arange(rows), torch.ones(rows, dtype=torch.bool)
    labels = torch.randint(CLASSES, (rows,), generator=torch.Generator().manual_seed(0))
    train_set = MultimodalDataset({m: StoredTable(s, index, present) for m, s in stored.items()},
                                  labels)
    val_set = train_set.subset(torch.arange(min(VALIDATION_ROWS, rows)))
    validation_seconds = []

    def validate(model) -> dict[str, float]:
        begun = time.perf_counter()
        logits, _ = run_model(model, val_set, num_workers=0)
        validation_seconds.append(time.perf_counter() - begun)
        return {"accuracy": float((logits.argmax(1) == val_set.targets).float().mean())}

    state = train(fitted.model, train_set, validate, fitted.config.train, "accuracy")
    epoch = state.history[0]["seconds"] - validation_seconds[0]
    return {"rows": rows, "locate_seconds": round(located, 2), "epoch_seconds": round(epoch, 2),
            "rows_per_second": rows / epoch, "validation_seconds": round(validation_seconds[0], 2)}


def run_child(step: str, folder: Path, rows: int) -> dict:
    script = (f"import json, sys\nfrom pathlib import Path\nfrom benchmarks.train_memory import *\n"
              f"out = {step}(Path({str(folder)!r}), {rows}) or {{}}\n"
              "out['peak_rss_mb'] = int([l for l in open('/proc/self/status') "
              "if l.startswith('VmHWM')][0].split()[1]) / 1024\n"
              "print('RESULT ' + json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent)
    if done.returncode:
        raise RuntimeError(f"{step} {rows} failed:\n{done.stderr[-3000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--folder", default=None, help="where the synthetic cache is written")
    parser.add_argument("--smoke", action="store_true", help="one tiny size; writes nothing")
    args = parser.parse_args(argv)
    sizes = [SHARD_ITEMS] if args.smoke else [int(s) for s in args.sizes.split(",")]
    runs = []
    for rows in sizes:
        folder = Path(tempfile.mkdtemp(prefix="mmfuse-train-memory-", dir=args.folder))
        try:
            started = time.perf_counter()
            run_child("generate", folder, rows)
            generated = time.perf_counter() - started
            disk = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
            evict(folder)
            result = run_child("train_one_epoch", folder, rows)
            result |= {"generate_seconds": round(generated, 1), "cache_gb": round(disk / 1e9, 2)}
            runs.append(result)
            print(f"{rows:>9,} rows: peak RSS {result['peak_rss_mb']:7.0f} MB, "
                  f"{result['rows_per_second']:7.0f} rows/s, cache {result['cache_gb']} GB")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    first, last = runs[0], runs[-1]
    speeds = [r["rows_per_second"] for r in runs]
    summary = {
        "sizes": sizes, "runs": runs,
        "peak_rss_growth": last["peak_rss_mb"] / first["peak_rss_mb"],
        "peak_rss_within_1_5x": last["peak_rss_mb"] <= 1.5 * first["peak_rss_mb"],
        "rows_per_second_spread": (max(speeds) - min(speeds)) / max(speeds),
        "rows_per_second_within_20_percent": min(speeds) >= 0.8 * max(speeds),
    }
    print(f"peak RSS x{summary['peak_rss_growth']:.2f} for {sizes[-1] // sizes[0]}x the rows; "
          f"rows/s spread {summary['rows_per_second_spread']:.0%}")
    if not args.smoke:
        print(f"written to {write_result('train_memory', summary)}")
    return summary


if __name__ == "__main__":
    main()
