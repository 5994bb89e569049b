"""Auto mode's first candidate: linear members on every view of the data, combined out of fold.

Members are cheap and strong on small tables (a logistic regression fitted to convergence on
TF-IDF n-grams or on frozen encoder features), and the combination weighs each view by
out-of-fold evidence, so a weak modality is down-weighted instead of dragging the rest down.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from mmfuse.auto.portfolio import Preset
from mmfuse.config import Config
from mmfuse.encoders.hf_folder import pairs_image_and_text
from mmfuse.ensemble.inputs import View
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.ensemble.zero_shot import ZERO_SHOT
from mmfuse.features.cache import FeatureCache
from mmfuse.scoring import greater_is_better
from mmfuse.tasks import get_task, selection_metric
from mmfuse.training.stacking import fold_splits

NAME = "ensemble of linear members"
# Large data (judged on the validation split): members see at most this many training rows,
# in 3 folds. A linear model on frozen features has learned what it can by then, and its
# cost (k folds + refit, lbfgs on dense 1,280-d features) would otherwise grow past a budget.
LARGE_DATA_ROWS = 10_000
LARGE_DATA_FOLDS = 3


def applies(config: Config) -> bool:
    """Every task that predicts one row at a time: classification and binary (members are
    multinomial LRs and boosted classifiers), multilabel (a binary LR per label) and
    regression (ridge regressions and boosted regressors)."""
    task = get_task(config.data.task)
    return task.predicts and not task.paired


def linear_views(config: Config, preset: Preset) -> list[View]:
    """TF-IDF views of the texts, the numeric and categorical columns (a linear model and
    boosted trees), one view per frozen pretrained encoder of the preset (the packaged
    ones, or a local Hugging Face folder) and, for classes, a CLIP-style folder's image
    embeddings read by a head started from its zero-shot class prompts."""
    views = []
    if config.data.text_cols:
        views += [View("tfidf-char"), View("tfidf-word")]
    if config.data.tabular_cols:
        views.append(View("tabular"))
        if not get_task(config.data.task).multilabel:
            views.append(View("tabular-trees"))  # boosted trees: one output per row
    for kind, encoders in (("image", preset.image_encoders), ("text", preset.text_encoders)):
        if not getattr(config.data, f"{kind}_cols"):
            continue
        for encoder in encoders:
            if encoder.frozen is not False and (encoder.name in ("efficientnet-lite0", "minilm")
                                                or encoder.name.startswith("hf:")):
                views.append(View(kind, dataclasses.replace(encoder)))
                if kind == "image" and get_task(config.data.task).single_label \
                        and pairs_image_and_text(encoder.name):
                    views.append(View(ZERO_SHOT, dataclasses.replace(encoder)))
    return views


def fit_linear(config: Config, train: pd.DataFrame, val: pd.DataFrame, preset: Preset,
               cache: FeatureCache, *, small_data: bool, classes: list[str]
               ) -> tuple[EnsembleModel, np.ndarray, np.ndarray, dict[str, float]]:
    """The ensemble over ``classes`` (every label of training and validation rows), its
    probabilities and labels on the judging rows and each member's out-of-fold score (the
    selection metric). Small data: the judging rows are every row (training, then
    validation), each predicted out of fold on the same folds as the other candidates, and the
    members are fitted on every row. Large data: fitted with k folds of the training rows,
    judged on the validation rows."""
    if small_data:
        rows, k = pd.concat([train, val], ignore_index=True), preset.folds
    else:
        rows, k = train, min(preset.folds, LARGE_DATA_FOLDS)
        if len(rows) > LARGE_DATA_ROWS:
            rows = rows.sample(LARGE_DATA_ROWS, random_state=config.train.seed)
        rows = rows.reset_index(drop=True)
    rows.attrs = dict(train.attrs)
    targets = get_task(config.data.task).encode(rows["_target"].tolist(), classes)
    folds = [(np.asarray(a), np.asarray(b)) for a, b in fold_splits(targets, k, config.train.seed)]
    model, scores = EnsembleModel.fit(config, rows, linear_views(config, preset), folds, cache,
                                      classes=classes)
    metric = selection_metric(config)
    sign = 1.0 if greater_is_better(metric) else -1.0  # scores: higher is better
    judged = model.out_of_fold if small_data else model.predict(val)[0]
    labels = model.out_of_fold_labels if small_data else model.decide(judged)
    return model, judged, labels, {name: sign * score for name, score in scores.items()}
