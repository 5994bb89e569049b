"""Auto mode on tables with numeric and categorical columns beside images and text.

For each set: auto mode with and without the tabular columns, each with a fresh (cold)
feature cache as a new user's first run has, and the scikit-learn anchors: boosted trees on
the tabular columns, TF-IDF + LR on the text, and their 5-fold stack. Test macro-F1.

- listing (generated, ``tabular_data.py``): the label needs the title and a price x brand
  interaction; photos say nothing.
- math-vision (real, MIT): competition-math figures and questions -> subject, with the
  problem's difficulty level (a number) and its answer (a category: "A".."E" or a value)
  beside them. Read from ``--math-vision DIR``; never copied here.

    python -m benchmarks.tabular [--sets listing,math-vision] [--preset fast] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, StackingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler

from benchmarks.common import write_result
from benchmarks.datasets import math_vision
from benchmarks.quality import frozen_features
from benchmarks.tabular_data import listing_table
from mmfuse import Config, DataConfig
from mmfuse.auto import AutoSearch

DATA = Path(__file__).parent / "data"


def listing(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = DATA / "listing"
    frame = listing_table(folder, rows, seed=0)
    frame["photo"] = [str(folder / p) for p in frame["photo"]]
    frame.attrs["base_dir"] = "/"
    cut = int(0.7 * rows)
    train, test = frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
    for part in (train, test):
        part.attrs["base_dir"] = "/"
    return train, test, {"image_cols": ["photo"], "text_cols": ["title"], "label_col": "label",
                         "num_cols": ["price"], "cat_cols": ["brand", "condition"]}


def math_vision_table(folder: str | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    train, test, columns = math_vision(Path(folder) if folder else None)
    source = Path(folder) if folder else None
    raw = pd.read_json((source or Path("../shared/datasets/math-vision")) / "data" / "test.jsonl",
                       lines=True, dtype=False).set_index("id")
    for part in (train, test):
        part["level"] = [raw.loc[i, "level"] for i in part["id"]]
        part["answer"] = [str(raw.loc[i, "answer"]) for i in part["id"]]
    return train, test, {**columns, "num_cols": ["level"], "cat_cols": ["answer"]}


def anchors(train: pd.DataFrame, test: pd.DataFrame, columns: dict) -> dict[str, float]:
    """scikit-learn alone, each modality by itself and together: trees on the tabular
    columns, TF-IDF LR on the text, LR on frozen Lite0 features of the image, and the 5-fold
    stack of trees and text."""
    label, text = columns["label_col"], columns["text_cols"][0]
    nums, cats = columns["num_cols"], columns["cat_cols"]

    def numbers(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.apply(pd.to_numeric, errors="coerce")

    tabular = ColumnTransformer([
        ("num", FunctionTransformer(numbers), nums),
        # rare levels pooled, as HistGradientBoosting takes at most 255 categories
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                               encoded_missing_value=np.nan, min_frequency=3,
                               max_categories=254), cats)])
    trees = make_pipeline(tabular, HistGradientBoostingClassifier(
        categorical_features=[False] * len(nums) + [True] * len(cats), random_state=0))
    words = make_pipeline(ColumnTransformer([("text", TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2), text)]),
        LogisticRegression(C=10, max_iter=1000))
    stack = StackingClassifier([("trees", trees), ("text", words)],
                               LogisticRegression(max_iter=1000), cv=5)
    x_train, x_test = clean(train, columns), clean(test, columns)
    out = {}
    for name, model in (("sklearn boosted trees (tabular)", trees),
                        ("sklearn TF-IDF + LR (text)", words),
                        ("sklearn 5-fold stack of both", stack)):
        model.fit(x_train, train[label].astype(str))
        out[name] = macro_f1(test[label], model.predict(x_test))
    images = [frozen_features(part, columns, ("image",)) for part in (train, test)]
    scaler = StandardScaler().fit(images[0])
    image_model = LogisticRegression(C=0.01, max_iter=2000).fit(scaler.transform(images[0]),
                                                                train[label].astype(str))
    out["sklearn LR on frozen Lite0 features (image)"] = macro_f1(
        test[label], image_model.predict(scaler.transform(images[1])))
    return out


def clean(frame: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """Empty cells as NaN (categories) and "" (text), as the anchors' encoders want them."""
    frame = frame.copy()
    for column in columns["cat_cols"]:
        frame[column] = frame[column].replace("", np.nan).astype(object)
    frame[columns["text_cols"][0]] = frame[columns["text_cols"][0]].fillna("").astype(str)
    return frame


def macro_f1(truth: pd.Series, predicted: Any) -> float:
    return float(f1_score(truth.astype(str), np.asarray(predicted).astype(str), average="macro"))


def auto(train: pd.DataFrame, test: pd.DataFrame, columns: dict, preset: str,
         with_tabular: bool) -> dict[str, Any]:
    """Auto mode with a fresh feature cache (a new user's first run)."""
    data = dict(columns) if with_tabular else {**columns, "num_cols": [], "cat_cols": []}
    with tempfile.TemporaryDirectory(prefix="mmfuse-cold-cache-") as cache:
        search = AutoSearch(Config(data=DataConfig(**data), cache_dir=cache), preset)
        started = time.perf_counter()
        search.fit(train)
        wall = time.perf_counter() - started
        predicted = search.best_.predict(test)
    return {"macro_f1": macro_f1(test[columns["label_col"]], predicted),
            "chosen": search.best_name_, "wall_s": round(wall, 1),
            "time_limit_s": search.time_limit, "cache": "cold (fresh folder)"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="listing,math-vision")
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--math-vision", default=None, help="MATH-V folder (original layout)")
    parser.add_argument("--listing-rows", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny listing table, fast preset, a 30 s limit; writes nothing")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"preset": args.preset, "sets": {}}
    for name in args.sets.split(","):
        if args.smoke:
            train, test, columns = listing(120)
        elif name == "listing":
            train, test, columns = listing(args.listing_rows)
        else:
            train, test, columns = math_vision_table(args.math_vision)
        rows: dict[str, Any] = anchors(train, test, columns)
        preset = "fast" if args.smoke else args.preset
        for with_tabular in (True, False):
            key = f"auto mode, {'with' if with_tabular else 'without'} the tabular columns"
            rows[key] = auto(train, test, columns, preset, with_tabular)
        ours = rows["auto mode, with the tabular columns"]["macro_f1"]
        sklearn = {k: v for k, v in rows.items() if k.startswith("sklearn")}
        results["sets"][name] = {
            "train_rows": len(train), "test_rows": len(test),
            "tabular_columns": columns["num_cols"] + columns["cat_cols"],
            "auto_with_tabular_beats_auto_without": ours > rows[
                "auto mode, without the tabular columns"]["macro_f1"],
            "auto_at_least_every_anchor": ours >= max(sklearn.values()),
            "results": rows}
        print(f"\n{name}: {len(train)} train / {len(test)} test rows (test macro-F1)")
        for model, value in rows.items():
            score = value if isinstance(value, float) else value["macro_f1"]
            extra = "" if isinstance(value, float) else (
                f"  chose {value['chosen']}, {value['wall_s']} s, cold cache")
            print(f"  {model:<48}{score:.4f}{extra}")
        if args.smoke:
            break
        print(f"\nwritten to {write_result('tabular', results)}")  # after each set
    return results


if __name__ == "__main__":
    main()
