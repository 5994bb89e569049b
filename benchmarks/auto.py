"""Auto mode against every fixed candidate it tried and against scikit-learn baselines.

For each set: `AutoSearch` (preset medium, its default time limit) on the training rows; then,
on the test rows, the chosen model, every candidate of the portfolio as the search fitted it
(on small data: its first fold's model, trained on 80 % of the rows; the choice is refitted on
the 90 % split), and what a careful scikit-learn user does in an afternoon:
- logistic regression on frozen EfficientNet-Lite0 + MiniLM features (standardised);
- TF-IDF (character 1-3 + word 1-2 grams) + logistic regression on the text alone;
- the same TF-IDF next to the frozen image features, one logistic regression on both.
- 5-fold stacking of TF-IDF-LR and image-LR (a logistic regression on their out-of-fold
  log-probabilities), and the same with class-balanced weights in that meta-learner.
The search's wall time is measured against its limit, from an empty feature cache (a new
user's first run), with the seconds its frozen features took.

Run: .venv/bin/python -m benchmarks.auto [--sets easy-vqa,emoji] [--preset medium]
(writes benchmarks/results/auto.json)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_union
from sklearn.preprocessing import StandardScaler

from benchmarks.common import RESULTS, write_result
from benchmarks.datasets import SETS, smoke_set
from benchmarks.quality import frozen_features, run_logistic_regression, scores
from mmfuse import Config, DataConfig
from mmfuse.auto import AutoSearch
from mmfuse.auto.leaderboard import singles_of

LR_C = 10.0  # TF-IDF features are sparse and L2-normalised: weaker regularisation fits better
MAX_ITER = 500  # lbfgs on 38k rows x (n-grams + 1,280 image features): 3,000 took over 15 min


def tfidf() -> Any:
    return make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                        token_pattern=r"(?u)\b\w+\b"),
    )


def run_tfidf(train: pd.DataFrame, test: pd.DataFrame, columns: dict, with_image: bool) -> dict:
    """TF-IDF of the text (+ standardised frozen image features) -> logistic regression."""
    started = time.perf_counter()
    text = columns["text_cols"][0]
    vectorizer = tfidf().fit(train[text])
    train_images = frozen_features(train, columns, ("image",), None) if with_image else None
    scaler = StandardScaler().fit(train_images) if with_image else None

    def features(frame: pd.DataFrame, images: np.ndarray | None) -> sp.csr_matrix:
        parts = [vectorizer.transform(frame[text])]
        if scaler is not None:
            parts.append(sp.csr_matrix(scaler.transform(images)))
        return sp.hstack(parts).tocsr()

    model = LogisticRegression(max_iter=MAX_ITER, C=LR_C).fit(features(train, train_images),
                                                           train[columns["label_col"]])
    seconds = time.perf_counter() - started
    test_images = frozen_features(test, columns, ("image",), None) if with_image else None
    predicted = model.predict(features(test, test_images))
    return scores(test[columns["label_col"]], predicted, seconds)


def run_stacking(train: pd.DataFrame, test: pd.DataFrame, columns: dict
                 ) -> tuple[dict, np.ndarray, dict]:
    """5-fold stacking of TF-IDF-LR (text) and LR on frozen image features: out-of-fold
    log-probabilities -> a logistic-regression meta-learner (scikit-learn only). Returns its
    scores, its predicted test labels, and the scores of the same stack whose meta-learner
    weighs classes by inverse frequency (``class_weight="balanced"``: what a careful user
    tries when the metric is macro-F1 and some classes are rare)."""
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    text, label = columns["text_cols"][0], columns["label_col"]
    y = train[label].to_numpy()
    text_model = make_pipeline(tfidf(), LogisticRegression(max_iter=MAX_ITER, C=LR_C))
    image_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, C=0.01))
    train_images = frozen_features(train, columns, ("image",), None)
    test_images = frozen_features(test, columns, ("image",), None)
    texts_train, texts_test = train[text].fillna(""), test[text].fillna("")
    oof = [cross_val_predict(text_model, texts_train, y, cv=5, method="predict_proba"),
           cross_val_predict(image_model, train_images, y, cv=5, method="predict_proba")]
    fitted = [text_model.fit(texts_train, y).predict_proba(texts_test),
              image_model.fit(train_images, y).predict_proba(test_images)]
    seconds = time.perf_counter() - started
    predicted = {}
    for weighting in (None, "balanced"):
        meta = LogisticRegression(max_iter=MAX_ITER, class_weight=weighting).fit(
            np.log(np.clip(np.hstack(oof), 1e-7, 1)), y)
        predicted[weighting] = meta.predict(np.log(np.clip(np.hstack(fitted), 1e-7, 1)))
    return (scores(test[label], predicted[None], seconds), predicted[None],
            scores(test[label], predicted["balanced"], seconds))


def argmax_macro_f1(search: AutoSearch, test: pd.DataFrame, columns: dict) -> float | None:
    """Test macro-F1 of the choice's probabilities labelled by their arg-max, where its labels
    are decided otherwise (an ensemble's shift towards rare classes); else None."""
    from sklearn.metrics import f1_score

    shift = getattr(search.best_.fitted_, "decision_shift", None)
    if shift is None or not shift.any():
        return None
    probabilities = search.best_.predict_proba(test)
    predicted = probabilities.columns.to_numpy()[probabilities.to_numpy().argmax(axis=1)]
    truth = test[columns["label_col"]].astype(str).to_numpy()
    return float(f1_score(truth, predicted.astype(str), average="macro", zero_division=0,
                          labels=probabilities.columns.astype(str).tolist()))  # as evaluate


def paired_difference(truth: np.ndarray, ours: np.ndarray, theirs: np.ndarray,
                      draws: int = 2000) -> dict[str, Any]:
    """Test macro-F1 of ``ours`` minus ``theirs`` (predicted labels of the same rows) and its
    90 % bootstrap interval over the rows: how much of a gap the test rows can tell apart."""
    from sklearn.metrics import f1_score

    labels = sorted(set(truth))

    def gap(rows: np.ndarray) -> float:
        return float(f1_score(truth[rows], ours[rows], labels=labels, average="macro",
                              zero_division=0) - f1_score(truth[rows], theirs[rows], labels=labels,
                                                          average="macro", zero_division=0))

    rng = np.random.default_rng(0)
    resampled = [gap(rng.integers(0, len(truth), len(truth))) for _ in range(draws)]
    return {"difference": gap(np.arange(len(truth))),
            "interval_90": [float(np.percentile(resampled, 5)),
                            float(np.percentile(resampled, 95))]}


def cross_fitted(search: AutoSearch, repeats: int = 3) -> dict[str, float] | None:
    """How each way of combining the search's members generalises, measured on the training
    rows alone: combinations fitted on one half of the out-of-fold rows and scored (macro-F1)
    on the other half, over ``repeats`` x 2 stratified splits. Small data only (the members'
    out-of-fold probabilities exist there)."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    from mmfuse.ensemble.combine import blend, ensemble_selection, nested_stacking

    bag = search.bag_
    if bag is None or bag.linear is None or not bag.networks:
        return None
    y, linear, every = bag.y, bag.linear.members_out_of_fold, bag.members()[1]
    n_classes = every[0].shape[1]

    def score(truth: np.ndarray, probabilities: np.ndarray) -> float:
        return float(f1_score(truth, probabilities.argmax(1), average="macro",
                              labels=range(n_classes), zero_division=0))

    def selection(members, fit, held):
        weights = ensemble_selection([m[fit] for m in members], y[fit], score)
        return blend([m[held] for m in members], weights)

    def stacking(members, fit, held):
        stacker = nested_stacking([m[fit] for m in members], y[fit], n_classes, score, 0)[2]
        return stacker.predict_proba([m[held] for m in members])

    ways = {"selection over every member (auto mode)": (selection, every),
            "stacked LR over every member": (stacking, every),
            "selection over the linear members": (selection, linear),
            "stacked LR over the linear members": (stacking, linear)}
    scores: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(repeats):
        for fit, held in StratifiedKFold(2, shuffle=True, random_state=repeat).split(y, y):
            for name, (combine, members) in ways.items():
                scores[name].append(score(y[held], combine(members, fit, held)))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--math-vision", default=None, help="MATH-V folder (original layout)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few easy-VQA rows, preset fast for 30 s; writes nothing")
    parser.add_argument("--save-as", default=None,
                        help="the results' name for a single set read from another folder "
                             "(e.g. math-vision-published: MATH-V with its original images)")
    args = parser.parse_args(argv)
    if args.save_as and "," in args.sets:
        parser.error("--save-as names one set: pass a single --sets")
    if args.smoke:
        args.sets, args.preset = "easy-vqa", "fast"
    results: dict[str, Any] = {"preset": args.preset, "sets": {}}
    previous = RESULTS / "auto.json"
    if previous.exists() and not args.smoke:  # `--sets emoji` re-measures one, keeps others
        results["sets"] = json.loads(previous.read_text()).get("sets", {})
    for name in args.sets.split(","):
        train, test, columns = (smoke_set() if args.smoke else
                                SETS[name](args.math_vision) if name == "math-vision" and
                                args.math_vision else SETS[name]())
        # A new user's first run: an empty feature cache, of this set's own
        cold = tempfile.mkdtemp(prefix="mmfuse-cold-cache-")
        search = AutoSearch(Config(data=DataConfig(**columns), cache_dir=cold), args.preset,
                            time_limit=30 if args.smoke else None, keep_candidates=True)
        started = time.perf_counter()
        search.fit(train)
        wall = time.perf_counter() - started
        rows: dict[str, dict[str, Any]] = {}
        for candidate, predictor in search.candidates_.items():
            metrics = predictor.evaluate(test)
            board = next(r for r in search.leaderboard_ if r.candidate == candidate)
            rows[candidate] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                               "val_metric": board.val_metric, "train_seconds": board.fit_s,
                               "chosen": candidate == search.best_name_}
        rows["sklearn LR on frozen features"] = run_logistic_regression(train, test, columns, None)
        rows["sklearn TF-IDF + LR (text)"] = run_tfidf(train, test, columns, with_image=False)
        rows["sklearn TF-IDF + image features + LR"] = run_tfidf(train, test, columns, True)
        stacking, stacked, balanced = run_stacking(train, test, columns)
        rows["sklearn 5-fold stacking of TF-IDF-LR and image-LR"] = stacking
        rows["sklearn 5-fold stacking, balanced meta-learner"] = balanced
        # The choice itself (after k-fold judging, refitted on the plain split) next to the
        # candidates as the search fitted them.
        metrics = search.best_.evaluate(test)
        auto = rows["auto mode's choice"] = {
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "val_metric": rows[search.best_name_]["val_metric"], "train_seconds": None,
            "chosen": True, "candidate": search.best_name_}
        rows[search.best_name_]["chosen"] = False
        singles = [rows[r.candidate]["macro_f1"] for r in search.leaderboard_
                   if r.single_modality and r.candidate in rows]
        # A fusion the time limit cut after fewer folds is scored on fewer rows than the
        # singles: its validation score is not comparable to theirs, so it is listed apart.
        networks = [r for r in search.leaderboard_ if r.model and r.val_metric is not None]
        every_fold = max(r.folds or 1 for r in networks)
        fusions = [r for r in networks if not r.single_modality
                   and (r.folds or 1) == every_fold]
        cut_short = [r.candidate for r in networks if not r.single_modality
                     and (r.folds or 1) < every_fold]
        single_val = max(r.val_metric for r in search.leaderboard_ if r.single_modality
                         and r.val_metric is not None)
        sklearn = [v["macro_f1"] for k, v in rows.items() if k.startswith("sklearn")]
        fixed = [v["macro_f1"] for k, v in rows.items()
                 if not k.startswith("sklearn") and k != "auto mode's choice"]
        key = args.save_as or name
        results["sets"][key] = {
            "train_rows": len(train), "test_rows": len(test), "chosen": search.best_name_,
            "time_limit_s": search.time_limit, "search_wall_s": round(wall, 1),
            "feature_cache": "cold (empty at the start)",
            "frozen_features_s": round(search.encoding_.seconds, 1),
            "time_limit_honoured": wall <= 1.1 * search.time_limit,
            "skipped": [r.candidate for r in search.leaderboard_ if r.val_metric is None],
            "auto_test_macro_f1": auto["macro_f1"],
            "auto_beats_best_single_modality_on_test": auto["macro_f1"] >= max(singles),
            "auto_beats_every_sklearn_baseline_on_test": auto["macro_f1"] >= max(sklearn),
            "auto_beats_every_fixed_candidate_on_test": auto["macro_f1"] >= max(fixed),
            "auto_test_ece": metrics["ece"],
            # the same probabilities, labelled by their arg-max: what the label decision adds
            "auto_test_macro_f1_with_argmax_labels": argmax_macro_f1(search, test, columns),
            "fusions_judged_on_fewer_folds": cut_short,
            # judged as the search judges (out of fold on small data), and on the test rows;
            # the fusions that finished every fold
            "every_fusion_at_least_best_single_modality_on_validation": all(
                r.val_metric >= single_val for r in fusions),
            "every_fusion_at_least_best_single_modality_on_test": all(
                rows[r.candidate]["macro_f1"] >= max(singles) for r in fusions),
            # issue 16's item 4: each fusion against the single modalities of its own encoders
            # (a fine-tuned MiniLM is not part of a fusion of frozen encoders)
            "every_fusion_at_least_its_own_single_modalities_on_validation": all(
                r.val_metric >= max(s.val_metric for s in singles_of(search.leaderboard_,
                                                                           r.model))
                for r in fusions),
            "ensemble_weights": {r.candidate.removeprefix("member: "): r.weight
                                 for r in search.leaderboard_ if r.weight},
            "auto_wall_within_3_minutes": wall <= 180,
            "cross_fitted_macro_f1": cross_fitted(search),
            "auto_minus_stacking_anchor_on_test": paired_difference(
                test[columns["label_col"]].astype(str).to_numpy(),
                np.asarray(search.best_.predict(test)).astype(str), stacked.astype(str)),
            "results": rows,
        }
        shutil.rmtree(cold, ignore_errors=True)
        print(f"\n{key} ({len(train)} train / {len(test)} test rows); auto chose "
              f"{search.best_name_} in {wall:.0f} s (limit {search.time_limit:.0f} s; cold "
              f"cache, frozen features {search.encoding_.seconds:.0f} s of it)")
        print(f"{'model':<48}{'val':>8}{'test acc':>10}{'test F1':>10}{'train s':>10}")
        for model, values in rows.items():
            val = values.get("val_metric")
            print(f"{model:<48}{'' if val is None else f'{val:.4f}':>8}"
                  f"{values['accuracy']:>10.4f}{values['macro_f1']:>10.4f}"
                  f"{values['train_seconds'] or 0:>10.1f}{'  <- auto' if values.get('chosen') else ''}")
        for way, value in (results["sets"][key]["cross_fitted_macro_f1"] or {}).items():
            print(f"cross-fitted on the training rows: {way:<45}{value:.4f}")
        gap = results["sets"][key]["auto_minus_stacking_anchor_on_test"]
        print(f"auto minus the stacking anchor on the test rows: {gap['difference']:+.4f} "
              f"(90 % bootstrap interval {gap['interval_90'][0]:+.4f} to "
              f"{gap['interval_90'][1]:+.4f})")
        if not args.smoke:  # after every set: a long run keeps what it has
            print(f"\nwritten to {write_result('auto', results)}")
    return results


if __name__ == "__main__":
    main()
