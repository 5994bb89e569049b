"""Predictor: fit / predict / predict_proba / evaluate / save / load, cache, tasks, fusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_rows, tiny_config

from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.errors import CheckpointError
from mmfuse.fusion import FUSIONS
from mmfuse.training.trainer import make_optimizer


def pretrained_config(tmp_path: Path, fusion: str = "weighted", **train) -> Config:
    """Frozen packaged encoders on 32 px images; features cached in tmp_path."""
    return Config(
        data=DataConfig(image_cols=["image"], text_cols=["caption"], label_col="label"),
        model=ModelConfig(
            image_encoder=EncoderConfig("efficientnet-lite0", image_size=32),
            text_encoder=EncoderConfig("minilm", max_length=16),
            fusion=fusion, hidden_dim=32,
        ),
        train=TrainConfig(**({"epochs": 25, "batch_size": 16, "lr": 3e-3, "num_workers": 0,
                              "patience": 25} | train)),
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("colours")
    make_rows(folder, 240, seed=0).to_csv(folder / "train.csv", index=False)
    make_rows(folder, 90, seed=1).to_csv(folder / "test.csv", index=False)
    return folder / "train.csv", folder / "test.csv"


@pytest.mark.parametrize("fusion", ["weighted", "cross-attention"])
def test_fused_model_answers_what_neither_modality_can(tmp_path, colour_data, fusion) -> None:
    train, test = colour_data
    accuracy = {}
    for modalities in (["image", "text"], ["image"], ["text"]):
        cfg = pretrained_config(tmp_path, fusion)
        cfg.model.modalities = modalities
        accuracy[tuple(modalities)] = Predictor(cfg).fit(train).evaluate(test)["accuracy"]
    fused = accuracy[("image", "text")]
    assert fused >= 0.9, accuracy
    assert fused >= max(accuracy[("image",)], accuracy[("text",)]) + 0.15, accuracy


def test_save_load_round_trip_gives_identical_predictions(tmp_path, tiny_csv) -> None:
    predictor = Predictor(tiny_config(tmp_path)).fit(tiny_csv)
    before = predictor.predict_proba(tiny_csv)
    predictor.save(tmp_path / "model")
    assert {"config.yaml", "model.safetensors", "labels.json", "vocabulary.json", "meta.json",
            "metrics.json"} <= {p.name for p in (tmp_path / "model").iterdir()}
    loaded = Predictor.load(tmp_path / "model")
    after = loaded.predict_proba(tiny_csv)
    pd.testing.assert_frame_equal(before, after)
    assert list(after.columns) == ["no", "yes"]
    assert np.allclose(after.sum(axis=1), 1.0)
    assert set(loaded.predict(tiny_csv)) <= {"yes", "no"}


def test_truncated_checkpoint_gives_a_clear_error(tmp_path, tiny_csv) -> None:
    Predictor(tiny_config(tmp_path)).fit(tiny_csv).save(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Predictor.load(tmp_path / "model")
    with pytest.raises(CheckpointError, match="not an mmfuse model folder"):
        Predictor.load(tmp_path)


def test_feature_cache_skips_the_encoders_on_a_second_run(tmp_path, tiny_csv, monkeypatch):
    from mmfuse.encoders.text.hf import HFTextEncoder
    from mmfuse.encoders.vision.efficientnet_lite import EfficientNetLite0

    cfg = pretrained_config(tmp_path, epochs=1)
    first = Predictor(cfg).fit(tiny_csv)
    shards = list((tmp_path / "cache").rglob("shard-*.safetensors"))
    assert len(shards) == 2  # one per encoder
    calls = []
    for cls in (EfficientNetLite0, HFTextEncoder):
        monkeypatch.setattr(cls, "forward", lambda *a, **k: calls.append(1))
    second = Predictor(cfg).fit(tiny_csv)
    assert calls == []
    # the same seeded run on the same (now cached) features: the same model
    scores = [{k: v for k, v in p.metrics_["validation"].items() if isinstance(v, float)}
              for p in (first, second)]
    assert scores[0] and scores[1] == pytest.approx(scores[0])


def test_modality_dropout_lets_one_modality_predict_alone(tmp_path, tiny_csv) -> None:
    cfg = tiny_config(tmp_path)
    cfg.train.modality_dropout = 0.5
    cfg.data.allow_missing = True
    predictor = Predictor(cfg).fit(tiny_csv)
    frame = pd.read_csv(tiny_csv)
    frame["caption"] = ""
    out = predictor.predict_frame(frame, base_dir=tiny_csv.parent)
    assert len(out) == len(frame)
    assert (out["weight_caption"] == 0).all() and np.allclose(out["weight_image"], 1.0)


@pytest.mark.parametrize("kind", [*FUSIONS.names(), "dual encoder", "ensemble"])
def test_every_fusion_and_model_kind_reloads_with_the_same_outputs(tmp_path, tiny_csv,
                                                                  kind) -> None:
    """Trained (dropout on, an uneven last batch: 120 rows in batches of 16), saved, loaded
    in a new estimator: the same probabilities (or embeddings) for files and for items."""
    from PIL import Image

    from mmfuse.data.rows import read_rows
    from mmfuse.ensemble.inputs import View
    from mmfuse.ensemble.model import EnsembleModel
    from mmfuse.features.cache import FeatureCache
    from mmfuse.retrieval.predictor import RetrievalPredictor

    rows = pd.read_csv(tiny_csv)
    cfg = tiny_config(tmp_path, fusion=kind if kind in FUSIONS.names() else "concat")
    cfg.train.epochs = 1
    if kind == "dual encoder":
        cfg.data.task = "retrieval"
        trained = RetrievalPredictor(cfg).fit(tiny_csv)
        trained.save(tmp_path / "model")
        loaded = RetrievalPredictor.load(tmp_path / "model")
        paths = [str(tiny_csv.parent / p) for p in rows["image"].head(5)]
        torch.testing.assert_close(loaded.embed_images(paths), trained.embed_images(paths),
                                   rtol=0, atol=0)
        torch.testing.assert_close(loaded.embed_texts(rows["caption"].tolist()),
                                   trained.embed_texts(rows["caption"].tolist()), rtol=0, atol=0)
        return
    if kind == "ensemble":
        validated = read_rows(tiny_csv, cfg, tmp_path, base_dir=tiny_csv.parent)
        halves = np.arange(len(validated)) % 2
        folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
        model, _ = EnsembleModel.fit(cfg, validated, [View("tfidf-char"), View("tfidf-word")],
                                     folds, FeatureCache(tmp_path / "cache"))
        trained = Predictor.of(model)
    else:
        trained = Predictor(cfg).fit(tiny_csv)
    trained.save(tmp_path / "model")
    loaded = Predictor.load(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.predict_proba(tiny_csv), trained.predict_proba(tiny_csv))
    items = [{"image": Image.open(tiny_csv.parent / p).convert("RGB"), "caption": c}
             for p, c in zip(rows["image"].head(3), rows["caption"].head(3), strict=True)]
    np.testing.assert_array_equal(loaded.fitted_.predict_items(items)[0],
                                  trained.fitted_.predict_items(items)[0])


def test_regression_task(tmp_path) -> None:
    frame = make_rows(tmp_path, 40)
    frame["label"] = [float(i % 7) for i in range(len(frame))]
    cfg = tiny_config(tmp_path)
    cfg.data.task = "regression"
    predictor = Predictor(cfg).fit(frame, base_dir=tmp_path)
    metrics = predictor.evaluate(frame, base_dir=tmp_path)
    assert {"rmse", "mae", "r2"} <= set(metrics)
    assert predictor.predict(frame, base_dir=tmp_path).dtype.kind == "f"


def test_multilabel_task(tmp_path) -> None:
    frame = make_rows(tmp_path, 40)
    frame["label"] = ["a|b", "b", "a", "c|a"] * 10
    cfg = tiny_config(tmp_path)
    cfg.data.task = "multilabel"
    predictor = Predictor(cfg).fit(frame, base_dir=tmp_path)
    assert predictor.classes_ == ["a", "b", "c"]
    metrics = predictor.evaluate(frame, base_dir=tmp_path)
    assert {"micro_f1", "macro_f1", "subset_accuracy"} <= set(metrics)
    assert all(isinstance(x, list) for x in predictor.predict(frame, base_dir=tmp_path))


def test_two_image_and_two_text_columns(tmp_path) -> None:
    frame = make_rows(tmp_path, 40)
    frame["image2"] = frame["image"]
    frame["caption2"] = frame["caption"].str.upper()
    cfg = tiny_config(tmp_path)
    cfg.data.image_cols, cfg.data.text_cols = ["image", "image2"], ["caption", "caption2"]
    predictor = Predictor(cfg).fit(frame, base_dir=tmp_path)
    assert predictor.model_.modalities == ["caption", "caption2", "image", "image2"]


def test_char_level_gru_on_non_latin_text(tmp_path) -> None:
    frame = make_rows(tmp_path, 40)
    frame["caption"] = ["这是红色的吗" if "red" in c else "это синий?" for c in frame["caption"]]
    cfg = tiny_config(tmp_path)
    cfg.model.text_encoder.options["level"] = "char"
    predictor = Predictor(cfg).fit(frame, base_dir=tmp_path)
    assert predictor.vocabulary_.level == "char" and "红" in predictor.vocabulary_.tokens


def test_imbalance_options(tmp_path, tiny_csv) -> None:
    """"weight": the loss weighs each class by its rarity; "sample": rows are drawn so that
    each class weighs the same in an epoch (and the loss is left alone)."""
    from mmfuse.tasks import get_task

    task = get_task("classification")
    targets = ["no"] * 90 + ["yes"] * 10
    drawn = task.sample_weights(targets, "sample").numpy()
    assert drawn[:90].sum() == pytest.approx(drawn[90:].sum())
    assert task.sample_weights(targets, "weight") is None
    assert task.head_options(targets, ["no", "yes"], "weight")["class_weights"].tolist() == pytest.approx(
        [100 / (2 * 90), 100 / (2 * 10)])
    for mode in ("weight", "sample"):
        frame = pd.read_csv(tiny_csv)
        frame = pd.concat([frame[frame["label"] == "no"], frame[frame["label"] == "yes"][:8]])
        frame.to_csv(tmp_path / "skewed.csv", index=False)
        cfg = tiny_config(tmp_path)
        cfg.train.imbalance, cfg.train.epochs = mode, 1
        weights = Predictor(cfg).fit(tmp_path / "skewed.csv").model_.head.class_weights
        assert (mode == "weight") == bool(weights[1] > 1 > weights[0])


def test_finetuned_pretrained_encoder_is_trained_saved_and_reloaded(tmp_path, tiny_csv) -> None:
    cfg = pretrained_config(tmp_path, epochs=1, batch_size=32)
    cfg.model.text_encoder.frozen = False
    predictor = Predictor(cfg).fit(tiny_csv)
    text = predictor.model_.encoders["text"]
    assert not text.frozen and any(p.requires_grad for p in text.parameters())
    groups = {g["base_lr"] for g in make_optimizer(predictor.model_, cfg.train).param_groups}
    assert groups == {cfg.train.lr, cfg.train.encoder_lr}
    predictor.save(tmp_path / "model")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as handle:
        names = list(handle.keys())
    assert any(n.startswith("encoders.text.") for n in names)  # fine-tuned: saved
    assert not any(n.startswith("encoders.image.") for n in names)  # frozen: from its package
    before = predictor.predict_proba(tiny_csv)
    pd.testing.assert_frame_equal(before, Predictor.load(tmp_path / "model").predict_proba(tiny_csv))


def test_the_kept_model_is_the_best_epoch_not_the_last(tmp_path, tiny_csv) -> None:
    cfg = tiny_config(tmp_path)
    cfg.train.epochs, cfg.train.lr = 12, 0.03  # a high rate: validation scores wander
    predictor = Predictor(cfg).fit(tiny_csv)
    history = predictor.history_
    best = max(history, key=lambda row: row["val_macro_f1"])
    assert predictor.metrics_["best_epoch"] == best["epoch"]
    assert predictor.metrics_["validation"]["macro_f1"] == pytest.approx(best["val_macro_f1"])
    assert predictor.metrics_["validation"]["loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_a_long_run_says_early_how_long_it_will_take(tmp_path, tiny_csv, capsys,
                                                     monkeypatch) -> None:
    """Once, after the first batches: an epoch's time, the planned epochs' and why (encoders
    trained here read no feature cache); progress bars are off in logs, so this is printed."""
    from mmfuse.training import pace

    monkeypatch.setattr(pace, "LONG_EPOCH_STEPS", 1)  # the tiny set's 7 batches count as long
    monkeypatch.setattr(pace, "PACE_BATCHES", 3)
    Predictor(tiny_config(tmp_path)).fit(tiny_csv)
    notes = [line for line in capsys.readouterr().err.splitlines() if "Training pace" in line]
    assert len(notes) == 1
    assert "an epoch" in notes[0] and "for 3 epochs" in notes[0]


def test_the_pace_note_gives_the_numbers() -> None:
    from mmfuse.training.pace import duration, pace_note

    assert [duration(s) for s in (12, 245, 12_000)] == ["12 s", "4 min 05 s", "3 h 20 min"]
    note = pace_note(batches=20, seconds=10.0, steps_per_epoch=1200, rows_per_batch=32,
                     epochs=30, trained=["image"], time_left=3000.0)
    # 0.5 s a batch: 10 min an epoch, 64 rows/s, 5 h for 30; 3,000 s leave 5 epochs
    assert "about 10 min 00 s an epoch (64 rows/s)" in note and "5 h 00 min for 30 epochs" in note
    assert "leaves about 5.0 epochs" in note and "image encoder being trained" in note
    assert "time limit" not in pace_note(20, 10.0, steps_per_epoch=1200, rows_per_batch=32,
                                         epochs=30, trained=[], time_left=None)


def test_late_fusion_weighs_its_modalities_on_the_held_out_rows(tmp_path) -> None:
    """After training, `late`'s weights are those that minimise the loss on the early-stopping
    rows (checked against a grid of weights run through the whole model there), and they
    favour the image, which alone decides the label, over the made-up text."""
    from test_auto import image_only_rows

    from mmfuse.training.inference import run_model

    rows = image_only_rows(tmp_path, 120, seed=3).rename(columns={"text": "caption"})
    rows.to_csv(tmp_path / "train.csv", index=False)
    predictor = Predictor(tiny_config(tmp_path, fusion="late")).fit(tmp_path / "train.csv")
    fitted, fusion = predictor.fitted_, predictor.fitted_.model.fusion
    held_out = predictor.split(predictor.read(tmp_path / "train.csv"))[1]
    dataset, targets = fitted.dataset(held_out), fitted.targets(held_out)
    chosen = fusion.scores.detach().softmax(0)  # (caption, image)

    def held_out_loss(image_weight: float) -> float:
        with torch.no_grad():
            fusion.scores.copy_(torch.log(torch.tensor([1 - image_weight, image_weight])))
        return float(fitted.model.head.loss(run_model(fitted.model, dataset, num_workers=0)[0],
                                            targets))

    grid = np.linspace(0.01, 0.99, 99)
    best = grid[int(np.argmin([held_out_loss(w) for w in grid]))]
    assert abs(float(chosen[1]) - best) <= 0.011
    assert chosen[1] > 0.5
