"""Bad inputs a user (or a tampered folder) gives the command line: one clear sentence and
exit code 2, checked before any work; never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_rows, tiny_config
from typer.testing import CliRunner

from mmfuse import Predictor
from mmfuse.cli import app
from mmfuse.encoders import create_encoder
from mmfuse.features.cache import FeatureCache
from mmfuse.io import load_tensors, save_tensors

TINY = ["--image-col", "image", "--text-col", "caption", "--label-col", "label",
        "--image-encoder", "small-cnn", "--text-encoder", "gru", "--image-size", "32",
        "--num-workers", "0", "--epochs", "1"]


def refused(*args: str) -> str:
    """The output of a command that must end with exit code 2 and no traceback."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "1000"})  # no wrapping
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A small trained run folder and its manifest."""
    folder = tmp_path_factory.mktemp("hardening")
    make_rows(folder, 48, seed=0).to_csv(folder / "data.csv", index=False)
    Predictor(tiny_config(folder)).fit(folder / "data.csv", run_dir=folder / "run")
    return folder / "run", folder / "data.csv"


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--epochs", "-3", "train.epochs must be a number of at least 1, got -3"),
    ("--batch-size", "0", "train.batch_size must be a number of at least 1"),
    ("--val-fraction", "1.5", "data.val_fraction must be a number of at least"),
    ("--dropout", "1", "model.dropout must be a number of at least 0 and at most"),
    ("--lr", "0", "train.lr must be a number of at least"),
])
def test_out_of_range_numbers_are_refused_with_their_range(tmp_path, tiny_csv, flag, value,
                                                            says) -> None:
    output = refused("train", "--data", str(tiny_csv), "--out", str(tmp_path / "r"), *TINY,
                     flag, value)
    assert says in output
    assert not (tmp_path / "r").exists()


def test_output_paths_are_checked_before_any_work(tmp_path, tiny_csv, run) -> None:
    folder, data = run
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert "is a file; name a folder" in refused(
        "train", "--data", str(tiny_csv), "--out", str(a_file), *TINY)
    assert "is a folder; name a file" in refused(
        "predict", str(folder), "--data", str(data), "--output", str(tmp_path))
    assert "a-file is a file, not a folder" in refused(
        "predict", str(folder), "--data", str(data), "--output", str(a_file / "p.csv"))
    assert "is a file; name a folder" in refused(
        "explain", str(folder), "--data", str(data), "--out", str(a_file))


def test_a_repeated_column_name_is_reported_before_training(tmp_path) -> None:
    frame = make_rows(tmp_path, 24, seed=1)
    lines = frame.to_csv(index=False).splitlines()
    lines[0] = lines[0].replace("label", "caption")  # two columns named "caption"
    (tmp_path / "dup.csv").write_text("\n".join(lines) + "\n")
    output = refused("train", "--data", str(tmp_path / "dup.csv"), "--out", str(tmp_path / "r"),
                     "--image-col", "image", "--text-col", "caption", "--label-col", "label")
    assert "['caption'] appear more than once in the header" in output
    assert not (tmp_path / "r" / "leaderboard.json").exists()  # no search started


@pytest.mark.slow
def test_numbers_with_one_word_among_the_labels(tmp_path) -> None:
    """As regression: that row named. As classes, in auto mode: "three" (one row) lands in
    some validation fold and no training one; every fold's model still knows the class."""
    frame = make_rows(tmp_path, 30, seed=2)
    frame["label"] = ["1", "2"] * 14 + ["2", "three"]
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    data = ["--data", str(tmp_path / "mixed.csv"), "--image-col", "image", "--text-col",
            "caption", "--cache-dir", str(tmp_path / "cache")]
    assert "row 30, column 'label': 'three' is not a number" in refused(
        "train", *data, "--out", str(tmp_path / "r"), "--task", "regression", "--time-limit", "20")
    result = CliRunner().invoke(app, ["train", *data, "--out", str(tmp_path / "auto"),
                                      "--time-limit", "20"])
    assert result.exit_code == 0, result.output
    assert Predictor.load(tmp_path / "auto").classes_ == ["1", "2", "three"]


def tampered(run: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy)
    return copy


def edit_yaml(path: Path, change) -> None:
    values = yaml.safe_load(path.read_text())
    change(values)
    path.write_text(yaml.safe_dump(values))


@pytest.mark.parametrize(("case", "says"), [
    ("labels is a list", "labels.json must be a JSON object"),
    ("labels without n_outputs", "labels.json lacks n_outputs"),
    ("labels with another class count", "labels.json: n_outputs 5 does not fit its 2 classes"),
    ("labels with three classes", "do not fit the model that config.yaml and labels.json"),
    ("config without an encoder name", "config.model.text_encoder lacks "
                                       "config.model.text_encoder.name"),
    ("hidden_dim edited", "do not fit the model that config.yaml and labels.json describe"),
    ("a weight of another shape", "head.linear.weight is (3, 16), the model wants (2, 16)"),
    ("truncated weights", "model.safetensors is truncated or corrupt"),
])
def test_a_tampered_run_folder_gets_one_checkpoint_error(run, tmp_path, case, says) -> None:
    folder, data = run
    copy = tampered(folder, tmp_path, "copy")
    labels = copy / "labels.json"
    values = json.loads(labels.read_text())
    if case == "labels is a list":
        labels.write_text(json.dumps(values["classes"]))
    elif case == "labels without n_outputs":
        labels.write_text(json.dumps({k: v for k, v in values.items() if k != "n_outputs"}))
    elif case == "labels with another class count":
        labels.write_text(json.dumps(values | {"n_outputs": 5}))
    elif case == "labels with three classes":
        labels.write_text(json.dumps(values | {"n_outputs": 3, "classes": ["a", "b", "c"]}))
    elif case == "config without an encoder name":
        edit_yaml(copy / "config.yaml", lambda v: v["model"]["text_encoder"].pop("name"))
    elif case == "hidden_dim edited":
        edit_yaml(copy / "config.yaml", lambda v: v["model"].update(hidden_dim=32))
    elif case == "a weight of another shape":
        weights = load_tensors(copy / "model.safetensors")
        weights["head.linear.weight"] = torch.zeros(3, 16)
        save_tensors(copy / "model.safetensors", weights)
    else:
        (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:300])
    for command in (["evaluate", str(copy), "--data", str(data)],
                    ["predict", str(copy), "--data", str(data), "--output",
                     str(tmp_path / "p.csv")]):
        assert says in refused(*command)
    assert not (tmp_path / "p.csv").exists()


def test_a_corrupt_cache_shard_is_discarded_and_recomputed(tmp_path, capsys) -> None:
    from mmfuse.config import EncoderConfig

    encoder = create_encoder("text", EncoderConfig("minilm", max_length=16))
    texts = ["a red square", "a blue circle", "a green triangle"]
    first = FeatureCache(tmp_path).table(encoder, texts, with_tokens=False).pooled
    shards = list(tmp_path.glob("*/shard-*.safetensors"))
    assert len(shards) == 1
    shards[0].write_bytes(shards[0].read_bytes()[:100])  # a killed disk write, say
    again = FeatureCache(tmp_path).table(encoder, texts, with_tokens=False).pooled
    torch.testing.assert_close(again, first)
    captured = capsys.readouterr()
    assert "is corrupt" in " ".join((captured.out + captured.err).split())
    assert not shards[0].exists() and len(list(tmp_path.glob("*/shard-*.safetensors"))) == 1


def test_resume_and_swapped_encoders_are_refused_with_the_reason(run, tmp_path) -> None:
    folder, data = run
    copy = tampered(folder, tmp_path, "resumed")
    save_tensors(copy / "training_state.safetensors", {"epoch": torch.tensor(1)})
    base = ["train", "--data", str(data), "--out", str(copy), "--resume", *TINY]
    assert "the settings differ from those saved" in refused(*base[:-2], "--epochs", "2",
                                                             "--hidden-dim", "32")
    meta = json.loads((copy / "meta.json").read_text())
    meta["encoders"]["image"] = "small-cnn:someone-else"
    (copy / "meta.json").write_text(json.dumps(meta))
    assert "the image encoder's weights differ from those the model was trained with" in refused(
        "evaluate", str(copy), "--data", str(data))


def test_a_streamed_body_over_the_limit_is_refused_while_it_arrives(run) -> None:
    """No Content-Length (chunked): the limit is counted as the bytes arrive."""
    from fastapi.testclient import TestClient

    from mmfuse.serving.app import create_app

    chunks = (b"x" * 65_536 for _ in range(8))  # 512 KiB in 64 KiB chunks
    with TestClient(create_app(Predictor.load(run[0]), max_upload_bytes=200_000)) as client:
        response = client.post("/v1/predict", content=chunks,
                               headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("edit", ["no members", "a weight too many", "an unknown view",
                                  "coefficients of a member removed"])
def test_a_tampered_ensemble_folder_gets_one_checkpoint_error(tmp_path, edit) -> None:
    import numpy as np

    from mmfuse.data.rows import read_rows
    from mmfuse.ensemble.inputs import View
    from mmfuse.ensemble.model import EnsembleModel

    make_rows(tmp_path, 40, seed=3).to_csv(tmp_path / "data.csv", index=False)
    cfg = tiny_config(tmp_path)
    rows = read_rows(tmp_path / "data.csv", cfg, tmp_path)
    halves = np.arange(len(rows)) % 2
    folds = [(np.flatnonzero(halves != k), np.flatnonzero(halves == k)) for k in (0, 1)]
    model, _ = EnsembleModel.fit(cfg, rows, [View("tfidf-word"), View("tfidf-char")], folds,
                                 FeatureCache(None))
    model.save(tmp_path / "run")
    spec_file = tmp_path / "run" / "ensemble.json"
    spec = json.loads(spec_file.read_text())
    if edit == "no members":
        del spec["members"]
    elif edit == "a weight too many":
        spec["weights"].append(0.5)
    elif edit == "an unknown view":
        spec["members"][0]["view"] = "tfidf-emoji"
    else:
        weights = load_tensors(tmp_path / "run" / "model.safetensors")
        save_tensors(tmp_path / "run" / "model.safetensors",
                     {k: v for k, v in weights.items() if k != "member1.coef"})
    spec_file.write_text(json.dumps(spec))
    output = refused("predict", str(tmp_path / "run"), "--data", str(tmp_path / "data.csv"),
                     "--output", str(tmp_path / "p.csv"))
    assert "ensemble.json does not describe the arrays in" in output


@pytest.mark.slow
def test_the_installed_command_gives_the_same_answers(run, tmp_path, tiny_csv) -> None:
    """A few of the cases above through the `mmfuse` entry point a user runs (a process of
    its own: exit code 2, the sentence, no traceback)."""
    import os
    import subprocess
    import sys

    folder, data = run
    broken = tampered(folder, tmp_path, "broken")
    (broken / "labels.json").write_text("[]")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["train", "--data", str(tiny_csv), "--out", str(tmp_path / "r"), *TINY, "--epochs", "-3"],
         "train.epochs must be a number of at least 1, got -3"),
        (["predict", str(folder), "--data", str(data), "--output", str(a_file / "p.csv")],
         "is a file, not a folder"),
        (["evaluate", str(broken), "--data", str(data)], "labels.json must be a JSON object"),
    ]
    for arguments, says in cases:
        done = subprocess.run([str(Path(sys.executable).parent / "mmfuse"), *arguments],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "COLUMNS": "1000"})
        output = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 2 and says in output and "Traceback" not in output, output


@pytest.mark.parametrize("task, metric, named", [
    ("classification", "f1_macroo", "macro_f1"), ("regression", "macro_f1", "rmse")])
def test_an_unknown_metric_is_refused_before_any_work(tiny_csv: Path, tmp_path: Path,
                                                      task: str, metric: str, named: str) -> None:
    for model in ([], ["--fusion", "concat", *TINY[6:]]):  # auto mode and a fixed model
        output = refused("train", "--data", str(tiny_csv), *TINY[:6], "--task", task,
                         "--metric", metric, "--out", str(tmp_path / "run"), *model)
        assert f"'{metric}' is not a metric of task '{task}'" in output and named in output
        assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_time_limit_that_is_not_positive_is_refused(tiny_csv: Path, tmp_path: Path) -> None:
    output = refused("train", "--data", str(tiny_csv), *TINY[:6], "--time-limit", "-5",
                     "--out", str(tmp_path / "run"))
    assert "must be a positive number of seconds, got -5.0" in output


def test_an_output_on_a_read_only_file_system_is_refused_before_predicting(
        run: tuple[Path, Path]) -> None:
    import tempfile

    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable on this machine")
    except OSError:
        pass  # read-only, as permissions alone do not say to root
    folder, manifest = run
    output = refused("predict", str(folder), "--data", str(manifest), "--output", "/sys/x.csv")
    assert "cannot write in /sys" in output
