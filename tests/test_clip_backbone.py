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
    from test_cli import cli, train_auto_fast

    from mmfuse.auto.leaderboard import read_leaderboard

    folder = clip_folder(tmp_path / "clip")
    run = train_auto_fast(tmp_path, tiny_csv, "--backbone", f"hf:{folder}")
    tried = {r.candidate for r in read_leaderboard(run)["rows"]}
    assert {f"image: hf:{folder}", f"text: hf:{folder}",
            f"member: zero-shot prompts + LR on hf:{folder}"} <= tried, tried
    assert "text: minilm" not in tried
    # the head started from the prompts is an ensemble member like any: it exports
    code, output = cli("export", str(run), "--data", str(tiny_csv), "--out",
                       str(tmp_path / "m.onnx"))
    assert code == 0 and (tmp_path / "m.onnx").exists(), output


def zero_shot_member(tmp_path: Path, folder: Path, rows: int = 30):
    """A zero-shot-started member's fitting inputs on ``rows`` labelled colour squares read
    through the CLIP folder's image tower, from the feature cache."""
    from conftest import make_rows, tiny_config

    from mmfuse.config import EncoderConfig
    from mmfuse.data.rows import read_rows
    from mmfuse.ensemble.inputs import MemberInputs, View
    from mmfuse.ensemble.zero_shot import ZERO_SHOT, ZeroShotMember
    from mmfuse.features.cache import FeatureCache

    make_rows(tmp_path, rows, seed=1).to_csv(tmp_path / "rows.csv", index=False)
    config = tiny_config(tmp_path)
    encoder = EncoderConfig(f"hf:{folder}")
    config.model.image_encoder = encoder
    frame = read_rows(tmp_path / "rows.csv", config, tmp_path)
    classes = sorted(frame["_target"].unique())
    y = np.array([classes.index(t) for t in frame["_target"]])
    inputs = MemberInputs.from_rows(frame, config, FeatureCache(tmp_path / "cache"), {})
    return ZeroShotMember(View(ZERO_SHOT, encoder), classes), inputs, y, frame


def test_a_head_started_from_zero_shot_prompts_starts_as_the_folders_own_zero_shot(
        tmp_path: Path, float32: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no weight on the data the fitted head is the folder's zero-shot classifier:
    ``transformers``' own ``logits_per_image.softmax`` for the same prompts."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    from mmfuse.ensemble import members, zero_shot

    folder = clip_folder(tmp_path / "clip")
    monkeypatch.setitem(members.C_BY_VIEW, zero_shot.ZERO_SHOT, 0.0)
    member, inputs, y, frame = zero_shot_member(tmp_path, folder)
    got = member.fit(inputs, y).predict_proba(inputs)
    clip = CLIPModel.from_pretrained(folder).eval()
    prompts = AutoTokenizer.from_pretrained(folder)(
        [zero_shot.PROMPT.format(c) for c in member.classes], padding=True, return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(folder)(
        images=[Image.open(tmp_path / p).convert("RGB") for p in frame["image"]],
        return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = clip(pixel_values=pixels, **prompts).logits_per_image.softmax(-1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(member.zero_shot(inputs), expected, atol=1e-5)


def test_a_head_started_from_zero_shot_prompts_learns_from_the_rows(
        tmp_path: Path, float32: None) -> None:
    """Fitted on labelled rows it moves from the prompts towards the rows; its fit is
    scikit-learn's L2 logistic regression when the prompts are taken away (the pull then
    goes towards zero, as scikit-learn's does), and counts a row of weight 2 twice."""
    from scipy.special import log_softmax
    from sklearn.linear_model import LogisticRegression

    from mmfuse.ensemble.members import C_BY_VIEW
    from mmfuse.ensemble.zero_shot import ZERO_SHOT, fit_towards

    folder = clip_folder(tmp_path / "clip")
    member, inputs, y, frame = zero_shot_member(tmp_path, folder, rows=60)
    fitted = member.fit(inputs, y).predict_proba(inputs)
    before = member.zero_shot(inputs)
    loss = [-np.log(p[np.arange(len(y)), y]).mean() for p in (before, fitted)]
    assert loss[1] < loss[0], loss
    x, prior = member._view(inputs), member.arrays["prior"]

    def log_probabilities(coef: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return log_softmax(x @ coef.T + bias, axis=1)

    # three classes (each square's colour): scikit-learn fits two as one binary model
    colour = np.array([int(Path(p).stem.split("_")[1]) % 3 for p in frame["image"]])
    reference = LogisticRegression(C=C_BY_VIEW[ZERO_SHOT], tol=1e-10, max_iter=10_000)
    np.testing.assert_allclose(
        log_probabilities(*fit_towards(x, colour, np.zeros((3, x.shape[1])), None)),
        reference.fit(x, colour).predict_log_proba(x), atol=1e-3)
    weights = np.where(np.arange(len(y)) % 2 == 0, 2.0, 1.0)
    repeated = np.concatenate([np.arange(len(y)), np.arange(0, len(y), 2)])
    np.testing.assert_allclose(log_probabilities(*fit_towards(x, y, prior, weights)),
                               log_probabilities(*fit_towards(x[repeated], y[repeated], prior,
                                                              None)), atol=1e-3)


def test_an_ensemble_with_a_zero_shot_started_head_reloads_and_exports(
        tmp_path: Path, float32: None) -> None:
    """Beside the image features' own LR, saved and loaded (the prompts' weights travel as
    arrays: no text tower at prediction) and exported, each against the untouched model."""
    from mmfuse import Predictor
    from mmfuse.ensemble.inputs import View
    from mmfuse.ensemble.model import EnsembleModel
    from mmfuse.ensemble.zero_shot import ZERO_SHOT
    from mmfuse.features.cache import FeatureCache
    from mmfuse.serving.export import export_onnx

    folder = clip_folder(tmp_path / "clip")
    member, inputs, y, frame = zero_shot_member(tmp_path, folder, rows=40)
    frame.loc[frame.index[::5], "image"] = None  # missing photos read as zeros
    encoder = member.view.encoder
    halves = np.arange(len(frame)) % 2
    folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
    ensemble, _ = EnsembleModel.fit(inputs.config, frame, [View(ZERO_SHOT, encoder),
                                                           View("image", encoder)],
                                    folds, FeatureCache(tmp_path / "cache"))
    assert [m.view.kind for m in ensemble.members] == [ZERO_SHOT, "image"]
    expected = ensemble.predict(frame)[1]
    ensemble.save(tmp_path / "ensemble")
    np.testing.assert_allclose(EnsembleModel.load(tmp_path / "ensemble").predict(frame)[1],
                               expected, atol=1e-6)
    result = export_onnx(Predictor.of(ensemble), tmp_path / "m.onnx", frame)
    assert result["max_abs_difference"] < 1e-4


def test_only_a_folder_with_both_towers_and_a_tokenizer_starts_a_head_from_prompts(
        tmp_path: Path) -> None:
    """A ViT folder, and a CLIP folder whose tokenizer files are missing, add no
    zero-shot-started member (it could not embed the prompts, and would fail the others)."""
    from mmfuse.encoders.hf_folder import pairs_image_and_text

    clip = clip_folder(tmp_path / "clip")
    assert pairs_image_and_text(f"hf:{clip}")
    assert not pairs_image_and_text(f"hf:{vit_folder(tmp_path / 'vit')}")
    assert not pairs_image_and_text("efficientnet-lite0")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (clip / name).unlink()
    assert not pairs_image_and_text(f"hf:{clip}")
