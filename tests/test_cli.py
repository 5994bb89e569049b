"""The command line end to end on a tiny generated dataset, including a SIGKILL and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_rows
from typer.testing import CliRunner

from mmfuse import Predictor
from mmfuse.cli import app
from mmfuse.fusion import FUSIONS

TINY = ["--image-col", "image", "--text-col", "caption", "--label-col", "label",
        "--image-encoder", "small-cnn", "--text-encoder", "gru", "--image-size", "32",
        "--num-workers", "0"]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def train_auto_fast(tmp_path: Path, data: Path, *flags: str) -> Path:
    """A short auto-mode run (preset fast, 90 s, 2 epochs) with ``flags``; its run folder."""
    run = tmp_path / "run"
    code, output = cli("train", "--data", str(data), "--out", str(run), "--preset", "fast",
                       "--time-limit", "90", "--epochs", "2", "--cache-dir", str(tmp_path / "c"),
                       "--image-col", "image", "--text-col", "caption", "--num-workers", "0",
                       *flags)
    assert code == 0, output
    return run


def test_train_evaluate_predict_list(tmp_path: Path, tiny_csv: Path) -> None:
    run = tmp_path / "run"
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(run), "--epochs", "2",
                       "--test-data", str(tiny_csv), "--cache-dir", str(tmp_path / "c"),
                       "--fusion", "weighted", *TINY)
    assert code == 0, output
    assert "model saved in" in output
    assert {"history.csv", "history.json", "test_metrics.json"} <= {p.name for p in run.iterdir()}
    code, output = cli("evaluate", str(run), "--data", str(tiny_csv))
    assert code == 0, output
    metrics = json.loads((run / "evaluation.json").read_text())
    assert {"accuracy", "macro_f1", "micro_f1", "auroc", "confusion_matrix", "per_class"} <= set(
        metrics)
    code, output = cli("predict", str(run), "--data", str(tiny_csv),
                       "--output", str(tmp_path / "p.csv"))
    assert code == 0, output
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert len(predictions) == 120
    assert {"row", "prediction", "p_yes", "p_no", "weight_image", "weight_caption"} <= set(
        predictions.columns)
    code, output = cli("list")
    assert code == 0
    for name in [*FUSIONS.names(), "efficientnet-lite0", "minilm", "gru", "easy-vqa"]:
        assert name in output


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_every_fusion_from_the_cli(tmp_path: Path, tiny_csv: Path, fusion: str) -> None:
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(tmp_path / "r"),
                       "--epochs", "1", "--fusion", fusion, *TINY)
    assert code == 0, output
    code, output = cli("predict", str(tmp_path / "r"), "--data", str(tiny_csv), "--output",
                       str(tmp_path / "p.csv"))
    assert code == 0, output
    written = pd.read_csv(tmp_path / "p.csv")
    expected = Predictor.load(tmp_path / "r").predict_proba(tiny_csv)
    np.testing.assert_allclose(written[[f"p_{c}" for c in expected.columns]].to_numpy(),
                               expected.to_numpy(), atol=1e-6)  # the CSV's decimal digits


def test_user_errors_are_clear_and_without_traceback(tmp_path: Path, tiny_csv: Path) -> None:
    args = ["train", "--data", str(tiny_csv), "--out", str(tmp_path / "r"), *TINY]
    code, output = cli(*args[:-12], "--text-col", "captoin", *TINY[2:])
    assert code == 2
    assert "column 'captoin': column not found" in output and "Did you mean 'caption'" in output
    assert "Traceback" not in output
    code, output = cli(*args, "--fusion", "concatt")
    assert code == 2 and "unknown fusion 'concatt'" in output and "Did you mean 'concat'" in output
    code, output = cli("evaluate", str(tmp_path), "--data", str(tiny_csv))
    assert code == 2 and "not an mmfuse model folder" in output


def test_resume_before_any_epoch_finished_starts_over(tmp_path: Path, tiny_csv: Path) -> None:
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(tmp_path / "r"),
                       "--epochs", "1", "--resume", *TINY)
    assert code == 0, output
    assert "starting at epoch 1" in output


def test_bad_rows_skipped_and_listed(tmp_path: Path) -> None:
    frame = make_rows(tmp_path, 60)
    frame.loc[3, "image"] = "images/gone.png"
    frame.to_csv(tmp_path / "train.csv", index=False)
    code, output = cli("train", "--data", str(tmp_path / "train.csv"), "--out",
                       str(tmp_path / "r"), "--epochs", "1", "--on-bad-rows", "skip", *TINY)
    assert code == 0, output
    bad = pd.read_csv(tmp_path / "r" / "bad_rows.csv")
    assert bad.to_dict("records") == [{"file": str(tmp_path / "train.csv"), "row": 4,
                                       "column": "image",
                                       "problem": f"image not found: {tmp_path}/images/gone.png"}]


def _train_command(data: Path, out: Path, cache: Path) -> list[str]:
    # One intra-op thread: the two processes then sum in one order (with two, on a loaded
    # machine, a resumed run's losses differed from the uninterrupted one's by ~1e-5)
    return [sys.executable, "-m", "mmfuse", "train", "--data", str(data), "--out", str(out),
            "--epochs", "10", "--cache-dir", str(cache), "--seed", "3", "--threads", "1", *TINY]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    make_rows(tmp_path, 600).to_csv(tmp_path / "train.csv", index=False)
    data, cache = tmp_path / "train.csv", tmp_path / "cache"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_command(data, tmp_path / "full", cache), check=True, env=env,
                   capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(data, killed, cache), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # history.json is written last in an epoch (after the checkpoint): waiting for it means
    # the kill cannot land between the two writes and leave no history to count.
    while not (killed / "history.json").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    epochs_before_kill = len(json.loads((killed / "history.json").read_text()))
    assert epochs_before_kill < 10  # it really was interrupted

    resumed = subprocess.run(_train_command(data, killed, cache) + ["--resume"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming after epoch" in resumed.stderr
    assert not list(killed.glob(".*.tmp"))
    full = pd.read_csv(tmp_path / "full" / "history.csv")
    again = pd.read_csv(killed / "history.csv")
    columns = ["epoch", "train_loss", "val_accuracy", "val_macro_f1", "val_loss"]
    pd.testing.assert_frame_equal(full[columns], again[columns], atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["validation"][
        "accuracy"] == pytest.approx(
        json.loads((killed / "metrics.json").read_text())["validation"]["accuracy"], abs=1e-6)


def test_train_flags_are_the_config_fields(tmp_path: Path, tiny_csv: Path) -> None:
    """Each flag lands in the YAML key of the same meaning (flags are made from the config)."""
    import yaml

    from mmfuse.cli.options import ENCODER_FLAGS, HELP, MODEL_FLAGS, READING_FLAGS, config_flags

    run = tmp_path / "run"
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(run), "--epochs", "1",
                       "--cache-dir", str(tmp_path / "c"), "--fusion", "concat", *TINY,
                       "--allow-missing", "--modality-dropout", "0.25", "--hidden-dim", "8",
                       "--patience", "3", "--weight-decay", "0.02", "--val-fraction", "0.2",
                       "--imbalance", "sample")
    assert code == 0, output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["allow_missing"] is True and saved["data"]["val_fraction"] == 0.2
    assert saved["data"]["image_cols"] == ["image"] and saved["data"]["text_cols"] == ["caption"]
    assert saved["model"]["hidden_dim"] == 8 and saved["model"]["fusion"] == "concat"
    assert saved["model"]["image_encoder"]["name"] == "small-cnn"
    assert saved["model"]["image_encoder"]["image_size"] == 32
    assert saved["train"] | {"modality_dropout": 0.25, "patience": 3, "weight_decay": 0.02,
                             "imbalance": "sample", "epochs": 1} == saved["train"]
    names = [flag.name for flag in config_flags()]
    assert len(names) == len(set(names))
    assert len(HELP) + len(ENCODER_FLAGS) + len(MODEL_FLAGS) + len(READING_FLAGS) == len(names)
    # A model flag with auto mode's own flags is refused, naming the model flag.
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(tmp_path / "x"),
                       "--preset", "fast", "--hidden-dim", "8")
    assert code == 2 and "--hidden-dim" in output


def test_the_version_is_printed() -> None:
    from mmfuse import __version__

    code, output = cli("--version")
    assert code == 0 and output.strip() == f"mmfuse {__version__}"
