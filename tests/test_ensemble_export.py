"""An ensemble exported to one ONNX file: boosted trees against scikit-learn's own
prediction, and whole ensembles of every task and combination against their ``predict``
through onnxruntime (the check ``export_onnx`` runs on the file it wrote)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from test_every_command import task_table

from mmfuse import EncoderConfig, Predictor
from mmfuse.data.rows import read_rows
from mmfuse.ensemble.combine import Stacker, ValueStacker
from mmfuse.ensemble.inputs import View
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.ensemble.tree_graph import TreeGraph
from mmfuse.ensemble.trees import TreeMember
from mmfuse.features.cache import FeatureCache
from mmfuse.serving.export import export_onnx
from mmfuse.tasks import get_task


def tabular(n: int, seed: int) -> np.ndarray:
    """A number (some missing), a category of uneven ids (some missing) and another number."""
    rng = np.random.default_rng(seed)
    x = np.c_[rng.normal(size=n), rng.choice([0, 1, 2, 4, 7], n), rng.normal(size=n)]
    x[::7, 0] = np.nan
    x[::11, 1] = np.nan
    return x


@pytest.mark.parametrize("n_classes", [2, 4, None])
def test_boosted_trees_as_tensors_predict_as_scikit_learn(n_classes: int | None) -> None:
    x = tabular(400, seed=0)
    signal = np.nan_to_num(x[:, 1]) + (np.nan_to_num(x[:, 0]) > 0)
    test = x[300:].copy()
    test[:5, 1] = 9  # categories the trees never saw: read as missing
    test[5:8, 1] = 3
    if n_classes is None:
        model = HistGradientBoostingRegressor(max_iter=30, categorical_features=[1]).fit(
            x[:300], signal[:300])
        member = TreeMember(None, model=model)
        expected = model.predict(test)[:, None]
    else:
        model = HistGradientBoostingClassifier(max_iter=30, categorical_features=[1]).fit(
            x[:300], (signal[:300] % n_classes).astype(int))
        # one class more in the ensemble than the trees saw: its probability is 0
        member = TreeMember([str(c) for c in range(n_classes + 1)], model=model)
        expected = np.c_[model.predict_proba(test), np.zeros(len(test))]
    actual = TreeGraph(member).trees(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-6)


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tables")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "binary", "multilabel", "regression"])
def test_every_tasks_ensemble_exports_with_its_combination(tables: Path, task: str) -> None:
    """TF-IDF of characters and words, a frozen image encoder, the tabular columns (linear
    and trees where the task has them), combined by selection and by a stacker."""
    folder = tables / task
    folder.mkdir()
    frame = task_table(folder, task)
    frame["price"] = [("" if i % 9 == 0 else f"{1.5 * i:.1f}") for i in range(len(frame))]
    frame["brand"] = [("" if i % 7 == 0 else "abc"[i % 3]) for i in range(len(frame))]
    frame.to_csv(folder / "data.csv", index=False)
    from conftest import tiny_config

    cfg = tiny_config(folder)
    cfg.data.task, cfg.data.num_cols, cfg.data.cat_cols = task, ["price"], ["brand"]
    rows = read_rows(folder / "data.csv", cfg, folder)
    halves = np.arange(len(rows)) % 2
    folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
    views = [View("tfidf-char"), View("tfidf-word"), View("tabular"),
             View("image", EncoderConfig("efficientnet-lite0", image_size=32))]
    if not get_task(task).multilabel:  # trees read one label per row
        views.append(View("tabular-trees"))
    fitted, _ = EnsembleModel.fit(cfg, rows, views, folds, FeatureCache(folder / "cache"))
    y = np.asarray(fitted.task.encode(rows["_target"].tolist(), fitted.classes))
    n = len(fitted.members)
    variants = {"selection": dataclasses.replace(
        fitted, method="selection", stacker=None, weights=np.full(n, 1 / n))}
    if not get_task(task).multilabel:  # a stacker combines one label per row
        stacker = (ValueStacker().fit(fitted.members_out_of_fold, y) if fitted.classes is None
                   else Stacker().fit(fitted.members_out_of_fold, y, len(fitted.classes)))
        variants["stacking"] = dataclasses.replace(fitted, method="stacking", stacker=stacker)
    for name, ensemble in variants.items():
        result = export_onnx(Predictor.of(ensemble), folder / f"{name}.onnx", rows)
        assert result["max_abs_difference"] < 1e-4, name
        assert {"tfidf-char.ngram_ids", "tfidf-word.ngram_ids", "image.pixels"} <= set(
            result["inputs"])


def test_long_texts_export_in_windows_as_their_cached_features_are_read(tmp_path: Path) -> None:
    """A frozen transformer reads a text longer than its window in windows whose features
    are averaged (the feature cache's way): the exported network and ensemble do too."""
    from conftest import tiny_config

    frame = task_table(tmp_path, "classification")
    frame["caption"] = [f"{c} " + " ".join(["word"] * (3 + 7 * (i % 4)))  # 1 to 3 windows
                        for i, c in enumerate(frame["caption"])]
    frame.to_csv(tmp_path / "data.csv", index=False)
    minilm = EncoderConfig("minilm", max_length=12, max_windows=3)
    cfg = tiny_config(tmp_path, fusion="concat")
    cfg.model.text_encoder, cfg.train.epochs = minilm, 1
    network = Predictor(cfg).fit(tmp_path / "data.csv")
    rows = network.read(tmp_path / "data.csv")
    result = export_onnx(network, tmp_path / "network.onnx", rows)
    assert "caption.window_mask" in result["inputs"] and result["max_abs_difference"] < 1e-4
    halves = np.arange(len(rows)) % 2
    folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
    ensemble, _ = EnsembleModel.fit(cfg, rows, [View("text", minilm)], folds,
                                    FeatureCache(tmp_path / "cache"))
    result = export_onnx(Predictor.of(ensemble), tmp_path / "ensemble.onnx", rows)
    assert "caption.window_mask" in result["inputs"] and result["max_abs_difference"] < 1e-4


def test_a_gru_network_exports_on_texts_of_uneven_lengths(tmp_path: Path) -> None:
    """Packed sequences trace into ONNX's GRU: the parity check on real rows is the judge."""
    from conftest import make_rows, tiny_config

    frame = make_rows(tmp_path, 64, seed=1)
    frame["caption"] = [c + " and more words" * (i % 4) for i, c in enumerate(frame["caption"])]
    frame.to_csv(tmp_path / "data.csv", index=False)
    cfg = tiny_config(tmp_path, fusion="concat")  # a GRU reads the texts
    cfg.train.epochs = 1
    network = Predictor(cfg).fit(tmp_path / "data.csv")
    result = export_onnx(network, tmp_path / "gru.onnx", tmp_path / "data.csv")
    assert result["max_abs_difference"] < 1e-4 and "caption.input_ids" in result["inputs"]
