"""Training a stack (fusion ``stack``): per-modality towers out-of-fold, then the meta-learner.

1. k folds: towers are trained on k - 1 folds and predict the held-out fold, so every training
   row gets logits from towers that never saw it (out-of-fold, OOF).
2. The towers are trained once more on all training rows: these are the ones kept.
3. The head (a linear meta-learner over the towers' logits) is fitted on the OOF logits: it
   learns how much each modality can be trusted on unseen rows, not on rows it memorised.

Towers stop early on the validation set's tower loss, never on the held-out fold, so the OOF
logits are honest. With frozen encoders every fold reads the cached features: folds are cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from accelerate.utils import send_to_device
from sklearn.model_selection import KFold, StratifiedKFold

from mmfuse.config import TrainConfig
from mmfuse.deadline import Deadline
from mmfuse.errors import ConfigError
from mmfuse.features.batches import Batch, MultimodalDataset
from mmfuse.features.loaders import make_loader
from mmfuse.heads.base import Head
from mmfuse.models.multimodal import MultimodalModel, load_persistent_state
from mmfuse.progress import CONSOLE
from mmfuse.training.checkpoints import TrainState, snapshot
from mmfuse.training.distributed import is_distributed
from mmfuse.training.privacy import is_private
from mmfuse.training.trainer import train

META_L2 = 1e-3  # keeps the meta-learner near "average the towers" when OOF rows are few


def tower_loss(
    forward: object, model: MultimodalModel, batch: Batch, target: torch.Tensor
) -> torch.Tensor:
    """Sum over modalities of the task loss of each tower alone (towers share no weights).
    Stacking trains in one process, so the model is called directly, not via ``forward``."""
    logits = model.fusion.modality_logits(model.encode(batch))  # (B, M, C)
    return sum(model.head.loss(logits[:, i], target) for i in range(logits.shape[1]))


@torch.inference_mode()
def tower_logits(model: MultimodalModel, dataset: MultimodalDataset, num_workers: int) -> torch.Tensor:
    """(N, M, C) logits of every modality's tower, in dataset order."""
    was_training = model.training
    model.eval()
    device = model.head.linear.weight.device
    out = [model.fusion.modality_logits(model.encode(send_to_device(batch, device))).float().cpu()
           for batch, _ in make_loader(dataset, 256, num_workers)]
    model.train(was_training)
    return torch.cat(out)


def tower_validation(
    dataset: MultimodalDataset, num_workers: int
) -> Callable[[MultimodalModel], dict[str, float]]:
    def validate(model: MultimodalModel) -> dict[str, float]:
        device = model.head.linear.weight.device
        logits = tower_logits(model, dataset, num_workers).to(device)
        targets = dataset.targets.to(device)
        losses = [float(model.head.loss(logits[:, i], targets)) for i in range(logits.shape[1])]
        return {"loss": sum(losses), **{f"tower{i}_loss": v for i, v in enumerate(losses)}}

    return validate


def fold_splits(targets: torch.Tensor, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified by class when every class has a row in each fold, plain k-fold otherwise."""
    rows = np.arange(len(targets))
    folds = max(2, min(folds, len(targets)))
    if targets.dim() == 1 and not targets.is_floating_point():
        counts = np.bincount(targets.numpy())
        if counts[counts > 0].min() >= folds:
            return list(StratifiedKFold(folds, shuffle=True, random_state=seed)
                        .split(rows, targets.numpy()))
    return list(KFold(folds, shuffle=True, random_state=seed).split(rows))


def fit_meta_learner(head: Head, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Fit the head's linear map on OOF logits (N, M, C), starting from the plain average."""
    n, m, c = logits.shape
    linear = head.linear
    with torch.no_grad():
        linear.weight.copy_(torch.eye(c).repeat(1, m) / m)  # (C, M * C): average of the towers
        linear.bias.zero_()
    if n == 0:
        return
    was_training = head.training
    head.eval()  # no dropout on the meta-learner's inputs
    device = linear.weight.device
    features, targets = logits.reshape(n, m * c).to(device), targets.to(device)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=0.5, max_iter=200,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = head.loss(head(features), targets) + META_L2 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    head.train(was_training)


def fit_stack(
    model: MultimodalModel,
    train_set: MultimodalDataset,
    val_set: MultimodalDataset,
    cfg: TrainConfig,
    deadline: Deadline | None = None,
) -> TrainState:
    """Train a model whose fusion is ``StackFusion`` in place (towers, then meta-learner)."""
    if is_distributed() or is_private(cfg):
        raise ConfigError("the stack fusion trains in one process and without DP-SGD; "
                          "use another fusion for `accelerate launch` or --dp-epsilon")
    fusion, targets = model.fusion, train_set.targets
    if targets is None:
        raise ConfigError("the stack fusion learns from labelled training rows; these have none")
    initial = snapshot(model)
    validate = tower_validation(val_set, cfg.num_workers)
    oof = torch.zeros(len(train_set), len(fusion.modalities), fusion.n_outputs)
    filled = torch.zeros(len(train_set), dtype=torch.bool)
    splits = fold_splits(targets, fusion.folds, cfg.seed)
    for k, (fit_rows, held_rows) in enumerate(splits, start=1):
        if deadline is not None and deadline.passed():
            break
        CONSOLE.print(f"stack: fold {k}/{len(splits)}")
        load_persistent_state(model, initial)
        train(model, train_set.subset(fit_rows), validate, cfg, "loss", loss_fn=tower_loss,
              deadline=deadline)
        oof[held_rows] = tower_logits(model, train_set.subset(held_rows), cfg.num_workers)
        filled[held_rows] = True
    CONSOLE.print("stack: towers on all training rows")
    load_persistent_state(model, initial)
    state = train(model, train_set, validate, cfg, "loss", loss_fn=tower_loss, deadline=deadline)
    # Out of time before the first fold ended: no OOF rows, the head stays a plain average.
    fit_meta_learner(model.head, oof[filled], targets[filled])
    model.eval()
    return state
