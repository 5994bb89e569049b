"""A CLIP-style folder (``hf:DIR``) used as it is, with no training: zero-shot, index and
search, against the folder's own ``transformers`` model. The folder is a tiny random CLIP
made here, with MiniLM's tokenizer files: nothing is downloaded."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLOURS, clip_folder, draw, vit_folder
from PIL import Image
from typer.testing import CliRunner

from mmfuse.cli.app import app
from mmfuse.errors import ConfigError
from mmfuse.retrieval.predictor import RetrievalPredictor


def photos(folder: Path) -> pd.DataFrame:
    rng = random.Random(0)
    (folder / "photos").mkdir()
    rows = []
    for k, (colour, size) in enumerate(zip(list(COLOURS) * 2, (20, 47, 90, 33, 64, 120),
                                           strict=True)):
        draw(folder / "photos" / f"{k}.png", colour, rng, size=size)
        rows.append({"image": f"photos/{k}.png", "colour": colour})
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "photos.csv", index=False)
    return frame


def test_zero_shot_equals_the_folders_own_clip(tmp_path: Path, float32: None) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    folder = clip_folder(tmp_path / "clip")
    frame = photos(tmp_path)
    labels = ["red", "blue", "green"]
    model = RetrievalPredictor.from_backbone(f"hf:{folder}")
    got = model.zero_shot(tmp_path / "photos.csv", labels, "a photo of a {} square")
    # the folder's own model, untouched
    clip = CLIPModel.from_pretrained(folder).eval()
    prompts = AutoTokenizer.from_pretrained(folder)(
        [f"a photo of a {label} square" for label in labels], padding=True, return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(folder)(
        images=[Image.open(tmp_path / p).convert("RGB") for p in frame["image"]],
        return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = clip(pixel_values=pixels, **prompts).logits_per_image.softmax(-1).numpy()
    np.testing.assert_allclose(got[[f"p_{label}" for label in labels]].to_numpy(), expected,
                               atol=1e-5)


def test_zero_shot_index_and_search_from_the_command_line(tmp_path: Path) -> None:
    folder = clip_folder(tmp_path / "clip")
    photos(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["zero-shot", f"hf:{folder}", "--data",
                                 str(tmp_path / "photos.csv"), "--labels", "red,blue,green",
                                 "--label-col", "colour", "--output", str(tmp_path / "z.csv")])
    assert result.exit_code == 0, result.output
    assert "zero-shot accuracy against column 'colour'" in result.output
    assert len(pd.read_csv(tmp_path / "z.csv")) == 6
    result = runner.invoke(app, ["index", f"hf:{folder}", "--images", str(tmp_path / "photos"),
                                 "--out", str(tmp_path / "index")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(tmp_path / "index"), "a red square", "--top",
                                 "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(__import__("json").loads(result.output)) == 3


def test_a_folder_without_a_text_tower_is_not_a_dual_encoder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a CLIP-style folder"):
        RetrievalPredictor.from_backbone(f"hf:{vit_folder(tmp_path / 'vit')}")


@pytest.mark.parametrize("full", [False, True], ids=["locked-image", "full"])
def test_a_retrieval_model_fine_tuned_from_the_folder_reloads_with_the_same_vectors(
        tmp_path: Path, full: bool) -> None:
    """--backbone: the folder's towers and scale to start from; LiT (image tower locked,
    text tower tuned) by default, both tuned with --finetune-image."""
    from conftest import make_captions

    from mmfuse import load

    folder = clip_folder(tmp_path / "clip")
    make_captions(tmp_path, seed=0, per_concept=2).to_csv(tmp_path / "train.csv", index=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--task", "retrieval", "--data", str(tmp_path / "train.csv"), "--image-col",
        "image", "--text-col", "caption", "--backbone", f"hf:{folder}", "--epochs", "2",
        "--num-workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(run),
        *(["--finetune-image"] if full else [])])
    assert result.exit_code == 0, result.output
    fitted = load(run)
    encoders = fitted.model_.encoders
    assert encoders["image"].frozen is not full and not encoders["text"].frozen
    assert isinstance(fitted.model_.project["text"], torch.nn.Identity)  # the folder's space
    texts = ["a red square", "a blue circle"]
    untouched = RetrievalPredictor.from_backbone(f"hf:{folder}").embed_texts(texts)
    tuned = fitted.embed_texts(texts)
    assert not torch.allclose(tuned, untouched, atol=1e-4)  # the text tower learned
    again = load(run).embed_texts(texts)
    torch.testing.assert_close(again, tuned, atol=1e-5, rtol=1e-5)


def test_a_backbone_keeps_auto_mode_on_for_classification_with_its_towers(
        tmp_path: Path, tiny_csv: Path) -> None:
    """--backbone names both encoders: auto mode searches with the folder's image and text
    towers in place of the packaged encoders."""
    from test_cli import train_auto_fast

    from mmfuse.auto.leaderboard import read_leaderboard

    folder = clip_folder(tmp_path / "clip")
    run = train_auto_fast(tmp_path, tiny_csv, "--backbone", f"hf:{folder}")
    tried = {r.candidate for r in read_leaderboard(run)["rows"]}
    assert {f"image: hf:{folder}", f"text: hf:{folder}"} <= tried, tried
    assert "text: minilm" not in tried
