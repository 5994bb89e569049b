"""Quality on real sets: every fusion, each single modality, and what a pragmatic user would
do instead (scikit-learn logistic regression on the standardised, concatenated frozen
embeddings). Same data, same split, one run, the same settings for every dataset.

Run: .venv/bin/python -m benchmarks.quality [--sets easy-vqa,emoji] [--smoke]
(writes benchmarks/results/quality.json; --smoke: a few rows, one epoch, writes nothing)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from benchmarks.common import write_result
from benchmarks.datasets import SETS, smoke_set
from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.encoders import create_encoder
from mmfuse.features.cache import FeatureCache, default_cache_dir
from mmfuse.fusion import FUSIONS

IMAGE_SIZE = 128  # both sets have 64 px images
TRAIN = {"epochs": 10, "batch_size": 128}  # one setting for every set: no per-dataset tuning


def config(columns: dict, fusion: str | None = None, modalities: list[str] | None = None,
           settings: dict | None = None) -> Config:
    cfg = Config(data=DataConfig(**columns),
                 model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0",
                                                               image_size=IMAGE_SIZE)),
                 train=TrainConfig(**(settings or TRAIN)))
    if fusion:
        cfg.model.fusion = fusion
    if modalities:
        cfg.model.modalities = modalities
    return cfg


def run_mmfuse(train: pd.DataFrame, test: pd.DataFrame, cfg: Config) -> dict[str, float]:
    started = time.perf_counter()
    predictor = Predictor(cfg).fit(train)
    seconds = time.perf_counter() - started
    metrics = predictor.evaluate(test)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "train_seconds": seconds}


def frozen_features(
    frame: pd.DataFrame, columns: dict, kinds: tuple[str, ...] = ("image", "text"),
    image_size: int | None = IMAGE_SIZE,
) -> np.ndarray:
    """(N, D) pooled EfficientNet-Lite0 and/or MiniLM features from the shared feature cache."""
    cache = FeatureCache(default_cache_dir())
    encoders = {"image": lambda: create_encoder("image", EncoderConfig("efficientnet-lite0",
                                                                       image_size=image_size)),
                "text": lambda: create_encoder("text", EncoderConfig("minilm"))}
    parts = []
    for kind in kinds:
        column = columns[f"{kind}_cols"][0]
        table = cache.table(encoders[kind](), frame[column].astype(str).tolist(), False)
        parts.append(table.pooled[table.index].numpy())
    return np.concatenate(parts, axis=1)


def scores(truth: pd.Series, predicted: np.ndarray, seconds: float) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro")),
            "train_seconds": seconds}


def run_logistic_regression(
    train: pd.DataFrame, test: pd.DataFrame, columns: dict, image_size: int | None = IMAGE_SIZE
) -> dict:
    """Frozen pooled features of both encoders, standardised, concatenated; multinomial LR."""
    started = time.perf_counter()
    train_x = frozen_features(train, columns, image_size=image_size)
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(max_iter=2000, C=1.0)
    model.fit(scaler.transform(train_x), train[columns["label_col"]])
    seconds = time.perf_counter() - started
    predicted = model.predict(scaler.transform(frozen_features(test, columns,
                                                               image_size=image_size)))
    return scores(test[columns["label_col"]], predicted, seconds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--smoke", action="store_true", help="a few rows; writes nothing")
    args = parser.parse_args(argv)
    default_fusion = Config().model.fusion
    settings = {**TRAIN, "epochs": 1} if args.smoke else TRAIN
    results: dict[str, Any] = {"default_fusion": default_fusion, "settings": settings,
                               "image_size": IMAGE_SIZE, "sets": {}}
    for name in ["easy-vqa"] if args.smoke else args.sets.split(","):
        train, test, columns = smoke_set() if args.smoke else SETS[name]()
        rows: dict[str, dict[str, float]] = {}
        for fusion in FUSIONS.names():
            rows[f"fusion {fusion}"] = run_mmfuse(train, test, config(columns, fusion,
                                                                      settings=settings))
        for kind in ("image", "text"):
            rows[f"{kind} only"] = run_mmfuse(train, test, config(
                columns, modalities=[kind], settings=settings))
        rows["sklearn logistic regression"] = run_logistic_regression(train, test, columns)
        default = rows[f"fusion {default_fusion}"]["macro_f1"]
        best_single = max(rows["image only"]["macro_f1"], rows["text only"]["macro_f1"])
        baseline = rows["sklearn logistic regression"]["macro_f1"]
        results["sets"][name] = {
            "train_rows": len(train), "test_rows": len(test), "results": rows,
            "default_beats_best_single_modality": default > best_single,
            "default_beats_logistic_regression": default > baseline,
        }
        print(f"\n{name} ({len(train)} train / {len(test)} test rows)")
        print(f"{'model':<30}{'accuracy':>10}{'macro-F1':>10}{'train s':>10}")
        for model, values in rows.items():
            mark = "  <- default" if model == f"fusion {default_fusion}" else ""
            print(f"{model:<30}{values['accuracy']:>10.4f}{values['macro_f1']:>10.4f}"
                  f"{values['train_seconds']:>10.1f}{mark}")
    if not args.smoke:
        print(f"\nwritten to {write_result('quality', results)}")
    return results


if __name__ == "__main__":
    main()
