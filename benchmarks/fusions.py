"""Does each fusion reach the single modalities of its own encoders? Over several seeds.

Auto mode's candidates judged as the search judges them (5-fold out-of-fold macro-F1, the
small-data regularisation of fusions) but without a time limit, so that every candidate
finishes its folds and the comparison is not decided by which folds fit a time share. Each
seed changes the folds, the initialisation and the batches. Preset medium's frozen encoders
(Lite0 + MiniLM) and fusions (`concat`, `late`, `gated`).

Run: .venv/bin/python -m benchmarks.fusions [--sets math-vision,emoji] [--seeds 0,1,2]
     [--math-vision DIR]   (writes benchmarks/results/fusions.json)
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from benchmarks.common import write_result
from benchmarks.datasets import SETS
from mmfuse import Config, DataConfig, TrainConfig
from mmfuse.auto import AutoSearch
from mmfuse.auto.portfolio import FROZEN_LITE0, MINILM, PRESETS

FUSIONS = ("concat", "late", "gated")
NO_LIMIT = 100_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="math-vision,emoji")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--math-vision", default=None, help="MATH-V's folder (its repo layout)")
    args = parser.parse_args()
    preset = dataclasses.replace(PRESETS["medium"], name="fusions", time_limit=NO_LIMIT,
                                 image_encoders=(FROZEN_LITE0,), text_encoders=(MINILM,),
                                 fusions=FUSIONS)
    results: dict[str, Any] = {"fusions": FUSIONS, "sets": {}}
    for name in args.sets.split(","):
        train, _, columns = (SETS[name](args.math_vision) if name == "math-vision"
                             else SETS[name]())
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            config = Config(data=DataConfig(**columns), train=TrainConfig(seed=seed))
            search = AutoSearch(config, preset)
            search.fit(train)
            board = {r["candidate"]: r for r in search.leaderboard_ if r.get("model")
                     and r["val_metric"] is not None}
            singles = {n: r["val_metric"] for n, r in board.items() if r["single_modality"]}
            fusions = {n: r["val_metric"] for n, r in board.items() if not r["single_modality"]}
            runs.append({"seed": seed, "singles": singles, "fusions": fusions,
                         "every_fusion_at_least_every_single": all(
                             f >= max(singles.values()) for f in fusions.values())})
            print(f"{name} seed {seed}: " + ", ".join(
                f"{n} {v:.4f}" for n, v in (singles | fusions).items()))
        results["sets"][name] = {
            "runs": runs,
            "fusion_mean_minus_best_single_mean": {
                fusion: sum(r["fusions"][f] - max(r["singles"].values()) for r in runs
                            for f in r["fusions"] if f.startswith(fusion)) / len(runs)
                for fusion in FUSIONS},
        }
        path = write_result("fusions", results)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
