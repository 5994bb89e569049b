"""Missing modalities on realistic files: holes in both columns, mixed within one file, in
training and in prediction, under pandas' old (object) and new (``str`` dtype) string semantics."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_rows, tiny_config
from typer.testing import CliRunner

from mmfuse import EncoderConfig, Predictor
from mmfuse.cli import app
from mmfuse.data.validate import cells


@pytest.fixture(params=[False, True], ids=["object-strings", "str-dtype"])
def string_semantics(request):
    """pandas 2 stores strings as object (None stays None); pandas 3 infers ``str`` (None -> NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the option is deprecated in pandas 3, still honoured
        try:
            context = pd.option_context("future.infer_string", request.param)
        except (KeyError, pd.errors.OptionError):  # an older pandas without the option
            pytest.skip("this pandas has no future.infer_string option")
        with context:
            yield request.param


def holey_csv(folder: Path, n: int, seed: int) -> Path:
    """A manifest where some rows lack the caption and others the image (never both)."""
    frame = make_rows(folder, n, seed=seed)
    frame.loc[frame.index % 5 == 1, "caption"] = ""
    frame.loc[frame.index % 5 == 3, "image"] = ""
    path = folder / f"holes-{seed}.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("encoders", ["trainable", "frozen"])
def test_mixed_holes_train_predict_evaluate(tmp_path, string_semantics, encoders) -> None:
    cfg = tiny_config(tmp_path)
    if encoders == "frozen":  # cached features: the feature-cache path
        cfg.model.image_encoder = EncoderConfig("efficientnet-lite0", image_size=32)
        cfg.model.text_encoder = EncoderConfig("minilm", max_length=16)
    cfg.train.modality_dropout, cfg.data.allow_missing, cfg.train.epochs = 0.3, True, 2
    train = holey_csv(tmp_path, 60, seed=0)
    predictor = Predictor(cfg).fit(train)
    test = holey_csv(tmp_path, 30, seed=1)
    out = predictor.predict_frame(test)
    assert len(out) == 30
    weights = out.set_index("row")
    # Rows 2, 7, ... (0-based 1, 6, ...) have no caption, rows 4, 9, ... no image.
    assert (weights.loc[range(2, 31, 5), "weight_caption"] == 0).all()
    assert (weights.loc[range(4, 31, 5), "weight_image"] == 0).all()
    both = [r for r in range(1, 31) if r % 5 not in (2, 4)]
    assert np.allclose(weights.loc[both, ["weight_image", "weight_caption"]].sum(axis=1), 1.0)
    metrics = predictor.evaluate(test)
    assert metrics["n"] == 30


def test_cells_gives_none_for_every_missing_marker() -> None:
    frame = pd.DataFrame({"text": pd.Series(["a", None, np.nan, pd.NA, "b"], dtype=object)})
    assert cells(frame, "text") == ["a", None, None, None, "b"]


def test_cli_predict_and_evaluate_on_a_file_with_mixed_holes(tmp_path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.train.modality_dropout, cfg.data.allow_missing, cfg.train.epochs = 0.3, True, 1
    Predictor(cfg).fit(holey_csv(tmp_path, 40, seed=0), run_dir=tmp_path / "run")
    test = holey_csv(tmp_path, 20, seed=1)
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(tmp_path / "run"), "--data", str(test),
                                 "--output", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 20
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--data", str(test)])
    assert result.exit_code == 0, result.output
