"""Scaling out: two DDP processes (gloo, CPU) train what one process trains; mixed precision
and gradient accumulation run; DP-SGD spends no more privacy than asked and still learns."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_rows
from safetensors import safe_open

from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.errors import ConfigError
from mmfuse.io import load_tensors

ROWS = 108  # 97 training rows: 6 batches of 16 and a last batch of 1, which one process lacks


def deterministic_config(tmp_path: Path) -> dict:
    """No nn.Dropout (torch draws each process's masks from its own stream) and no batch norm
    in what is trained (statistics over half a batch differ). Modality dropout is on: its
    draws are made for the global batch, so it is the same in every process."""
    return Config(
        data=DataConfig(image_cols=["image"], text_cols=["caption"], label_col="label",
                        allow_missing=True),
        model=ModelConfig(
            image_encoder=EncoderConfig("efficientnet-lite0", image_size=32),
            text_encoder=EncoderConfig("ngram", options={"dim": 16, "buckets": 2048,
                                                         "ngram_dropout": 0.0}),
            fusion="concat", hidden_dim=16, dropout=0.0,
        ),
        train=TrainConfig(epochs=3, batch_size=16, num_workers=0, lr=3e-3, modality_dropout=0.3),
        cache_dir=str(tmp_path / "cache"),
    ).to_dict()


def cached_items(cache: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """Every pooled feature in a cache: digest -> (the process that wrote it, the vector).
    Fails on an item written twice."""
    items: dict[str, tuple[str, torch.Tensor]] = {}
    for shard in cache.glob("*/shard-*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            process = handle.metadata()["process"]
            for name in handle.keys():
                assert name not in items, f"{name} encoded twice"
                items[name] = (process, handle.get_tensor(name))
    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ddp_processes_train_the_model_one_process_trains(tmp_path: Path) -> None:
    make_rows(tmp_path, ROWS).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(deterministic_config(tmp_path)))
    train = ["-m", "mmfuse", "train", "--config", str(tmp_path / "config.yaml"),
             "--data", str(tmp_path / "train.csv")]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    one = subprocess.run([sys.executable, *train, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    # The two processes start from an empty cache: each encodes half of the images.
    two = subprocess.run([*launch, *train, "--out", str(tmp_path / "two"),
                          "--cache-dir", str(tmp_path / "cache2")],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr
    alone, shared = cached_items(tmp_path / "cache"), cached_items(tmp_path / "cache2")
    assert alone.keys() == shared.keys()  # every image encoded, and exactly once (no repeats)
    writers = [process for process, _ in shared.values()]
    assert sorted(set(writers)) == ["0", "1"]  # both processes encoded ...
    assert abs(writers.count("0") - writers.count("1")) <= 1  # ... a half each
    # what one process computed (batches of other rows round differently)
    for digest, (_, features) in shared.items():
        torch.testing.assert_close(features, alone[digest][1], atol=1e-4, rtol=1e-4)

    single, double = (load_tensors(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert single.keys() == double.keys()
    for name in single:
        # Summing a batch in two halves rounds differently, and Adam's first steps move a
        # weight by lr * sign(gradient) however tiny the gradient: weights whose gradient is
        # ~0 may step apart by ~2 lr. Everything else agrees to float precision.
        torch.testing.assert_close(double[name], single[name], atol=2 * 3e-3, rtol=0)
    probabilities = [Predictor.load(tmp_path / run).predict_proba(tmp_path / "train.csv")
                     for run in ("one", "two")]
    assert (probabilities[0] - probabilities[1]).abs().to_numpy().max() < 0.01
    # One process wrote and spoke: the same files, one history row per epoch, one summary.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert two.stdout.count("model saved in") == 1
    # Validation gathered from both processes: every validation row counted exactly once.
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())["validation"]
    assert metrics["n"] == json.loads((tmp_path / "one" / "metrics.json").read_text())[
        "validation"]["n"] == round(ROWS * 0.1)


def test_bf16_and_gradient_accumulation(tmp_path: Path) -> None:
    make_rows(tmp_path, 96).to_csv(tmp_path / "train.csv", index=False)
    config = Config.from_dict(deterministic_config(tmp_path))
    config.train.precision, config.train.grad_accum, config.train.epochs = "bf16", 2, 2
    predictor = Predictor(config).fit(tmp_path / "train.csv")
    assert predictor.history_[-1]["train_loss"] > 0
    assert all(p.dtype == torch.float32 for p in predictor.model_.parameters())
    config.train.precision = "fp8"
    with pytest.raises(ConfigError, match="precision must be one of"):
        Predictor(config).fit(tmp_path / "train.csv")


def test_dp_sgd_spends_at_most_the_target_epsilon_and_still_learns(tmp_path: Path) -> None:
    from test_auto import image_only_rows

    image_only_rows(tmp_path, 300, seed=1).to_csv(tmp_path / "train.csv", index=False)
    config = Config(
        data=DataConfig(image_cols=["image"], text_cols=["text"], label_col="label"),
        model=ModelConfig(image_encoder=EncoderConfig("efficientnet-lite0", image_size=64),
                          text_encoder=EncoderConfig("minilm", max_length=16),
                          fusion="concat", hidden_dim=32),
        train=TrainConfig(epochs=8, batch_size=32, num_workers=0, lr=3e-3, dp_epsilon=4.0),
        cache_dir=str(tmp_path / "cache"),
    )
    predictor = Predictor(config).fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    privacy = predictor.metrics_["privacy"]
    assert 0 < privacy["epsilon"] <= 4.0 and privacy["delta"] == 1e-5
    spent = [row["dp_epsilon"] for row in predictor.history_]
    assert spent == sorted(spent) and spent[-1] == pytest.approx(privacy["epsilon"])
    test = image_only_rows(tmp_path, 90, seed=2)
    assert predictor.evaluate(test, base_dir=tmp_path)["accuracy"] >= 0.8  # chance: 1/3
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["privacy"]["epsilon"] == pytest.approx(privacy["epsilon"])
    from mmfuse.evaluation.report import build_report

    build_report(Predictor.load(tmp_path / "run"), test.head(24), tmp_path / "report.html",
                 base_dir=tmp_path, explain_rows=1, severities=(1,))
    page = (tmp_path / "report.html").read_text()
    assert "Trained with DP-SGD" in page and f"ε = {privacy['epsilon']:.2f}" in page


@pytest.mark.parametrize(("change", "message"), [
    ({"fusion": "late"}, "holds weights outside any layer"),
    ({"text_encoder": EncoderConfig("gru")}, "GRU"),
    ({}, "EmbeddingBag, the ngram text encoder"),
])
def test_dp_sgd_refuses_what_it_cannot_clip(tmp_path: Path, change: dict, message: str) -> None:
    make_rows(tmp_path, 40).to_csv(tmp_path / "train.csv", index=False)
    config = Config.from_dict(deterministic_config(tmp_path))
    config.train.dp_epsilon = 8.0
    for name, value in change.items():
        setattr(config.model, name, value)
    with pytest.raises(ConfigError, match=message):
        Predictor(config).fit(tmp_path / "train.csv")


@pytest.mark.parametrize("processes", [2, 3, 5])
@pytest.mark.parametrize("rows", [37, 33])  # last batch of 5 rows; of 1 row (some get none)
def test_process_shares_give_one_process_batches_and_loss(processes: int, rows: int) -> None:
    """Over the processes, the shares of each global batch are its rows exactly once, and the
    weighted mean losses average (as DDP does) to the global batch's mean loss."""
    from torch.utils.data import BatchSampler, SequentialSampler

    from mmfuse.features.process_batches import ProcessBatches

    batch_size = 8
    losses = torch.rand(rows, generator=torch.Generator().manual_seed(0))
    global_batches = list(BatchSampler(SequentialSampler(range(rows)), batch_size, False))
    samplers = [ProcessBatches(BatchSampler(SequentialSampler(range(rows)), batch_size, False),
                               rank, processes) for rank in range(processes)]
    per_process = [list(sampler) for sampler in samplers]
    for step, batch in enumerate(global_batches):
        shares = [sampler.shares[step] for sampler in samplers]
        real = [per_process[r][step][:shares[r].rows] for r in range(processes)]
        assert sorted(i for part in real for i in part) == batch
        assert all(len(per_process[r][step]) >= 1 for r in range(processes))  # all join in
        averaged = sum(float(losses[per_process[r][step]].mean()) * shares[r].loss_weight
                       for r in range(processes)) / processes
        assert averaged == pytest.approx(float(losses[batch].mean()), abs=1e-6)


@pytest.mark.parametrize("gpu, bf16_units, private, expected", [
    (False, False, False, "no"), (True, False, False, "no"), (True, True, False, "bf16"),
    (True, True, True, "no")])
def test_auto_precision_is_bf16_only_on_a_gpu_that_has_it(
        monkeypatch: pytest.MonkeyPatch, gpu: bool, bf16_units: bool, private: bool,
        expected: str) -> None:
    """The default ("auto"): bf16 autocast on a GPU with bfloat16 units, full precision on
    a CPU, an older GPU and under DP-SGD; a precision given by name is kept."""
    from mmfuse.config import TrainConfig
    from mmfuse.training.distributed import mixed_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: bf16_units)
    config = TrainConfig(dp_epsilon=8.0 if private else None)
    assert config.precision == "auto" and mixed_precision(config) == expected
    config.precision = "bf16"
    assert mixed_precision(config) == "bf16"


def test_opacus_loads_only_for_dp_sgd():
    """Importing opacus costs 0.6 s: ``import mmfuse`` and its CLI do not pay it unless a
    run asks for DP-SGD."""
    code = "import sys, mmfuse, mmfuse.cli; print('opacus' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
