"""Retrieval and matching on captions built from easy-VQA images, and exact search speed.

easy-VQA ships no captions, so each image gets two, written from its own question answers
("a red circle", "a circle that is red"). Many images share a caption (8 colours x 3 shapes),
so text->image Recall@1 is bounded by 1 / (images per caption); the random baseline is
printed beside every number.

Run: .venv/bin/python -m benchmarks.retrieval [--smoke]   (writes
benchmarks/results/retrieval.json; --smoke: a few pairs, one epoch, writes nothing)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.common import write_result
from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.data.builtin import DATASETS
from mmfuse.retrieval.index import EmbeddingIndex
from mmfuse.retrieval.predictor import RetrievalPredictor


def easy_vqa_captions(frame: pd.DataFrame) -> pd.DataFrame:
    colours = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
    shapes = {"circle", "rectangle", "triangle"}
    known: dict[str, dict[str, str]] = {}
    for image, question, answer in frame[["image", "question", "answer"]].itertuples(index=False):
        facts = known.setdefault(image, {})
        if answer in colours:
            facts["colour"] = answer
        if answer in shapes:
            facts["shape"] = answer
        for colour in colours:  # "what is the blue shape?" -> circle: the colour is in the question
            if f"the {colour} shape" in question and answer in shapes:
                facts["colour"] = colour
    rows = []
    for image, facts in known.items():
        if {"colour", "shape"} <= set(facts):
            c, s = facts["colour"], facts["shape"]
            rows += [{"image": image, "caption": f"a {c} {s}"},
                     {"image": image, "caption": f"a {s} that is {c}"}]
    return pd.DataFrame(rows)


def config(task: str, epochs: int = 10) -> Config:
    return Config(
        data=DataConfig(image_cols=["image"], text_cols=["caption"], task=task),
        model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0", image_size=128),
                          text_encoder=EncoderConfig("minilm"), fusion="concat"),
        train=TrainConfig(epochs=epochs, batch_size=128),
    )


def search_speed(n: int = 100_000, dim: int = 256, queries: int = 200) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)
    index = EmbeddingIndex(vectors, [str(i) for i in range(n)], "image", "-", "-")
    times = []
    for q in range(queries):
        query = vectors[q:q + 1]
        started = time.perf_counter()
        index.search(query, 10)
        times.append(time.perf_counter() - started)
    return {"n": n, "dim": dim, "p50_ms": 1000 * float(np.percentile(times, 50)),
            "p95_ms": 1000 * float(np.percentile(times, 95))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few pairs; writes nothing")
    args = parser.parse_args(argv)
    dataset = DATASETS.get("easy-vqa")()
    train = easy_vqa_captions(dataset.splits["train"])
    test = easy_vqa_captions(dataset.splits["test"])
    epochs = 10
    if args.smoke:
        train, test, epochs = train.head(64), test.head(32), 1
    started = time.perf_counter()
    retrieval = RetrievalPredictor(config("retrieval", epochs)).fit(train)
    retrieval_seconds = time.perf_counter() - started
    recall = retrieval.evaluate(test)
    started = time.perf_counter()
    matching = Predictor(config("matching", epochs)).fit(train)
    matching_seconds = time.perf_counter() - started
    match = matching.evaluate(test)
    speed = search_speed(1000, queries=5) if args.smoke else search_speed()
    result = {
        "data": {"train_pairs": len(train), "test_pairs": len(test),
                 "test_images": int(test["image"].nunique())},
        "retrieval": {k: v for k, v in recall.items() if not isinstance(v, dict)},
        "retrieval_random": recall["random"], "retrieval_train_seconds": retrieval_seconds,
        "matching": {k: match[k] for k in ("auroc", "accuracy", "f1")},
        "matching_train_seconds": matching_seconds,
        "search_100k": speed,
    }
    print(f"{'metric':<14}{'mmfuse':>10}{'random':>10}")
    for key in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10"):
        print(f"{key:<14}{recall[key]:>10.3f}{recall['random'][key]:>10.3f}")
    print(f"matching AUROC {match['auroc']:.3f}  accuracy {match['accuracy']:.3f}")
    print(f"exact search over 100k x 256: p50 {speed['p50_ms']:.1f} ms, p95 {speed['p95_ms']:.1f} ms")
    if not args.smoke:
        print(f"written to {write_result('retrieval', result)}")
    return result


if __name__ == "__main__":
    main()
