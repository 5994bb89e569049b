"""Several photos in one image cell: parsing, validation findings that name the photo, and
features pooled over the photos against the untouched encoder."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLOURS, draw

from mmfuse import Config, DataConfig, EncoderConfig, Predictor
from mmfuse.data.images import open_image
from mmfuse.data.photos import MAX_PHOTOS, parse_photos, photos
from mmfuse.data.rows import read_rows
from mmfuse.encoders import create_encoder
from mmfuse.errors import DataValidationError
from mmfuse.features.cache import FeatureCache
from mmfuse.features.items import pooled_features


def test_a_cell_names_photos_as_a_json_list_or_separated_by_semicolons() -> None:
    assert parse_photos("a.jpg") == ["a.jpg"]
    assert parse_photos(" a.jpg ; b.png;; ") == ["a.jpg", "b.png"]
    assert parse_photos('["a.jpg", "dir/b c.png"]') == ["a.jpg", "dir/b c.png"]
    assert parse_photos(["a.jpg", "b.jpg"]) == ["a.jpg", "b.jpg"]  # a JSONL list
    with pytest.raises(ValueError, match="not one"):
        parse_photos('["a.jpg", ')
    with pytest.raises(ValueError, match="at most"):
        parse_photos(";".join(f"{i}.jpg" for i in range(MAX_PHOTOS + 1)))


def photo_rows(folder: Path, n: int, seed: int) -> pd.DataFrame:
    """One, two or three photos of a row's colour per cell; the label is the colour."""
    rng = random.Random(seed)
    (folder / "photos").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        names = []
        for k in range(1 + i % 3):
            name = f"photos/{seed}-{i}-{k}.png"
            draw(folder / name, colour, rng)
            names.append(name)
        cell = names[0] if len(names) == 1 else (
            ";".join(names) if i % 2 else str(names).replace("'", '"'))
        rows.append({"photos": cell, "text": "an item", "label": colour})
    return pd.DataFrame(rows)


def config(tmp_path: Path) -> Config:
    cfg = Config(data=DataConfig(image_cols=["photos"], text_cols=["text"], label_col="label"),
                 cache_dir=str(tmp_path / "cache"))
    cfg.train.num_workers = 0
    return cfg


def test_a_photo_that_cannot_be_read_is_named_with_its_row(tmp_path: Path) -> None:
    frame = photo_rows(tmp_path, 6, seed=0)
    frame.loc[4, "photos"] = "photos/0-4-0.png;photos/nowhere.png"
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataValidationError) as error:
        read_rows(tmp_path / "t.csv", config(tmp_path), tmp_path)
    [problem] = error.value.problems
    assert (problem.row, problem.column) == (5, "photos")
    assert "photo 2 of 2: image not found" in problem.message and "nowhere.png" in problem.message


def test_a_cells_features_are_the_mean_of_its_photos_as_the_encoder_sees_them(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    frame = photo_rows(tmp_path, 9, seed=1)
    frame.loc[3, "photos"] = ""  # no photo at all: a missing modality
    cfg.data.allow_missing = True
    rows = read_rows(frame, cfg, tmp_path, base_dir=tmp_path)
    assert [len(photos(c)) if c else 0 for c in rows["photos"]] == [1, 2, 3, 0, 2, 3, 1, 2, 3]
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=32))
    table = FeatureCache(tmp_path / "cache").table(encoder, list(rows["photos"].where(
        rows["photos"].notna(), None)), with_tokens=True)
    got = table.fetch(torch.arange(len(rows)))
    for i, cell in enumerate(rows["photos"]):
        if cell is None:
            assert not got["present"][i]
            continue
        # the untouched encoder, one photo at a time
        each = pooled_features(encoder, [open_image(p) for p in photos(cell)])
        torch.testing.assert_close(got["pooled"][i], each.mean(0), atol=1e-4, rtol=1e-4)
        tokens_per_photo = 1  # 32 px -> a 1 x 1 feature map
        assert int(got["token_mask"][i].sum()) == len(photos(cell)) * tokens_per_photo


def image_network_config(tmp_path: Path) -> Config:
    """A network on frozen Lite0 features of 32 px photos alone."""
    from mmfuse import ModelConfig, TrainConfig

    return Config(data=DataConfig(image_cols=["photos"], text_cols=["text"], label_col="label"),
                  model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0",
                                                                image_size=32),
                                    modalities=["image"], hidden_dim=16),
                  train=TrainConfig(epochs=15, num_workers=0, lr=3e-3),
                  cache_dir=str(tmp_path / "cache"))


def test_a_model_trained_on_cells_of_several_photos_predicts_and_reloads(tmp_path: Path) -> None:
    photo_rows(tmp_path, 60, seed=2).to_csv(tmp_path / "train.csv", index=False)
    photo_rows(tmp_path, 12, seed=3).to_csv(tmp_path / "test.csv", index=False)
    cfg = image_network_config(tmp_path)
    fitted = Predictor(cfg).fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    assert fitted.evaluate(tmp_path / "test.csv")["accuracy"] >= 0.75  # chance: 1/3
    loaded = Predictor.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                               fitted.predict_proba(tmp_path / "test.csv").to_numpy(), atol=1e-6)
    # Served: the photos of a row as a JSON list of base64 strings, or as repeated parts
    import base64

    from fastapi.testclient import TestClient

    from mmfuse.serving.app import create_app

    test = pd.read_csv(tmp_path / "test.csv")
    expected = loaded.predict_proba(tmp_path / "test.csv").to_numpy()
    with TestClient(create_app(loaded)) as client:
        for i in (1, 2):  # two and three photos
            names = parse_photos(test.loc[i, "photos"])
            body = {"photos": [base64.b64encode((tmp_path / n).read_bytes()).decode()
                               for n in names], "text": "an item"}
            served = client.post("/v1/predict", json=body).json()["probabilities"]
            np.testing.assert_allclose([served[c] for c in loaded.classes_], expected[i],
                                       atol=1e-4)
            parts = [("photos", (n, (tmp_path / n).read_bytes(), "image/png")) for n in names]
            served = client.post("/v1/predict", files=parts, data={"text": "an item"}).json()
            np.testing.assert_allclose([served["probabilities"][c] for c in loaded.classes_],
                                       expected[i], atol=1e-4)


def test_cells_of_several_photos_are_stored_and_read_from_disk_like_any_item(
        tmp_path: Path) -> None:
    """Past the memory budget the table stays on disk (out of core), with the same features
    as in memory; a second table computes nothing (the cells were stored)."""
    from mmfuse.features.stored import StoredTable

    cfg = config(tmp_path)
    rows = read_rows(photo_rows(tmp_path, 9, seed=4), cfg, tmp_path, base_dir=tmp_path)
    values = list(rows["photos"])
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=32))
    in_memory = FeatureCache(tmp_path / "cache").table(encoder, values, with_tokens=True)
    on_disk = FeatureCache(tmp_path / "cache", in_memory_bytes=0).table(encoder, values,
                                                                          with_tokens=True)
    assert isinstance(on_disk, StoredTable)
    shards = sorted((tmp_path / "cache").rglob("shard-*.safetensors"))
    rows_all = torch.arange(len(values))
    expected, got = in_memory.fetch(rows_all), on_disk.fetch(rows_all)
    torch.testing.assert_close(got["pooled"], expected["pooled"])
    torch.testing.assert_close(got["token_mask"].sum(1), expected["token_mask"].sum(1))
    FeatureCache(tmp_path / "cache").table(encoder, values, with_tokens=True)
    assert sorted((tmp_path / "cache").rglob("shard-*.safetensors")) == shards


def test_explain_says_which_photo_of_a_cell_mattered(tmp_path: Path) -> None:
    """A cell of two red photos and a blue one, predicted red: without the blue photo the
    red score falls least."""
    from mmfuse.evaluation.explain import explain

    photo_rows(tmp_path, 60, seed=5).to_csv(tmp_path / "train.csv", index=False)
    cfg = image_network_config(tmp_path)
    predictor = Predictor(cfg).fit(tmp_path / "train.csv")
    rng = random.Random(0)
    draw(tmp_path / "photos" / "red.png", "red", rng)
    draw(tmp_path / "photos" / "red2.png", "red", rng)
    draw(tmp_path / "photos" / "blue.png", "blue", rng)
    mixed = pd.DataFrame([{"photos": "photos/red.png;photos/red2.png;photos/blue.png",
                           "text": "an item", "label": "red"}])
    [record] = explain(predictor, mixed, base_dir=tmp_path, max_rows=1, steps=2)
    assert record["prediction"] == "red"
    drops = [drop for _, drop in record["photos"]["photos"]]
    assert drops[2] < min(drops[:2])  # the blue photo is the one that did not help red


def test_photos_read_by_a_trained_encoder_are_each_the_untouched_encoders_and_pooled_by_weight(
        ) -> None:
    """Cells of 2, 0 and 1 photos: each real photo's features equal the encoder's on that
    photo alone; the attention starts as the mean, its weights are zero on padding and on a
    cell with no photo (no NaN)."""
    from mmfuse.encoders.base import photo_features
    from mmfuse.features.batches import photo_batch
    from mmfuse.models.photo_pooling import PhotoPooling

    torch.manual_seed(0)
    encoder = create_encoder("image", EncoderConfig("small-cnn", image_size=32)).eval()
    photos_of = [torch.rand(3, 32, 32) for _ in range(3)]
    inputs = photo_batch([photos_of[:2], [], photos_of[2:]], 32)
    assert inputs["pixels"].shape == (3, 2, 3, 32, 32)
    assert inputs["present"].tolist() == [True, False, True]
    with torch.no_grad():
        per_photo, out = photo_features(encoder, inputs["pixels"], inputs["photo_mask"])
        alone = encoder(pixels=torch.stack(photos_of))
    torch.testing.assert_close(per_photo[inputs["photo_mask"]], alone.pooled, atol=1e-5, rtol=1e-5)
    assert out.token_mask.sum(1).tolist() == [2 * alone.tokens.shape[1], 0, alone.tokens.shape[1]]
    pooling = PhotoPooling(encoder.output_dim)
    torch.testing.assert_close(pooling(per_photo, inputs["photo_mask"])[0],
                               alone.pooled[:2].mean(0))
    with torch.no_grad():
        pooling.score.weight.normal_()
    weights = pooling.weights(per_photo, inputs["photo_mask"])
    assert torch.isfinite(weights).all() and weights[1].sum() == 0 and weights[2, 1] == 0
    torch.testing.assert_close(weights[[0, 2]].sum(1), torch.ones(2))


def test_a_fine_tuned_encoder_reads_every_photo_of_a_cell_in_every_command(tmp_path: Path
                                                                          ) -> None:
    """A CNN trained on cells of one to three photos (dropout on): it learns, reloads with
    the same predictions, serves them, exports them to ONNX and explains them."""
    from mmfuse import ModelConfig, TrainConfig
    from mmfuse.evaluation.explain import explain
    from mmfuse.serving.export import export_onnx

    photo_rows(tmp_path, 60, seed=6).to_csv(tmp_path / "train.csv", index=False)
    test = photo_rows(tmp_path, 12, seed=7)
    test.to_csv(tmp_path / "test.csv", index=False)
    cfg = Config(data=DataConfig(image_cols=["photos"], text_cols=["text"], label_col="label"),
                 model=ModelConfig(image_encoder=EncoderConfig("small-cnn", image_size=32),
                                   modalities=["image"], hidden_dim=16, dropout=0.2),
                 train=TrainConfig(epochs=12, num_workers=0, lr=3e-3, batch_size=16),
                 cache_dir=str(tmp_path / "cache"))
    fitted = Predictor(cfg).fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    assert not fitted.model_.encoder_for("photos").frozen
    assert fitted.evaluate(tmp_path / "test.csv")["accuracy"] >= 0.75  # chance: 1/3
    expected = fitted.predict_proba(tmp_path / "test.csv").to_numpy()
    loaded = Predictor.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(tmp_path / "test.csv").to_numpy(), expected,
                               atol=1e-6)
    from fastapi.testclient import TestClient

    from mmfuse.serving.app import create_app

    with TestClient(create_app(loaded)) as client:
        names = parse_photos(test.loc[2, "photos"])  # three photos
        parts = [("photos", (n, (tmp_path / n).read_bytes(), "image/png")) for n in names]
        served = client.post("/v1/predict", files=parts, data={"text": "an item"}).json()
        np.testing.assert_allclose([served["probabilities"][c] for c in loaded.classes_],
                                   expected[2], atol=1e-4)
    result = export_onnx(loaded, tmp_path / "m.onnx", tmp_path / "test.csv")
    assert result["inputs"] == ["photos.pixels", "photos.photo_mask"]
    [record] = explain(loaded, test.iloc[[2]], base_dir=tmp_path, max_rows=1, steps=2)
    assert len(record["photos"]["photos"]) == 3 and len(record["heatmaps"]["photos"]) == 32
