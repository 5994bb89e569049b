"""Numeric and categorical columns: scaling against scikit-learn, validation findings, the
linear and tree members, and the ensemble that reads them as a model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.preprocessing import RobustScaler
from typer.testing import CliRunner

from mmfuse import Config, DataConfig, Predictor
from mmfuse.cli import app
from mmfuse.data.rows import read_rows
from mmfuse.data.tabular import MISSING, OTHER, TabularEncoding
from mmfuse.ensemble.inputs import MemberInputs, View
from mmfuse.ensemble.members import LinearMember
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.ensemble.trees import TREES_FILE, TreeMember
from mmfuse.errors import CheckpointError, DataValidationError
from mmfuse.features.cache import FeatureCache
from mmfuse.tasks import get_task
from mmfuse.training.stacking import fold_splits

CLASSES = ["bad", "good"]


def listing(n: int, seed: int) -> pd.DataFrame:
    """The label is good when the price is high for a premium brand or low for a budget one
    (an interaction no linear model draws), or when the title says "superb"; cells missing."""
    rng = np.random.default_rng(seed)
    brand = rng.choice(["acme", "bolt", "corvo", "dyna"], n)
    price = np.exp(rng.normal(3, 1, n))
    superb = rng.random(n) < 0.2
    good = ((price > np.exp(3)) == np.isin(brand, ["acme", "bolt"])) | superb
    frame = pd.DataFrame({
        "title": [("superb " if s else "") + rng.choice(["lamp", "desk", "clock"]) for s in superb],
        "price": [f"{p:.2f}" for p in price], "brand": brand,
        "label": np.where(good, "good", "bad")})
    frame.loc[rng.random(n) < 0.1, "price"] = ""
    frame.loc[rng.random(n) < 0.1, "brand"] = ""
    return frame


def config(tmp_path: Path) -> Config:
    cfg = Config(data=DataConfig(image_cols=[], text_cols=["title"], num_cols=["price"],
                                 cat_cols=["brand"], label_col="label"),
                 cache_dir=str(tmp_path / "cache"))
    cfg.model.modalities = ["text"]
    return cfg


def fitted_ensemble(cfg: Config, rows: pd.DataFrame, views: list[View], folds: int
                    ) -> tuple[EnsembleModel, dict[str, float]]:
    """An ensemble of members on ``views`` judged on ``folds`` stratified folds."""
    targets = torch.tensor([CLASSES.index(t) for t in rows["_target"]])
    splits = [(np.asarray(a), np.asarray(b)) for a, b in fold_splits(targets, folds, 0)]
    return EnsembleModel.fit(cfg, rows, views, splits, FeatureCache(None))


def inputs_of(rows: pd.DataFrame, cfg: Config) -> MemberInputs:
    return MemberInputs.from_rows(rows, cfg, FeatureCache(None), {})


def test_numbers_are_scaled_as_scikit_learns_robust_scaler_and_categories_pooled() -> None:
    prices = [3.0, None, 10.0, 4.0, 100.0, 7.0, 5.0, None]
    brands = ["a", "a", "b", None, "a", "rare", "b", "b"]
    train = pd.DataFrame({"price": prices, "brand": brands})
    encoding = TabularEncoding(["price"], ["brand"]).fit(train)
    known = np.array([[p] for p in prices if p is not None])
    reference = RobustScaler().fit(known)  # median / IQR, missing cells left out
    np.testing.assert_allclose(encoding.median, reference.center_, rtol=1e-6)
    np.testing.assert_allclose(encoding.scale, reference.scale_, rtol=1e-6)
    test = pd.DataFrame({"price": [4.0, None, 1e9], "brand": ["b", None, "never seen"]})
    dense = encoding.dense(test)
    names = encoding.feature_names()
    assert names == ["price", "price missing", "brand=a", "brand=b", f"brand={OTHER}",
                     f"brand={MISSING}"]  # "rare" (1 row) pooled into other
    expected_price = np.clip(reference.transform([[4.0], [reference.center_[0]], [1e9]])[:, 0],
                             -5, 5)
    np.testing.assert_allclose(dense[:, 0], expected_price, rtol=1e-6)
    np.testing.assert_array_equal(dense[:, 1], [0, 1, 0])
    np.testing.assert_array_equal(dense[:, 2:], [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(encoding.codes(test)[:, 1], [1, np.nan, 2])
    saved = TabularEncoding.from_saved(encoding.entry(), encoding.arrays())
    np.testing.assert_array_equal(saved.dense(test), dense)


def test_a_non_number_is_a_finding_with_its_row_and_column_and_missing_cells_are_values(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    frame = listing(6, seed=0)
    frame.loc[2, "price"] = "12 EUR"
    frame.loc[3, ["price", "brand"]] = ""
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataValidationError) as error:
        read_rows(tmp_path / "t.csv", cfg, tmp_path)
    assert [(p.row, p.column) for p in error.value.problems] == [(3, "price")]
    assert "'12 EUR' is not a number" in str(error.value) and "t.csv" in str(error.value)
    cfg.data.on_bad_rows = "skip"
    rows = read_rows(tmp_path / "t.csv", cfg, tmp_path)
    assert list(rows["_row"]) == [1, 2, 4, 5, 6]
    assert np.isnan(rows["price"].iloc[2]) and rows["brand"].iloc[2] is None
    frame.rename(columns={"price": "prices"}).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(DataValidationError, match="Did you mean 'prices'.*--num-col"):
        read_rows(tmp_path / "u.csv", cfg, tmp_path)


def test_trees_draw_the_interaction_a_linear_member_cannot(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rows = read_rows(listing(600, seed=1), cfg, tmp_path)
    test = read_rows(listing(300, seed=2), cfg, tmp_path)
    y = np.array([CLASSES.index(t) for t in rows["_target"]])
    truth = np.array([CLASSES.index(t) for t in test["_target"]])
    trees = TreeMember(CLASSES).fit(inputs_of(rows, cfg), y)
    linear = LinearMember(View("tabular"), CLASSES).fit(inputs_of(rows, cfg), y)
    accuracy = {name: float((m.predict_proba(inputs_of(test, cfg)).argmax(1) == truth).mean())
                for name, m in (("trees", trees), ("linear", linear))}
    assert accuracy["trees"] > accuracy["linear"] + 0.15, accuracy
    # The member is scikit-learn's booster on the encoding's codes, untouched.
    encoding = TabularEncoding(["price"], ["brand"]).fit(rows)
    reference = HistGradientBoostingClassifier(
        max_iter=500, early_stopping=True, validation_fraction=0.1, n_iter_no_change=20,
        categorical_features=[False, True], random_state=0).fit(encoding.codes(rows), y)
    np.testing.assert_allclose(trees.predict_proba(inputs_of(test, cfg)),
                               reference.predict_proba(encoding.codes(test)), atol=1e-12)


def test_an_ensemble_on_text_and_tabular_columns_is_a_model_folder(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rows = read_rows(listing(300, seed=3), cfg, tmp_path)
    views = [View("tfidf-word"), View("tabular"), View("tabular-trees")]
    model, scores = fitted_ensemble(cfg, rows, views, folds=3)
    assert scores["ensemble"] > max(scores["LR on tfidf-word"], scores["LR on tabular"])
    assert model.modality_kinds == {"brand": "tabular", "price": "tabular", "title": "text"}
    model.save(tmp_path / "run")
    test = listing(40, seed=4)
    test.loc[0, "brand"] = "zephyr"  # a brand never seen in training
    test.loc[1, ["price", "brand"]] = ""
    test.to_csv(tmp_path / "test.csv", index=False)
    loaded = Predictor.load(tmp_path / "run")
    expected = Predictor.of(model).predict_proba(tmp_path / "test.csv")
    np.testing.assert_array_equal(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                                  expected.to_numpy())
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "--data",
                                      str(tmp_path / "test.csv"), "--output",
                                      str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "p.csv")["prediction"]) == list(
        loaded.predict(tmp_path / "test.csv"))
    trees = next(i for i, m in enumerate(model.members) if isinstance(m, TreeMember))
    saved = tmp_path / "run" / "members" / str(trees) / TREES_FILE
    saved.write_bytes(saved.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError, match=TREES_FILE):
        Predictor.load(tmp_path / "run")


def flats(n: int, seed: int) -> pd.DataFrame:
    """Log rent from the area, a premium brand and the description's one telling word."""
    rng = np.random.default_rng(seed)
    brand = rng.choice(["acme", "bolt", "corvo", "dyna"], n)
    area = rng.uniform(20, 200, n)
    word = rng.choice(["luxury", "cosy", "plain", "tiny"], n)
    rent = (np.log(area) + 0.5 * np.isin(brand, ["acme", "bolt"])
            + np.select([word == "luxury", word == "tiny"], [0.6, -0.4], 0.0)
            + rng.normal(0, 0.1, n))
    frame = pd.DataFrame({"text": [f"{w} flat in town" for w in word],
                          "area": [f"{a:.1f}" for a in area], "brand": brand,
                          "notes": [f"viewing on day {d}, ask for the key" for d in
                                    rng.integers(1, 29, n)],
                          "rent": rent.round(4)})
    frame.loc[rng.random(n) < 0.1, "area"] = ""
    return frame


def regression_config(tmp_path: Path) -> Config:
    cfg = Config(data=DataConfig(image_cols=[], text_cols=["text"], num_cols=["area"],
                                 cat_cols=["brand"], label_col="rent", task="regression"),
                 cache_dir=str(tmp_path / "cache"))
    cfg.model.modalities = ["text"]
    return cfg


def test_a_ridge_member_predicts_as_scikit_learns_ridge_cv(tmp_path: Path) -> None:
    """Fitted on standardised targets, mapped back: the same values as RidgeCV on the raw
    targets (ridge is linear in the target, and leave-one-out picks the same penalty)."""
    from sklearn.linear_model import RidgeCV

    from mmfuse.ensemble.members import RIDGE_ALPHAS

    cfg = regression_config(tmp_path)
    rows = read_rows(flats(200, seed=0), cfg, tmp_path)
    y = rows["_target"].to_numpy(dtype=float)
    member = LinearMember(View("tabular"), None).fit(inputs_of(rows, cfg), y)
    x = TabularEncoding(["area"], ["brand"]).fit(rows).dense(rows)
    reference = RidgeCV(alphas=RIDGE_ALPHAS).fit(x, y)
    np.testing.assert_allclose(member.predict_proba(inputs_of(rows, cfg))[:, 0],
                               reference.predict(x), rtol=1e-4, atol=1e-4)


def test_a_regression_ensemble_on_text_and_tabular_columns_is_a_model_folder(
        tmp_path: Path) -> None:
    cfg = regression_config(tmp_path)
    rows = read_rows(flats(300, seed=1), cfg, tmp_path)
    folds = [(np.asarray(a), np.asarray(b)) for a, b in
             fold_splits(torch.tensor(rows["_target"].to_numpy(dtype=float)), 3, 0)]
    views = [View("tfidf-word"), View("tabular"), View("tabular-trees")]
    model, scores = EnsembleModel.fit(cfg, rows, views, folds, FeatureCache(None))
    assert model.classes is None and model.out_of_fold.shape == (300, 1)
    # scores are higher-is-better: minus the RMSE; the combination beats every member
    assert scores["ensemble"] > max(scores[f"ridge on {v}"] for v in ("tfidf-word", "tabular"))
    model.save(tmp_path / "run")
    test = flats(50, seed=2)
    test.loc[0, "brand"] = "zephyr"
    test.to_csv(tmp_path / "test.csv", index=False)
    loaded = Predictor.load(tmp_path / "run")
    expected = Predictor.of(model).predict(tmp_path / "test.csv")
    np.testing.assert_array_equal(np.asarray(loaded.predict(tmp_path / "test.csv")),
                                  np.asarray(expected))
    assert loaded.evaluate(tmp_path / "test.csv")["r2"] > 0.8


def test_auto_mode_reads_a_table_of_text_and_numbers_for_regression(tmp_path: Path) -> None:
    """No image column: the default one is dropped; the unused columns are named with their
    flags; auto mode's members read the tabular columns and beat the text alone."""
    flats(240, seed=3).to_csv(tmp_path / "train.csv", index=False)
    flats(80, seed=4).to_csv(tmp_path / "test.csv", index=False)
    result = CliRunner().invoke(app, [
        "train", "--data", str(tmp_path / "train.csv"), "--label-col", "rent", "--task",
        "regression", "--num-col", "area", "--out", str(tmp_path / "run"), "--preset", "fast",
        "--test-data", str(tmp_path / "test.csv"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "no 'image' column" in output
    assert "columns not used: brand looks categorical: --cat-col brand; notes looks like " \
           "text: --text-col notes" in output
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    rmse = dict(zip(board["candidate"], board["val_metric"], strict=True))
    assert rmse["member: ridge on tabular"] < rmse["member: ridge on tfidf-word"]
    assert pd.read_json(tmp_path / "run" / "test_metrics.json", typ="series")["r2"] > 0.5


def test_a_served_ensemble_reads_numbers_and_categories_by_column(tmp_path: Path) -> None:
    """JSON numbers or strings, empty cells, an unseen brand: the same probabilities as
    ``predict`` on the same rows; a price that is not a number is a 422 naming the field."""
    from fastapi.testclient import TestClient

    from mmfuse.serving.app import create_app

    cfg = config(tmp_path)
    rows = read_rows(listing(200, seed=5), cfg, tmp_path)
    model, _ = fitted_ensemble(cfg, rows, [View("tfidf-word"), View("tabular-trees")], folds=2)
    model.save(tmp_path / "run")
    predictor = Predictor.load(tmp_path / "run")
    test = listing(4, seed=6)
    test.loc[1, ["price", "brand"]] = ""
    test.loc[2, "brand"] = "zephyr"
    test.to_csv(tmp_path / "test.csv", index=False)
    expected = predictor.predict_proba(tmp_path / "test.csv")
    with TestClient(create_app(predictor)) as client:
        card = client.get("/v1/model").json()
        assert card["tabular_fields"] == ["brand", "price"]
        for i, row in test.iterrows():
            body = {"title": row["title"], "brand": row["brand"],
                    "price": float(row["price"]) if row["price"] else None}
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            served = response.json()["probabilities"]
            np.testing.assert_allclose([served[c] for c in expected.columns],
                                       expected.iloc[i].to_numpy(), atol=1e-6)
        response = client.post("/v1/predict", json={"title": "lamp", "price": "cheap"})
        assert response.status_code == 422 and "price" in response.json()["error"]["message"]


def test_robustness_blanks_and_shuffles_the_tabular_columns(tmp_path: Path) -> None:
    from mmfuse.evaluation.corruptions import blanked, shuffled
    from mmfuse.evaluation.robustness import robustness

    rng = np.random.default_rng(0)
    cells = list(range(1000))
    assert sum(c is None for c in blanked(cells, 5, rng)) == pytest.approx(900, abs=40)
    mixed = shuffled(cells, 3, rng)
    assert sorted(mixed) == cells and sum(a != b for a, b in zip(mixed, cells, strict=True)) > 400
    cfg = config(tmp_path)
    rows = read_rows(listing(300, seed=7), cfg, tmp_path)
    model, _ = fitted_ensemble(cfg, rows, [View("tfidf-word"), View("tabular-trees")], folds=2)
    listing(200, seed=8).to_csv(tmp_path / "test.csv", index=False)
    result = robustness(Predictor.of(model), tmp_path / "test.csv", severities=(5,))
    tabular = result["corruptions"]["tabular"]
    assert set(tabular) == {"blanked", "shuffled"}
    assert tabular["shuffled"]["5"] < result["clean"] - 0.1  # the price x brand signal is gone
    assert result["ablation"]["tabular missing"] < result["clean"] - 0.1


def network_config(tmp_path: Path, fusion: str, modalities: list[str]) -> Config:
    from mmfuse import EncoderConfig, ModelConfig, TrainConfig

    return Config(
        data=DataConfig(image_cols=[], text_cols=["title"], num_cols=["price"],
                        cat_cols=["brand"], label_col="label"),
        model=ModelConfig(text_encoder=EncoderConfig("gru", options={"embed_dim": 8,
                                                                     "hidden": 8}),
                          modalities=modalities, fusion=fusion, hidden_dim=16),
        train=TrainConfig(epochs=2, batch_size=32, num_workers=0, lr=3e-3, seed=0),
        cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("fusion", ["bilinear", "concat", "cross-attention", "gated", "late",
                                    "stack", "weighted"])
def test_every_fusion_takes_the_tabular_tower_and_reloads_to_the_same_predictions(
        tmp_path: Path, fusion: str) -> None:
    listing(120, seed=9).to_csv(tmp_path / "train.csv", index=False)
    test = listing(30, seed=10)
    test.loc[0, ["price", "brand"]] = ["", "zephyr"]
    test.to_csv(tmp_path / "test.csv", index=False)
    fitted = Predictor(network_config(tmp_path, fusion, ["text", "tabular"])).fit(
        tmp_path / "train.csv", run_dir=tmp_path / "run")
    assert fitted.model_.modalities == ["tabular", "title"]
    loaded = Predictor.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                               fitted.predict_proba(tmp_path / "test.csv").to_numpy(), atol=1e-6)


def test_the_tabular_tower_learns_what_the_text_alone_cannot(tmp_path: Path) -> None:
    listing(400, seed=11).to_csv(tmp_path / "train.csv", index=False)
    listing(200, seed=12).to_csv(tmp_path / "test.csv", index=False)
    accuracy = {}
    for modalities in (["text"], ["text", "tabular"]):
        cfg = network_config(tmp_path, "concat", modalities)
        cfg.train.epochs, cfg.train.patience = 30, 8
        predictor = Predictor(cfg).fit(tmp_path / "train.csv")
        accuracy["+".join(modalities)] = predictor.evaluate(tmp_path / "test.csv")["accuracy"]
    assert accuracy["text+tabular"] > accuracy["text"] + 0.15, accuracy


def conflicting(weight_a: float, weight_b: float) -> pd.DataFrame:
    """The same rows labelled both ways; the weights say which labelling counts."""
    frame = listing(40, seed=13)
    a, b = frame.assign(label="bad", w=weight_a), frame.assign(label="good", w=weight_b)
    return pd.concat([a, b], ignore_index=True)


@pytest.mark.parametrize("heavy", ["bad", "good"])
def test_a_heavier_row_outweighs_its_twin_in_every_member(tmp_path: Path, heavy: str) -> None:
    cfg = config(tmp_path)
    cfg.data.weight_col = "w"
    frame = conflicting(10.0, 1.0) if heavy == "bad" else conflicting(1.0, 10.0)
    rows = read_rows(frame, cfg, tmp_path)
    y = np.array([CLASSES.index(t) for t in rows["_target"]])
    test = read_rows(listing(20, seed=14), cfg, tmp_path)
    for member in (LinearMember(View("tfidf-word"), CLASSES), LinearMember(View("tabular"),
                                                                          CLASSES),
                   TreeMember(CLASSES)):
        predicted = member.fit(inputs_of(rows, cfg), y).predict_proba(inputs_of(test, cfg))
        assert (predicted.argmax(1) == CLASSES.index(heavy)).all(), member.name



def test_a_network_draws_each_row_in_proportion_to_its_weight(tmp_path: Path,
                                                              monkeypatch) -> None:
    """The weights reach the sampler (times the class balance's own), which draws rows with
    replacement in proportion to them (``features/loaders.Shuffled``)."""
    from mmfuse import model_kinds

    drawn = {}

    def recording_train(model, train_set, validate, cfg, metric, *, sample_weights, **kwargs):
        drawn["weights"] = sample_weights
        raise SystemExit  # nothing more to see

    monkeypatch.setattr(model_kinds, "train", recording_train)
    net = network_config(tmp_path, "concat", ["text", "tabular"])
    net.data.weight_col, net.data.val_fraction, net.train.imbalance = "w", 0.2, "sample"
    frame = conflicting(10.0, 1.0)
    frame.to_csv(tmp_path / "w.csv", index=False)
    with pytest.raises(SystemExit):
        Predictor(net).fit(tmp_path / "w.csv")
    weights = drawn["weights"].numpy()  # the training split: 80 % of 80 rows, both labels
    assert len(weights) == 64 and set(np.round(weights / weights.min(), 6)) == {1.0, 10.0}


def test_weights_that_are_not_numbers_of_at_least_0_are_findings(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.data.weight_col = "w"
    frame = listing(5, seed=15).assign(w=["1", "-2", "x", "", "0.5"])
    with pytest.raises(DataValidationError) as error:
        read_rows(frame, cfg, tmp_path)
    assert [(p.row, p.column) for p in error.value.problems] == [(2, "w"), (3, "w"), (4, "w")]
    with pytest.raises(DataValidationError, match="every row weight is 0"):
        read_rows(listing(5, seed=15).assign(w="0"), cfg, tmp_path)
    rows = read_rows(listing(5, seed=15), cfg, tmp_path)  # no weights to predict: fine
    with pytest.raises(DataValidationError, match="--weight-col"):
        TreeMember(CLASSES).fit(inputs_of(rows, cfg), np.zeros(5, dtype=int))


def test_metrics_are_reported_plain_and_weighted_as_scikit_learn_weighs_them(
        tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    cfg = config(tmp_path)
    cfg.data.weight_col = "w"
    rows = read_rows(listing(200, seed=16).assign(w=[1.0, 3.0] * 100), cfg, tmp_path)
    model, _ = fitted_ensemble(cfg, rows, [View("tfidf-word")], folds=2)  # text alone: errs
    test = listing(80, seed=17).assign(w=[0.5, 4.0] * 40)
    test.to_csv(tmp_path / "test.csv", index=False)
    predictor = Predictor.of(model)
    metrics = predictor.evaluate(tmp_path / "test.csv")
    truth = test["label"].to_numpy()
    predicted = np.asarray(predictor.predict(tmp_path / "test.csv"))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    weighted = metrics["weighted"]
    assert weighted["accuracy"] == pytest.approx(accuracy_score(truth, predicted,
                                                                sample_weight=test["w"]))
    assert weighted["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro",
                                                          sample_weight=test["w"]))
    assert weighted["accuracy"] != pytest.approx(metrics["accuracy"])
    test.drop(columns="w").to_csv(tmp_path / "plain.csv", index=False)
    assert "weighted" not in predictor.evaluate(tmp_path / "plain.csv")


def tags(n: int, seed: int) -> pd.DataFrame:
    """Labels "cheap" (price under 20), "premium" (acme or bolt) and "gift" (the title says
    so): any subset per row."""
    frame = listing(n, seed)
    rng = np.random.default_rng(seed)
    gift = rng.random(n) < 0.4
    frame["title"] = [("gift " if g else "") + t for g, t in zip(gift, frame["title"], strict=True)]
    price = pd.to_numeric(frame["price"], errors="coerce")
    frame["label"] = ["|".join(t for t, on in (("cheap", p < 20), ("premium", b in ("acme", "bolt")),
                                               ("gift", g)) if on)
                      for p, b, g in zip(price, frame["brand"], gift, strict=True)]
    return frame[frame["label"] != ""].reset_index(drop=True)


def test_a_multilabel_ensemble_reads_text_and_tabular_columns(tmp_path: Path) -> None:
    """One binary LR per label and view, blended by selection; each label checked against
    scikit-learn's LogisticRegression on the same features."""
    from sklearn.linear_model import LogisticRegression

    cfg = config(tmp_path)
    cfg.data.task = "multilabel"
    rows = read_rows(tags(300, seed=18), cfg, tmp_path)
    labels = ["cheap", "gift", "premium"]
    y = np.asarray(get_task("multilabel").encode(rows["_target"].tolist(), labels))
    member = LinearMember(View("tabular"), labels).fit(inputs_of(rows, cfg), y)
    x = TabularEncoding(["price"], ["brand"]).fit(rows).dense(rows)
    for k in range(3):
        reference = LogisticRegression(C=1.0, max_iter=300, tol=1e-3).fit(x, y[:, k])
        np.testing.assert_allclose(member.predict_proba(inputs_of(rows, cfg))[:, k],
                                   reference.predict_proba(x)[:, 1], atol=1e-3)
    splits = [(np.asarray(a), np.asarray(b)) for a, b in fold_splits(torch.tensor(y), 3, 0)]
    model, scores = EnsembleModel.fit(cfg, rows, [View("tfidf-word"), View("tabular")], splits,
                                      FeatureCache(None))
    assert model.classes == labels and model.out_of_fold_labels.shape == (len(rows), 3)
    assert scores["ensemble"] > max(scores["per-label LR on tfidf-word"],
                                    scores["per-label LR on tabular"])
    model.save(tmp_path / "run")
    tags(60, seed=19).to_csv(tmp_path / "test.csv", index=False)
    loaded = Predictor.load(tmp_path / "run")
    assert loaded.evaluate(tmp_path / "test.csv")["macro_f1"] > 0.8
    np.testing.assert_array_equal(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                                  Predictor.of(model).predict_proba(tmp_path / "test.csv")
                                  .to_numpy())


def test_numbers_are_read_as_tables_write_them() -> None:
    from mmfuse.data.tabular import as_number

    assert [as_number(v) for v in ("$1,299.00", "12 %", "€ 30", "-2,000", "1e3", 7, "")] == [
        1299.0, 12.0, 30.0, -2000.0, 1000.0, 7.0, None]
    assert [as_number(v) for v in ("NA", "n/a", "null", "-", "?", "nan")] == [None] * 6
    for bad in ("1,5", "12 EUR", "abc", "inf", True):  # a decimal comma is ambiguous: refused
        with pytest.raises(ValueError):
            as_number(bad)


def test_the_web_page_asks_for_the_tabular_columns(tmp_path: Path) -> None:
    """In a real browser: a field per numeric and categorical column, sent by name; the page
    answers what predict does for the same row."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_serving import Server, headless_chrome

    from mmfuse.serving.app import create_app

    cfg = config(tmp_path)
    rows = read_rows(listing(300, seed=22), cfg, tmp_path)
    model, _ = fitted_ensemble(cfg, rows, [View("tfidf-word"), View("tabular-trees")], folds=2)
    model.save(tmp_path / "run")
    predictor = Predictor.load(tmp_path / "run")
    pd.DataFrame([{"title": "lamp for sale", "price": "90", "brand": "dyna", "label": "bad"}]
                 ).to_csv(tmp_path / "one.csv", index=False)
    expected = predictor.predict(tmp_path / "one.csv")[0]
    driver = headless_chrome(tmp_path)
    try:
        with Server(create_app(predictor)) as url:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: d.find_elements(By.ID, "column-price"))
            driver.find_element(By.ID, "text").send_keys("lamp for sale")
            driver.find_element(By.ID, "column-price").send_keys("90")
            driver.find_element(By.ID, "column-brand").send_keys("dyna")
            driver.find_element(By.ID, "predict").click()
            wait.until(lambda d: d.find_element(By.ID, "prediction").text not in ("", "–"))
            assert driver.find_element(By.ID, "prediction").text == expected
            assert driver.find_element(By.ID, "error").text == ""
    finally:
        driver.quit()


def test_the_ensembles_combination_counts_each_row_by_its_weight(tmp_path: Path) -> None:
    """Two members, each right on its own half of the rows: ensemble selection picks the one
    whose half the weights make count (its score is scikit-learn's weighted macro-F1)."""
    from sklearn.metrics import f1_score

    from mmfuse.ensemble.model import metric_score

    cfg = config(tmp_path)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    first = np.arange(400) < 200
    right = np.eye(2)[y] * 0.8 + 0.1
    wrong = right[:, ::-1]
    a = np.where(first[:, None], right, wrong)  # right on the first half
    b = np.where(first[:, None], wrong, right)  # right on the second half
    score = metric_score(get_task("classification"), cfg, CLASSES)
    for heavy, chosen in ((first, 0), (~first, 1)):
        weights = np.where(heavy, 10.0, 1.0)
        assert score(y, a, weights=weights) == pytest.approx(
            f1_score(y, a.argmax(1), average="macro", sample_weight=weights))
        model, _ = EnsembleModel.combine(cfg, CLASSES, [LinearMember(View("tfidf-word"), CLASSES),
                                                        LinearMember(View("tabular"), CLASSES)],
                                         [a, b], y, sample_weight=weights)
        assert model.method == "selection" and int(np.argmax(model.weights)) == chosen


def test_a_networks_validation_metric_counts_each_row_by_its_weight(tmp_path: Path) -> None:
    """What early stopping reads: scikit-learn's weighted macro-F1 of the network's labels."""
    from sklearn.metrics import f1_score

    net = network_config(tmp_path, "concat", ["text", "tabular"])
    net.data.weight_col = "w"
    frame = listing(120, seed=23).assign(w=[1.0, 5.0, 0.5] * 40)
    predictor = Predictor(net).fit(frame)
    rows = predictor.read(frame)
    fitted = predictor.fitted_
    weights = rows["_weight"].to_numpy()
    weighted = fitted.kind.score(fitted, fitted.model, rows, fitted.dataset(rows), weights=weights)
    truth = [predictor.classes_.index(t) for t in rows["_target"]]
    decoded = fitted.predict(rows)[1]
    assert weighted["macro_f1"] == pytest.approx(f1_score(truth, decoded, average="macro",
                                                          sample_weight=weights))
    plain = fitted.kind.score(fitted, fitted.model, rows, fitted.dataset(rows))
    assert plain["macro_f1"] == pytest.approx(f1_score(truth, decoded, average="macro"))
    # and early stopping read it: the best epoch's recorded score is the weighted one
    from mmfuse.data.rows import split_rows

    _, val = split_rows(rows, net)
    val_truth = [predictor.classes_.index(t) for t in val["_target"]]
    best = max(row["val_macro_f1"] for row in fitted.history)
    assert best == pytest.approx(f1_score(val_truth, fitted.predict(val)[1], average="macro",
                                          sample_weight=val["_weight"].to_numpy()))


def test_auto_modes_judge_counts_each_row_by_its_weight() -> None:
    """Two candidates, each right on its own half of the judging rows: the weights decide
    which the judge calls better."""
    from mmfuse.auto.judge import Judge

    y = np.array([0, 1] * 50)
    first = np.arange(100) < 50
    a, b = np.where(first, y, 1 - y), np.where(first, 1 - y, y)
    for heavy, winner in ((first, "a"), (~first, "b")):
        judge = Judge(get_task("classification"), "macro_f1", y, CLASSES,
                      np.where(heavy, 10.0, 1.0))
        evidence = {name: judge.evidence_of(np.arange(100), np.eye(2)[decoded], decoded, CLASSES)
                    for name, decoded in (("a", a), ("b", b))}
        loser = "b" if winner == "a" else "a"
        assert judge.better(evidence[winner], evidence[loser])
        assert not judge.better(evidence[loser], evidence[winner])
