"""The ensemble of linear members: each member against scikit-learn, ensemble selection on a
constructed case, and the ensemble as a model folder every command can use or refuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_rows
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from mmfuse import Config, DataConfig, EncoderConfig, Predictor
from mmfuse.cli import app
from mmfuse.data.rows import read_rows
from mmfuse.ensemble import members as linear
from mmfuse.ensemble.combine import blend, ensemble_selection, nested_selection
from mmfuse.ensemble.inputs import MemberInputs, View
from mmfuse.ensemble.members import LinearMember
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.features.cache import FeatureCache
from mmfuse.tasks.decision import decide, fit_shift, nested_decisions
from mmfuse.training.stacking import fold_splits

COLOURS = ["red", "green", "blue"]


def colour_rows(folder: Path, n: int, seed: int) -> pd.DataFrame:
    """The label is the colour the caption names (the image is the colour too)."""
    frame = make_rows(folder, n, seed=seed)
    frame["label"] = [next(c for c in COLOURS if c in caption) for caption in frame["caption"]]
    return frame


def config(tmp_path: Path) -> Config:
    cfg = Config(data=DataConfig(image_cols=["image"], text_cols=["caption"], label_col="label"),
                 cache_dir=str(tmp_path / "cache"))
    cfg.train.num_workers = 0
    return cfg


def test_a_tfidf_member_is_scikit_learns_pipeline(tmp_path, monkeypatch) -> None:
    """Same TF-IDF and logistic regression, fitted to convergence: the same probabilities."""
    monkeypatch.setattr(linear, "TOL", 1e-10)
    monkeypatch.setattr(linear, "MAX_ITER", 10_000)
    cfg = config(tmp_path)
    rows = read_rows(colour_rows(tmp_path, 60, seed=0), cfg, tmp_path, base_dir=tmp_path)
    y = np.asarray([COLOURS.index(t) for t in rows["_target"]])
    inputs = MemberInputs.from_rows(rows, cfg, FeatureCache(None), {})
    ours = LinearMember(View("tfidf-word"), COLOURS).fit(inputs, y).predict_proba(inputs)
    vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                 min_df=2, token_pattern=r"(?u)\b\w+\b")
    x = vectorizer.fit_transform(rows["caption"])
    reference = LogisticRegression(C=linear.C_BY_VIEW["tfidf-word"], max_iter=10_000,
                                   tol=1e-10).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_ensemble_selection_weighs_out_a_member_that_only_adds_noise() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    good[:60] = rng.dirichlet(np.ones(3), 60)  # right on 80 % of the rows
    noise = rng.dirichlet(np.ones(3), 300)

    def accuracy(truth: np.ndarray, probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(1) == truth).mean())

    weights = ensemble_selection([noise, good, noise[::-1]], y, accuracy)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1] == 1.0 and weights[0] == weights[2] == 0.0


def test_selection_is_judged_on_rows_that_did_not_choose_its_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    noise = [rng.dirichlet(np.ones(3), 240) for _ in range(8)]  # no member knows anything

    def accuracy(truth: np.ndarray, probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(1) == truth).mean())

    in_sample = accuracy(y, blend(noise, ensemble_selection(noise, y, accuracy)))
    value, out_of_fold, weights = nested_selection(noise, y, accuracy, seed=0)
    assert value == accuracy(y, out_of_fold) < in_sample  # the weights' luck is not counted
    np.testing.assert_array_equal(weights, ensemble_selection(noise, y, accuracy))


def test_labels_favour_rare_classes_only_where_macro_f1_clearly_gains() -> None:
    """Exact posteriors of three overlapping 1-d Gaussians with priors 0.80/0.15/0.05: the
    arg-max seldom names the rare class, the F1-optimal decision does. Scored by
    scikit-learn on fresh rows of the same distribution."""
    prior, means = np.array([0.80, 0.15, 0.05]), np.array([0.0, 1.0, 2.0])

    def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        y = rng.choice(3, n, p=prior)
        x = rng.normal(means[y], 0.7)
        joint = prior * np.exp(-0.5 * ((x[:, None] - means) / 0.7) ** 2)
        return joint / joint.sum(axis=1, keepdims=True), y

    def macro(truth: np.ndarray, labels: np.ndarray) -> float:
        return float(f1_score(truth, labels, average="macro", labels=[0, 1, 2], zero_division=0))

    probabilities, y = draw(3000, seed=0)
    shift, alpha = fit_shift(probabilities, y, macro)
    assert alpha > 0 and shift[2] > shift[1] > shift[0]  # the rarer, the larger
    fresh, truth = draw(3000, seed=1)
    assert macro(truth, decide(fresh, shift)) > macro(truth, fresh.argmax(1)) + 0.02
    # Judged on rows that did not choose alpha, the gain is still there, a little smaller.
    splits = fold_splits(torch.from_numpy(y), 5, 0)
    nested = macro(y, nested_decisions(probabilities, y, macro, splits))
    assert macro(y, probabilities.argmax(1)) + 0.01 < nested <= macro(y, decide(probabilities,
                                                                                 shift)) + 1e-9
    # On 40 rows a shift scores 0.046 above the arg-max, inside the noise of 40 rows: kept out.
    few, y = draw(40, seed=2)
    assert max(macro(y, decide(few, shift * a / alpha)) for a in (0.25, 0.5, 0.75)) > \
        macro(y, few.argmax(1)) + 0.04
    assert fit_shift(few, y, macro) == (pytest.approx(np.zeros(3)), 0.0)
    np.testing.assert_array_equal(decide(few, np.zeros(3)), few.argmax(1))


def test_the_ensemble_is_a_model_folder(tmp_path) -> None:
    cfg = config(tmp_path)
    rows = read_rows(colour_rows(tmp_path, 90, seed=1), cfg, tmp_path, base_dir=tmp_path)
    targets = torch.tensor([COLOURS.index(t) for t in rows["_target"]])
    folds = [(np.asarray(a), np.asarray(b)) for a, b in fold_splits(targets, 3, 0)]
    views = [View("tfidf-char"), View("tfidf-word"),
             View("image", EncoderConfig("efficientnet-lite0", image_size=32))]
    model, scores = EnsembleModel.fit(cfg, rows, views, folds, FeatureCache(tmp_path / "cache"))
    assert scores["ensemble"] >= max(scores[f"LR on {v.name}"] for v in views) - 1e-9
    model.save(tmp_path / "run")
    test = colour_rows(tmp_path, 30, seed=2)
    test.to_csv(tmp_path / "test.csv", index=False)
    loaded = Predictor.load(tmp_path / "run")
    expected = Predictor.of(model).predict_proba(tmp_path / "test.csv")
    np.testing.assert_array_equal(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                                  expected.to_numpy())
    assert loaded.evaluate(tmp_path / "test.csv")["accuracy"] >= 0.9  # chance: 1/3
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(tmp_path / "run"), "--data",
                                 str(tmp_path / "test.csv"), "--output", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "p.csv")["prediction"]) == list(loaded.predict(
        tmp_path / "test.csv"))
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "--data",
                                 str(tmp_path / "test.csv"), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    model.decision_shift = np.array([0.0, 0.0, 0.5])  # as if fitted: the folder keeps it
    model.save(tmp_path / "shifted")
    shifted = Predictor.load(tmp_path / "shifted")
    result = runner.invoke(app, ["export", str(tmp_path / "shifted"), "--data",  # the shift
                                 str(tmp_path / "test.csv"), "--out", str(tmp_path / "s.onnx")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(shifted.fitted_.decision_shift, model.decision_shift)
    assert list(shifted.predict(tmp_path / "test.csv")) == list(Predictor.of(model).predict(
        tmp_path / "test.csv"))


def test_a_served_ensemble_answers_as_predict_does(tmp_path) -> None:
    """Over HTTP the encoders run live on the decoded upload; ``predict`` reads the feature
    cache: the same probabilities. Explanations hide one input at a time."""
    import base64

    from fastapi.testclient import TestClient

    from mmfuse.serving.app import create_app

    cfg = config(tmp_path)
    cfg.data.allow_missing = True
    rows = read_rows(colour_rows(tmp_path, 60, seed=3), cfg, tmp_path, base_dir=tmp_path)
    targets = torch.tensor([COLOURS.index(t) for t in rows["_target"]])
    folds = [(np.asarray(a), np.asarray(b)) for a, b in fold_splits(targets, 2, 0)]
    views = [View("tfidf-word"), View("image", EncoderConfig("efficientnet-lite0", image_size=32)),
             View("text", EncoderConfig("minilm", max_length=32))]
    model, _ = EnsembleModel.fit(cfg, rows, views, folds, FeatureCache(tmp_path / "cache"))
    model.decision_shift = np.array([0.0, 0.0, 50.0])  # every label the third: explained as such
    model.save(tmp_path / "run")
    test = colour_rows(tmp_path, 4, seed=4)
    test.loc[1, "caption"] = ""  # a row without its text: members read zeros / no n-grams
    test.to_csv(tmp_path / "test.csv", index=False)
    predictor = Predictor.load(tmp_path / "run")
    expected = predictor.predict_proba(tmp_path / "test.csv")
    served = []
    with TestClient(create_app(predictor)) as client:
        card = client.get("/v1/model").json()
        assert card["fusion"] == "ensemble" and card["modalities"] == ["caption", "image"]
        for _, row in test.iterrows():
            image = base64.b64encode((tmp_path / row["image"]).read_bytes()).decode()
            body = {"image": image, "text": row["caption"] if isinstance(row["caption"], str)
                    else ""}
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            served.append([response.json()["probabilities"][c] for c in expected.columns])
        explained = client.post("/v1/explain", json=body).json()
        assert response.json()["prediction"] == explained["prediction"] == model.classes[2]
    np.testing.assert_allclose(np.asarray(served), expected.to_numpy(), atol=1e-5)
    # every member, weighted or not: live features are the cached ones
    cached = predictor.fitted_.inputs(predictor.read(tmp_path / "test.csv"))
    live = MemberInputs.from_items(
        [{"image": Image.open(tmp_path / i).convert("RGB"), "caption": c if isinstance(c, str)
          else None} for i, c in zip(test["image"], test["caption"], strict=True)], cfg, {},
        predictor.fitted_.live)
    for member in predictor.fitted_.members:
        np.testing.assert_allclose(member.predict_proba(live), member.predict_proba(cached),
                                   atol=1e-5, err_msg=member.view.name)
    assert sum(explained["ablation_shares"].values()) == pytest.approx(1.0)
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "run"), "--data",
                                      str(tmp_path / "test.csv"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "x" / "explanations.json").read_text())
    assert [r["prediction"] for r in records] == [model.classes[2]] * 4  # as predict says
    assert [set(r["ablation_shares"]) for r in records] == [
        {"caption", "image"}, {"image"}, {"caption", "image"}, {"caption", "image"}]
    assert (tmp_path / "x" / records[0]["figure"]).stat().st_size > 0


def test_an_ensemble_is_calibrated_and_gives_logits_as_a_network_does(tmp_path) -> None:
    """Predictor.calibrate and Predictor.logits work on every kind: an ensemble's refitted
    temperature changes its probabilities, not its ranking, and its logits give them back."""
    cfg = config(tmp_path)
    rows = read_rows(colour_rows(tmp_path, 60, seed=3), cfg, tmp_path, base_dir=tmp_path)
    targets = torch.tensor([COLOURS.index(t) for t in rows["_target"]])
    folds = [(np.asarray(a), np.asarray(b)) for a, b in fold_splits(targets, 3, 0)]
    model, _ = EnsembleModel.fit(cfg, rows, [View("tfidf-word")], folds,
                                 FeatureCache(tmp_path / "cache"))
    predictor = Predictor.of(model)
    held = colour_rows(tmp_path, 30, seed=4)
    before = predictor.predict_proba(held, base_dir=tmp_path).to_numpy()
    temperature = predictor.calibrate(held, base_dir=tmp_path)
    after = predictor.predict_proba(held, base_dir=tmp_path).to_numpy()
    assert temperature == model.temperature and np.isfinite(temperature)
    np.testing.assert_array_equal(before.argmax(1), after.argmax(1))
    logits, weights = predictor.logits(predictor.read(held, base_dir=tmp_path))
    assert weights is None
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), after, atol=1e-6)
    assert predictor.vocabulary_ is None
