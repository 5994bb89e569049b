"""Matching and retrieval: losses, metrics, negatives, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import make_captions
from typer.testing import CliRunner

from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig, load
from mmfuse.cli import app
from mmfuse.data.pairs import make_matching_pairs
from mmfuse.errors import CheckpointError
from mmfuse.models.dual_encoder import ContrastiveLoss
from mmfuse.retrieval.predictor import RetrievalPredictor
from mmfuse.tasks.retrieval_metrics import retrieval_metrics

PRETRAINED = ["--image-col", "image", "--text-col", "caption", "--image-size", "64",
              "--num-workers", "0", "--epochs", "30", "--batch-size", "32", "--lr", "0.002"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("captions")
    make_captions(folder, seed=0, per_concept=2).to_csv(folder / "train.csv", index=False)
    make_captions(folder, seed=1, per_concept=2).to_csv(folder / "test.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def retrieval_run(captions: Path) -> Path:
    run = captions / "run"
    cli("train", "--task", "retrieval", "--data", captions / "train.csv", "--out", run,
        "--cache-dir", captions / "cache", *PRETRAINED)
    return run


def test_contrastive_loss_does_not_push_apart_captions_of_one_image() -> None:
    loss = ContrastiveLoss()
    logits = torch.tensor([[5.0, 4.0, 0.0], [4.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    shared = torch.tensor([[0, 0], [0, 1], [1, 2]])  # rows 0 and 1 show the same image
    distinct = torch.tensor([[0, 0], [1, 1], [2, 2]])
    assert loss.loss(logits, shared) < loss.loss(logits, distinct)
    only_third = torch.tensor([[5.0, float("-inf"), 0.0], [float("-inf"), 5.0, 0.0],
                               [0.0, 0.0, 5.0]])
    assert torch.allclose(loss.loss(logits, shared), loss.loss(only_third, distinct))


def test_recall_metrics_with_several_captions_per_image() -> None:
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0], [0, 1.0, 0]])
    perfect = retrieval_metrics(images, texts, [(0, 0), (0, 1), (2, 2), (1, 3)])
    assert perfect["t2i_r1"] == perfect["i2t_r1"] == 1.0 and perfect["t2i_median_rank"] == 1
    swapped = retrieval_metrics(images, texts, [(1, 0), (1, 1), (2, 2), (0, 3)])
    assert swapped["t2i_r1"] == 0.25 and swapped["t2i_r5"] == 1.0
    assert perfect["random"]["t2i_r1"] == pytest.approx(1 / 3)


def test_a_caption_shared_by_two_images_is_relevant_to_both() -> None:
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # images 0 and 1 look alike
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    metrics = retrieval_metrics(images, texts, [(0, 0), (1, 0), (2, 1)])
    assert metrics["t2i_r1"] == metrics["i2t_r1"] == 1.0
    assert metrics["random"]["t2i_r1"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_matching_negatives_never_use_a_caption_of_the_same_image() -> None:
    frame = pd.DataFrame({"image": ["a", "a", "b", "c"],
                          "caption": ["red dog", "a red dog", "red dot", "blue car"]})
    pairs = make_matching_pairs(frame, "image", "caption", negatives=2, hard_fraction=0.5)
    assert (pairs["_target"] == "yes").sum() == 4 and (pairs["_target"] == "no").sum() == 8
    own = {("a", "red dog"), ("a", "a red dog"), ("b", "red dot"), ("c", "blue car")}
    negatives = pairs[pairs["_target"] == "no"]
    assert not set(zip(negatives["image"], negatives["caption"], strict=True)) & own
    hard = negatives.iloc[:4]  # first draw: the most similar caption of another image
    assert hard.iloc[2]["caption"] in ("red dog", "a red dog")


def test_retrieval_beats_random_by_a_wide_margin_both_ways(retrieval_run, captions) -> None:
    model = load(retrieval_run)
    assert isinstance(model, RetrievalPredictor)
    metrics = model.evaluate(captions / "test.csv")
    chance = metrics["random"]
    for direction in ("t2i", "i2t"):
        assert metrics[f"{direction}_r1"] >= max(0.5, 5 * chance[f"{direction}_r1"]), metrics
        assert metrics[f"{direction}_r5"] >= max(0.9, 2 * chance[f"{direction}_r5"]), metrics
    output = cli("evaluate", retrieval_run, "--data", captions / "test.csv")
    assert "t2i_r1" in output
    assert json.loads((retrieval_run / "evaluation.json").read_text())["n_images"] == 36


def test_index_and_search_from_the_cli(retrieval_run, captions, tmp_path) -> None:
    cli("index", retrieval_run, "--images", captions / "shapes", "--out", tmp_path / "shapes.idx")
    hits = json.loads(cli("search", tmp_path / "shapes.idx", "a big red circle", "--top", "3",
                          "--json"))
    assert len(hits) == 3 and hits[0]["rank"] == 1
    names = [Path(hit["item"]).name for hit in hits]
    assert names[0].startswith("red_circle"), names  # colour and shape first; size is subtler
    assert any(name.startswith("red_circle_big") for name in names), names
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    query = next((captions / "shapes").glob("blue_triangle_small_1_*.png"))
    by_image = json.loads(cli("search", tmp_path / "shapes.idx", "--image", query,
                              "--texts", captions / "test.csv", "--top", "2", "--json"))
    assert all("blue triangle" in hit["item"] for hit in by_image)


def test_search_refuses_an_index_from_another_model(retrieval_run, captions, tmp_path) -> None:
    cli("index", retrieval_run, "--texts", captions / "test.csv", "--out", tmp_path / "t.idx")
    meta = json.loads((tmp_path / "t.idx" / "index.json").read_text())
    meta["model_fingerprint"] = "someone-else"
    (tmp_path / "t.idx" / "index.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["search", str(tmp_path / "t.idx"), "--image",
                                      str(next((captions / "shapes").glob("*.png")))])
    assert result.exit_code == 2 and "built by another model" in result.output


def test_zero_shot_by_label_prompts(retrieval_run, captions, tmp_path) -> None:
    output = cli("zero-shot", retrieval_run, "--data", captions / "test.csv", "--labels",
                 "red,green,blue", "--template", "a {} shape", "--output", tmp_path / "z.csv")
    assert "written to" in output
    predictions = pd.read_csv(tmp_path / "z.csv")
    truth = pd.read_csv(captions / "test.csv")["colour"]
    assert (predictions["prediction"] == truth).mean() >= 0.8  # chance: 1/3
    assert {"p_red", "p_green", "p_blue"} <= set(predictions.columns)


def test_zero_shot_on_a_manifest_of_images_only(retrieval_run, captions, tmp_path) -> None:
    """Zero-shot classifies images: no caption column (or an empty one) is needed."""
    test = pd.read_csv(captions / "test.csv").drop_duplicates("image")
    photos = test[["image", "colour"]].rename(columns={"image": "photo"})
    photos.to_csv(captions / "photos.csv", index=False)
    output = cli("zero-shot", retrieval_run, "--data", captions / "photos.csv", "--image-col",
                 "photo", "--label-col", "colour", "--labels", "red,green,blue", "--template",
                 "a {} shape", "--output", tmp_path / "z.csv")
    assert "zero-shot accuracy against column 'colour'" in output
    predictions = pd.read_csv(tmp_path / "z.csv")
    assert len(predictions) == len(photos)
    assert (predictions["prediction"].to_numpy() == photos["colour"].to_numpy()).mean() >= 0.8
    test.assign(caption="").to_csv(captions / "empty_captions.csv", index=False)
    cli("zero-shot", retrieval_run, "--data", captions / "empty_captions.csv", "--labels",
        "red,green,blue", "--output", tmp_path / "z2.csv")
    assert len(pd.read_csv(tmp_path / "z2.csv")) == len(test)


def test_matching_model_separates_true_from_drawn_pairs(captions) -> None:
    config = Config(
        data=DataConfig(image_cols=["image"], text_cols=["caption"], task="matching"),
        model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0", image_size=64),
                          text_encoder=EncoderConfig("minilm", max_length=16), hidden_dim=64,
                          fusion="concat"),
        train=TrainConfig(epochs=30, batch_size=32, lr=2e-3, num_workers=0, patience=30),
        cache_dir=str(captions / "cache"),
    )
    matcher = Predictor(config).fit(captions / "train.csv")
    metrics = matcher.evaluate(captions / "test.csv")
    assert metrics["auroc"] >= 0.8 and {"accuracy", "f1"} <= set(metrics)
    pairs = pd.read_csv(captions / "test.csv")
    assert set(matcher.predict(pairs, base_dir=captions)) <= {"yes", "no"}


def test_index_streams_to_disk_in_shards(retrieval_run, captions, tmp_path, monkeypatch) -> None:
    import mmfuse.model_kinds as kinds
    from mmfuse.retrieval.index import EmbeddingIndex

    model = RetrievalPredictor.load(retrieval_run)
    paths = sorted((captions / "shapes").glob("*.png"))
    monkeypatch.setattr(kinds, "EMBED_CHUNK", 5)
    assert model.write_index("image", paths, tmp_path / "idx") == len(paths)
    assert len(list((tmp_path / "idx").glob("embeddings-*.safetensors"))) == -(-len(paths) // 5)
    streamed, whole = EmbeddingIndex.load(tmp_path / "idx"), model.index_images(paths)
    assert streamed.items == whole.items
    torch.testing.assert_close(streamed.embeddings, whole.embeddings)
    (tmp_path / "idx" / "index.json").unlink()  # what a build killed half-way leaves
    with pytest.raises(CheckpointError, match="not an mmfuse index"):
        EmbeddingIndex.load(tmp_path / "idx")
