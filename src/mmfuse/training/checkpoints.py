"""A training run's files and what resuming needs: the per-epoch checkpoint (weights,
optimiser, loop state), the best weights, the history (JSON, CSV, TensorBoard)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmfuse.errors import CheckpointError
from mmfuse.io import (
    atomic_write_text,
    load_tensors,
    read_metadata,
    save_tensors,
    stale_temporaries,
    write_json,
)
from mmfuse.models.multimodal import MultimodalModel, load_persistent_state, persistent_state
from mmfuse.progress import CONSOLE as console
from mmfuse.training.optimizer_state import flatten_optimizer, unflatten_optimizer

STATE_FILE = "training_state.safetensors"
BEST_FILE = "model.safetensors"


@dataclass
class TrainState:
    """What a resumed run needs besides tensors. ``epoch`` counts completed epochs."""

    epoch: int = 0
    step: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    privacy: dict[str, Any] | None = None  # DP-SGD: epsilon spent so far, delta, noise, ...


def snapshot(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """A copy of the trainable state: state_dict() shares storage, and training goes on."""
    return {k: v.detach().clone() for k, v in persistent_state(model).items()}


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_json(run_dir / "history.json", history)
    scalar = [{k: v for k, v in row.items() if not isinstance(v, list | dict)} for row in history]
    if not scalar:
        return
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(scalar[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(scalar)
    atomic_write_text(run_dir / "history.csv", table.getvalue())


def log_tensorboard(run_dir: Path, row: dict[str, Any]) -> None:
    """Scalars for TensorBoard when it is installed (``pip install mmfuse[tensorboard]``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for name, value in row.items():
            if name != "epoch" and isinstance(value, int | float):
                writer.add_scalar(name, value, row["epoch"])


def save_state(
    run_dir: Path, model, optimizer, state: TrainState, privacy_history: list | None = None
) -> None:
    tensors, optimizer_meta = flatten_optimizer(optimizer.state_dict())
    tensors |= {f"model.{k}": v for k, v in persistent_state(model).items()}
    metadata = {"state": json.dumps(asdict(state), default=float), "optimizer": optimizer_meta}
    if privacy_history is not None:  # the accountant's record: a resumed run keeps counting
        metadata["privacy_history"] = json.dumps(privacy_history)
    save_tensors(run_dir / STATE_FILE, tensors, metadata=metadata)


def resumed_run(
    run_dir: Path | None, model, optimizer, metric: str, main: bool
) -> tuple[TrainState, list | None, dict[str, torch.Tensor] | None]:
    """The interrupted run's state, privacy record and best weights so far."""
    if main:
        for stale in stale_temporaries(run_dir or Path(".")):  # left by a kill mid-write
            stale.unlink()
    state, privacy_history = load_state(run_dir, model, optimizer)
    console.print(f"Resuming after epoch {state.epoch} (best {metric} so far: {state.best_metric})")
    best_weights = snapshot(model) if state.best_metric is None else None
    if state.best_metric is not None and run_dir is not None:
        best_weights = load_tensors(run_dir / BEST_FILE)
    return state, privacy_history, best_weights


def load_state(run_dir: Path | None, model, optimizer) -> tuple[TrainState, list | None]:
    if run_dir is None:
        raise CheckpointError("resuming needs the run folder of the interrupted run")
    path = run_dir / STATE_FILE
    tensors = load_tensors(path)
    meta = read_metadata(path)
    load_persistent_state(
        model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    history = json.loads(meta["privacy_history"]) if "privacy_history" in meta else None
    return TrainState(**json.loads(meta["state"])), history
