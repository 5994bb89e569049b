"""What a training run keeps and what resuming needs: the per-epoch checkpoint (weights,
optimiser, loop state), the best weights, the history. Where they are written is the run
folder's (``RunFiles``: ``ModelFolder`` owns every file name of a run folder)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from mmfuse.errors import CheckpointError
from mmfuse.models.multimodal import MultimodalModel, load_persistent_state, persistent_state
from mmfuse.progress import CONSOLE as console
from mmfuse.training.optimizer_state import flatten_optimizer, unflatten_optimizer


class RunFiles(Protocol):
    """Where a training run keeps its files."""

    def save_best(self, weights: dict[str, torch.Tensor]) -> None:
        """The weights of the best epoch so far."""

    def load_best(self) -> dict[str, torch.Tensor]: ...

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
                        ) -> None:
        """The state after the last completed epoch (``checkpoint``)."""

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """CheckpointError when there is none or it cannot be read."""

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Every epoch's row so far."""

    def log_scalars(self, row: dict[str, Any]) -> None:
        """One epoch's numbers, for a dashboard (TensorBoard)."""

    def clear_stale(self) -> None:
        """Remove what a run killed mid-write left."""


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


def checkpoint(model, optimizer, state: TrainState, privacy_history: list | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata a resumed run needs: the trainable state, the optimiser's,
    the loop's and (DP-SGD) the accountant's record, so a resumed run keeps counting."""
    tensors, optimizer_meta = flatten_optimizer(optimizer.state_dict())
    tensors |= {f"model.{k}": v for k, v in persistent_state(model).items()}
    metadata = {"state": json.dumps(asdict(state), default=float), "optimizer": optimizer_meta}
    if privacy_history is not None:
        metadata["privacy_history"] = json.dumps(privacy_history)
    return tensors, metadata


def resumed_run(
    run: RunFiles | None, model, optimizer, metric: str, main: bool
) -> tuple[TrainState, list | None, dict[str, torch.Tensor] | None]:
    """The interrupted run's state, privacy record and best weights so far."""
    if run is None:
        raise CheckpointError("resuming needs the run folder of the interrupted run")
    if main:
        run.clear_stale()  # left by a kill mid-write
    tensors, meta = run.load_checkpoint()
    load_persistent_state(
        model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    privacy_history = json.loads(meta["privacy_history"]) if "privacy_history" in meta else None
    state = TrainState(**json.loads(meta["state"]))
    console.print(f"Resuming after epoch {state.epoch} (best {metric} so far: {state.best_metric})")
    best_weights = snapshot(model) if state.best_metric is None else run.load_best()
    return state, privacy_history, best_weights
