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
from benchmarks.datasets import SETS, smoke_set
from mmfuse import Config, DataConfig, TrainConfig
from mmfuse.auto import AutoSearch
from mmfuse.auto.portfolio import FROZEN_LITE0, MINILM, PRESETS

FUSIONS = ("concat", "late", "gated")
NO_LIMIT = 100_000.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="math-vision,emoji")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--math-vision", default=None, help="MATH-V's folder (its repo layout)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few easy-VQA rows, two fusions, two folds; writes nothing")
    args = parser.parse_args(argv)
    preset = dataclasses.replace(PRESETS["medium"], name="fusions", time_limit=NO_LIMIT,
                                 image_encoders=(FROZEN_LITE0,), text_encoders=(MINILM,),
                                 fusions=FUSIONS)
    if args.smoke:
        args.sets, args.seeds = "easy-vqa", "0"
        preset = dataclasses.replace(preset, fusions=FUSIONS[:2], folds=2, epochs=2)
    results: dict[str, Any] = {"fusions": preset.fusions, "sets": {}}
    for name in args.sets.split(","):
        train, _, columns = (smoke_set() if args.smoke else
                             SETS[name](args.math_vision) if name == "math-vision"
                             else SETS[name]())
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            config = Config(data=DataConfig(**columns), train=TrainConfig(seed=seed))
            search = AutoSearch(config, preset)
            search.fit(train)
            board = {r.candidate: r for r in search.leaderboard_ if r.model
                     and r.val_metric is not None}
            singles = {n: r.val_metric for n, r in board.items() if r.single_modality}
            fusions = {n: r.val_metric for n, r in board.items() if not r.single_modality}
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
                for fusion in preset.fusions},
        }
        if not args.smoke:
            print(f"written to {write_result('fusions', results)}")
    return results


if __name__ == "__main__":
    main()
