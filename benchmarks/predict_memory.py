"""Peak memory of prediction as the manifest grows 10x: streamed (`predict_to_csv`, what
`mmfuse predict` does) against everything-in-memory (`predict_frame`).

A model (frozen EfficientNet-Lite0 + MiniLM, concat) is trained briefly on easy-VQA; the
manifests are easy-VQA's test rows repeated to ~10k and ~100k rows; the feature cache is warm,
so this measures the pipeline, not the encoders. Each measurement runs in a fresh process.

Run: .venv/bin/python -m benchmarks.predict_memory [--smoke]
(writes benchmarks/results/predict_memory.json; --smoke: tiny manifests, writes nothing)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import write_result
from benchmarks.speed import peak_rss_mb
from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.data.builtin import DATASETS

SIZES = (10_000, 100_000)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny manifests; writes nothing")
    args = parser.parse_args(argv)
    sizes, fitted_rows = ((40, 80), 64) if args.smoke else (SIZES, 3000)
    dataset = DATASETS.get("easy-vqa")()
    train, test = dataset.splits["train"], dataset.splits["test"]
    test = test.head(sizes[0]) if args.smoke else test
    result: dict = {"rows": list(sizes), "peak_rss_mb": {}}
    with tempfile.TemporaryDirectory(prefix="mmfuse-memory-") as temp:
        folder = Path(temp)
        cache = str(folder / "cache")
        config = Config(data=DataConfig(image_cols=["image"], text_cols=["question"],
                                        label_col="answer"),
                        model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0",
                                                                      image_size=128)),
                        train=TrainConfig(epochs=1), cache_dir=cache)
        predictor = Predictor(config).fit(train.sample(fitted_rows, random_state=0))
        predictor.save(folder / "model")
        predictor.predict_frame(test)  # warm the feature cache for the test rows
        for rows in sizes:
            repeats = -(-rows // len(test))
            pd.concat([test] * repeats).head(rows).to_csv(folder / f"{rows}.csv", index=False)
        load = f"from mmfuse import Predictor\np = Predictor.load({str(folder / 'model')!r})\n"
        for rows in sizes:
            manifest = str(folder / f"{rows}.csv")
            result["peak_rss_mb"][f"streamed {rows}"] = peak_rss_mb(
                load + f"p.predict_to_csv({manifest!r}, {str(folder / 'out.csv')!r})")
            result["peak_rss_mb"][f"in memory {rows}"] = peak_rss_mb(
                load + f"p.predict_frame({manifest!r}).to_csv({str(folder / 'out2.csv')!r})")
    memory = result["peak_rss_mb"]
    small, large = sizes
    result["streamed_growth"] = memory[f"streamed {large}"] / memory[f"streamed {small}"]
    result["in_memory_growth"] = memory[f"in memory {large}"] / memory[f"in memory {small}"]
    for name, value in memory.items():
        print(f"{name:>20} rows: {value:8.0f} MB peak RSS")
    print(f"streamed growth x{result['streamed_growth']:.2f}, "
          f"in memory x{result['in_memory_growth']:.2f} for {large // small}x the rows")
    if not args.smoke:
        print(f"written to {write_result('predict_memory', result)}")
    return result


if __name__ == "__main__":
    main()
