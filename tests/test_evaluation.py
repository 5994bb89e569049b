"""Robustness, ablation, calibration, profile, explanations and the report, on generated data
where the right answer is known: the label needs the square's colour (image) and the asked
colour (text), so removing either must hurt, and the evidence must sit on the square."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_rows
from PIL import Image
from sklearn.metrics import f1_score, roc_auc_score
from test_predictor import pretrained_config
from typer.testing import CliRunner

from mmfuse import Predictor
from mmfuse.cli import app
from mmfuse.evaluation.corruptions import IMAGE_CORRUPTIONS, TEXT_CORRUPTIONS, occlusion, truncation
from mmfuse.evaluation.explain import explain
from mmfuse.evaluation.profile import profile
from mmfuse.evaluation.report import build_report
from mmfuse.evaluation.robustness import robustness
from mmfuse.scoring import fit_temperature, reliability
from mmfuse.tasks.metrics import class_metrics, macro_auroc, macro_f1


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> tuple[Predictor, Path, Path]:
    folder = tmp_path_factory.mktemp("evaluation")
    make_rows(folder, 240, seed=0).to_csv(folder / "train.csv", index=False)
    make_rows(folder, 60, seed=1).to_csv(folder / "test.csv", index=False)
    config = pretrained_config(folder, epochs=20)
    config.model.image_encoder.image_size = 64
    config.train.modality_dropout = 0.2
    predictor = Predictor(config).fit(folder / "train.csv", run_dir=folder / "run")
    return predictor, folder / "test.csv", folder / "run"


def test_corruptions_are_deterministic_and_grow_with_severity() -> None:
    image = Image.new("RGB", (40, 40), "white")
    for name, corrupt in IMAGE_CORRUPTIONS.items():
        once = np.asarray(corrupt(image, 3, np.random.default_rng(1)))
        again = np.asarray(corrupt(image, 3, np.random.default_rng(1)))
        assert np.array_equal(once, again), name
    grey = [(np.asarray(occlusion(image, s, np.random.default_rng(0))) < 200).mean()
            for s in (1, 3, 5)]
    assert grey[0] < grey[1] < grey[2]
    text = "is there a red square in the top left corner of this image"
    assert [len(truncation(text, s, np.random.default_rng(0)).split()) for s in (1, 3, 5)] == [
        11, 7, 3]  # 85 %, 55 %, 25 % of 13 words
    for name, corrupt in TEXT_CORRUPTIONS.items():
        once = corrupt(text, 2, np.random.default_rng(4))
        assert once == corrupt(text, 2, np.random.default_rng(4)), name


def test_removing_either_modality_drops_accuracy_and_curves_fall(colour_model) -> None:
    predictor, test, _ = colour_model
    result = robustness(predictor, test, severities=(1, 5), seed=0)
    ablation = result["ablation"]
    assert ablation["both present"] >= 0.9, ablation
    assert ablation["image missing"] <= ablation["both present"] - 0.2, ablation
    assert ablation["text missing"] <= ablation["both present"] - 0.2, ablation
    # each word is dropped with probability 0.1 (severity 1) to 0.6 (5): the colour goes more often
    dropped = result["corruptions"]["text"]["word_dropout"]
    assert dropped["5"] < dropped["1"] <= result["clean"], dropped
    truncated = result["corruptions"]["text"]["truncation"]  # the colour is the last word
    assert truncated["5"] < result["clean"], truncated
    assert set(result["corruptions"]["image"]) == set(IMAGE_CORRUPTIONS)
    assert 0 < result["summary"] <= 1.0
    assert robustness(predictor, test, severities=(1, 5), seed=0) == result  # seeded


def test_image_evidence_sits_on_the_square_and_text_evidence_on_the_colour(colour_model):
    predictor, test, _ = colour_model
    records = explain(predictor, test, max_rows=6)
    ratios, by_word = [], {}
    for record in records:
        heat = np.asarray(record["heatmaps"]["image"])
        image = Image.open(record["images"]["image"]).convert("RGB").resize(heat.shape[::-1],
                                                                             Image.NEAREST)
        square = (np.asarray(image) < 200).any(-1)  # the only non-white pixels
        ratios.append((heat[square].sum() / heat.sum()) / square.mean())
        for word, score in record["tokens"]["caption"]:
            key = "<colour>" if word in ("red", "green", "blue") else word
            by_word.setdefault(key, []).append(abs(score))
        assert abs(sum(record["ablation_shares"].values()) - 1) < 1e-6
        assert set(record["fusion_weights"]) == {"caption", "image"}
    assert np.mean(ratios) >= 1.6, ratios  # twice the square's share of the picture, roughly
    mean = {word: float(np.mean(scores)) for word, scores in by_word.items()}
    assert max(mean, key=mean.get) == "<colour>", mean


def test_reliability_and_temperature_scaling() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 3, generator=generator) * 3
    labels = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, abs=0.25)
    table = reliability(np.array([0.9, 0.9, 0.6, 0.6, 0.6]), np.array([1, 1, 1, 0, 0]))
    # 2/5 of rows at 0.9 confidence, all right: gap 0.1; 3/5 at 0.6, a third right: gap 0.267
    assert table["ece"] == pytest.approx(2 / 5 * 0.1 + 3 / 5 * (0.6 - 1 / 3))
    assert sum(b["count"] for b in table["bins"]) == 5
    # Calibration is the probabilities' (top label): a decision rule that names another class
    # (ensembles favour rare classes for macro-F1) changes F1, not the calibration error.
    scores = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.4, 0.6]])
    truth = np.array([0, 0, 0, 1, 1])
    argmax = class_metrics(truth, scores.argmax(axis=1), scores, ["a", "b"])
    shifted = class_metrics(truth, np.array([0, 0, 1, 1, 1]), scores, ["a", "b"])
    assert shifted["ece"] == argmax["ece"] == pytest.approx(
        2 / 5 * 0.1 + 3 / 5 * (2 / 3 - 0.6))  # at 0.9 both right; at 0.6 two of three
    assert shifted["macro_f1"] > argmax["macro_f1"]


def test_macro_auroc_matches_scikit_learn_and_skips_classes_without_negatives_or_positives():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    scores = rng.dirichlet(np.ones(5), 300) + 0.3 * np.eye(5)[y]
    scores /= scores.sum(axis=1, keepdims=True)
    assert macro_auroc(np.eye(5)[y], scores) == pytest.approx(
        roc_auc_score(y, scores, multi_class="ovr", average="macro"))
    y[y == 2] = 0  # class 2 has no positives: left out, as scikit-learn cannot score it
    one_vs_rest = [roc_auc_score(y == c, scores[:, c]) for c in (0, 1, 3, 4)]
    assert macro_auroc(np.eye(5)[y], scores) == pytest.approx(np.mean(one_vs_rest))
    two = np.eye(5)[np.where(y == 1, 1, 0)]  # classes 0 and 1 only: one-column input
    assert macro_auroc(two[:, [0, 2]], scores[:, [0, 2]]) == pytest.approx(
        roc_auc_score(y != 1, scores[:, 0]))


def test_macro_f1_counts_as_scikit_learn_does_with_absent_classes() -> None:
    rng = np.random.default_rng(1)
    for n in (2, 5, 16):
        y, predicted = rng.integers(0, n, 400), rng.integers(0, n, 400)
        y[y == n - 1], predicted[predicted == 1] = 0, 0  # never true; never predicted
        assert macro_f1(y, predicted, n) == pytest.approx(
            f1_score(y, predicted, labels=range(n), average="macro", zero_division=0))


def test_calibrate_stores_the_temperature(colour_model, tmp_path) -> None:
    predictor, test, _ = colour_model
    temperature = predictor.calibrate(test)
    assert float(predictor.model_.head.temperature) == pytest.approx(temperature)
    predictor.save(tmp_path / "m")
    assert float(Predictor.load(tmp_path / "m").model_.head.temperature) == pytest.approx(
        temperature)
    predictor.model_.head.temperature.fill_(1.0)


@pytest.fixture(scope="module")
def binary_model(colour_model, tmp_path_factory) -> Predictor:
    """The colour data as a ``binary`` task (one logit) instead of two classes."""
    _, test, _ = colour_model
    config = pretrained_config(tmp_path_factory.mktemp("binary"), epochs=20)
    config.data.task = "binary"
    config.model.image_encoder.image_size = 64
    return Predictor(config).fit(test.parent / "train.csv")


@pytest.mark.parametrize("task", ["classification", "binary"])
def test_calibration_decides_labels_for_macro_f1_and_every_path_keeps_them(
        task, colour_model, binary_model, tmp_path) -> None:
    """A network leaning to the majority class (as one trained on skewed rows does): calibration
    fits the labels' shift as the ensembles' rule would on its tempered probabilities (scored
    here by scikit-learn), and predict, a saved folder and the ONNX file all decide with it; a
    folder saved before the shift existed decides as it did then."""
    from safetensors.torch import load_file, save_file

    from mmfuse.serving.export import export_onnx
    from mmfuse.tasks.decision import fit_shift

    predictor, test, _ = colour_model
    predictor = predictor if task == "classification" else binary_model
    predictor.save(tmp_path / "plain")
    biased = Predictor.load(tmp_path / "plain")
    # towards "no": the binary head's one logit is the "yes" class's
    output, lean = (0, -2.0) if task == "binary" else (biased.classes_.index("no"), 4.0)
    with torch.no_grad():
        biased.model_.head.linear.bias[output] += lean
    biased.calibrate(test)
    probabilities = biased.predict_proba(test).to_numpy()
    truth = np.array([biased.classes_.index(label) for label in pd.read_csv(test)["label"]])
    shift, alpha = fit_shift(probabilities, truth,
                             lambda y, labels: f1_score(y, labels, average="macro"))
    assert alpha > 0  # the case is one where the rule moves the labels
    assert np.allclose(biased.model_.head.decision_shift.numpy(), shift, atol=1e-6)
    decided = (np.log(probabilities) + shift).argmax(axis=1)
    labels = biased.predict(test)
    assert list(labels) == [biased.classes_[c] for c in decided]
    assert f1_score(truth, decided, average="macro") > f1_score(
        truth, probabilities.argmax(axis=1), average="macro")

    # a network's explanation is about the label predict gives, on a row the shift moved
    moved = int(np.flatnonzero(decided != probabilities.argmax(axis=1))[0])
    [record] = explain(biased, pd.read_csv(test).iloc[[moved]], base_dir=test.parent,
                       max_rows=1, steps=2)
    assert record["prediction"] == labels[moved]

    biased.save(tmp_path / "biased")
    assert list(Predictor.load(tmp_path / "biased").predict(test)) == list(labels)
    # The export checks its "prediction" output against `predict` on every row, some of
    # which the shift moved.
    assert (decided != probabilities.argmax(axis=1)).any()
    assert export_onnx(biased, tmp_path / "m.onnx", test, max_rows=len(truth))[
        "checked_rows"] == len(truth)
    weights = load_file(tmp_path / "biased" / "model.safetensors")
    del weights["head.decision_shift"]  # as saved before the shift existed
    save_file(weights, tmp_path / "biased" / "model.safetensors")
    older = Predictor.load(tmp_path / "biased").predict(test)
    assert list(older) == [biased.classes_[c] for c in probabilities.argmax(axis=1)]


def test_profile_reports_sizes_latency_and_memory(colour_model) -> None:
    predictor, test, run = colour_model
    result = profile(predictor, test, run_dir=run, repeats=3)
    counted = sum(sum(c.values()) for c in result["parameters"].values())
    assert counted == sum(p.numel() for p in predictor.model_.parameters())
    assert result["parameters"]["encoders.image"]["frozen"] > 0
    for size in ("batch_1", "batch_32"):
        for mode in ("raw", "cached"):
            assert result["latency"][size][mode]["p50_ms"] > 0
    assert result["peak_rss_mb"] > 0 and result["checkpoint_mb"] > 0
    assert result["epoch_seconds"]["epochs"] == len(predictor.history_)


def test_report_is_one_self_contained_page(colour_model, tmp_path) -> None:
    predictor, test, run = colour_model
    out = tmp_path / "report.html"
    report = build_report(predictor, test, out, run_dir=run, severities=(1, 5), explain_rows=2)
    page = out.read_text()
    for section in ("Summary", "Training", "Errors by class", "Robustness (accuracy)",
                    "Missing modalities",
                    "Efficiency", "Calibration", "Explained examples"):
        assert f">{section}<" in page
    assert page.count("data:image/png;base64,") == 4 + 2  # 4 figures + 2 explained rows
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
    assert (tmp_path / "report.html.json").exists() and len(report["explanations"]) == 2
    _screenshot_looks_like_a_page(out, tmp_path / "shot.png")


def _screenshot_looks_like_a_page(page: Path, shot: Path) -> None:
    """Render in headless Chromium (Debian's; .ci/run installs it) and check the picture."""
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={shot.parent / 'chrome'}", "--hide-scrollbars",
         "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (2400, 1280)
    header = pixels[:60].mean(axis=(0, 1))
    assert header.max() < 60  # the dark header rendered: the CSS applied
    assert pixels.std() > 30  # figures and tables, not an empty page


def test_evaluation_commands(colour_model, tmp_path) -> None:
    _, test, run = colour_model
    runner = CliRunner()
    for args in (["robustness", run, "--data", test, "--severities", "1,5"],
                 ["profile", run, "--data", test, "--repeats", "2"],
                 ["explain", run, "--data", test, "--out", tmp_path / "ex", "--max-rows", "2"],
                 ["report", run, "--data", test, "--out", tmp_path / "r.html", "--severities",
                  "3", "--explain-rows", "1"]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    assert (run / "robustness.json").exists() and (run / "profile.json").exists()
    assert len(list((tmp_path / "ex").glob("row-*.png"))) == 2
    assert (tmp_path / "r.html").exists()
    bad = runner.invoke(app, ["robustness", str(run), "--data", str(test), "--severities", "9"])
    assert bad.exit_code == 2 and "1 to 5" in bad.output


def test_ngram_explanations_name_the_ngrams_that_decide(tmp_path) -> None:
    from test_auto import config as auto_config
    from test_auto import made_up_script_rows

    from mmfuse import EncoderConfig

    rows = made_up_script_rows(tmp_path, 200, seed=1)
    config = auto_config(tmp_path)
    config.model.modalities = ["text"]
    config.model.text_encoder = EncoderConfig("ngram")
    predictor = Predictor(config).fit(rows, base_dir=tmp_path)
    records = explain(predictor, made_up_script_rows(tmp_path, 8, seed=2), base_dir=tmp_path,
                      max_rows=8)
    markers = ("\ue001\ue002\ue003", "\ue011\ue012\ue013")  # the words that carry the label
    # Among the n-grams shown (the strongest by |attribution|), the label's word supports the
    # prediction in most rows; a small neural model also leans on some chance n-grams.
    supported = [any(score > 0 and any(m in gram for m in markers)
                     for gram, score in record["tokens"]["text"]) for record in records]
    assert sum(supported) >= 6, [record["tokens"]["text"][:4] for record in records]
