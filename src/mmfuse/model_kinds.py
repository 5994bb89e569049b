"""The kinds of trained network behind the model contract, and what differs between them.

A *single* model (encoders -> fusion -> head) predicts a task's outputs; a *dual encoder*
(two towers in one space) ranks images against texts. Both are fitted, scored, saved and
loaded by the same code (``fitted_model.py``, ``model_folder.py``); a kind says only how to
build its network, what its targets are and how it is scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.config import Config, TrainConfig
from mmfuse.data.validate import cells
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.deadline import Deadline
from mmfuse.encoders import create_encoder
from mmfuse.errors import ConfigError, DataValidationError, Problem
from mmfuse.features.assembly import make_dataset
from mmfuse.features.batches import MultimodalDataset
from mmfuse.features.loaders import make_loader
from mmfuse.models.build import build_model
from mmfuse.models.dual_encoder import DualEncoder
from mmfuse.progress import CONSOLE, make_progress
from mmfuse.tasks import get_task
from mmfuse.tasks.retrieval_metrics import retrieval_metrics
from mmfuse.training.checkpoints import RunFiles
from mmfuse.training.decision_weights import fit_decision_weights
from mmfuse.training.inference import run_model
from mmfuse.training.stacking import fit_stack
from mmfuse.training.trainer import TrainState, train

if TYPE_CHECKING:
    from mmfuse.fitted_model import FittedModel

EMBED_CHUNK = 4096  # rows embedded at a time: memory stays bounded for any collection size


class ModelKind(Protocol):
    name: str

    def fit_classes(self, config: Config, rows: pd.DataFrame) -> list[str] | None: ...

    def n_outputs(self, classes: list[str] | None) -> int: ...

    def build(self, config: Config, classes: list[str] | None, vocabulary: Vocabulary | None,
              rows: pd.DataFrame | None) -> nn.Module:
        """The network; ``rows`` (training rows) fit head options, None when loading."""

    def targets(self, fitted: FittedModel, rows: pd.DataFrame) -> torch.Tensor | None: ...

    def needs_tokens(self, model: nn.Module) -> bool: ...

    def train(self, model: nn.Module, train_set: MultimodalDataset, val_set: MultimodalDataset,
              validate: Callable[[nn.Module], dict[str, float]], settings: TrainConfig,
              metric: str, *, run: RunFiles | None, resume: bool, weights: torch.Tensor | None,
              deadline: Deadline | None) -> TrainState:
        """Train ``model`` in place (early stopping on ``validate``); ``weights`` (N,): how
        often each training row is drawn."""

    def after_training(self, model: nn.Module, held_out: MultimodalDataset,
                       targets: torch.Tensor, num_workers: int) -> None:
        """What the kind fits on the held-out rows once training ended (before calibration)."""

    def score(self, fitted: FittedModel, model: nn.Module, rows: pd.DataFrame,
              dataset: MultimodalDataset, *, weights: np.ndarray | None = None
              ) -> dict[str, Any]:
        """Metrics on ``rows``; ``weights`` (N,): each row counted that often."""


class SingleModel:
    """Encoders -> fusion -> the task's head."""

    name = "single"

    def fit_classes(self, config: Config, rows: pd.DataFrame) -> list[str] | None:
        try:
            return get_task(config.data.task).fit_classes(rows["_target"].tolist())
        except ValueError as error:
            raise DataValidationError([Problem(rows.attrs.get("source", "<DataFrame>"), None,
                                               config.data.label_col, str(error))]) from error

    def n_outputs(self, classes: list[str] | None) -> int:
        return len(classes) if classes is not None else 1

    def build(self, config: Config, classes: list[str] | None, vocabulary: Vocabulary | None,
              rows: pd.DataFrame | None) -> nn.Module:
        options = {} if rows is None else get_task(config.data.task).head_options(
            rows["_target"].tolist(), classes, config.train.imbalance)
        return build_model(config, self.n_outputs(classes), vocabulary, options)

    def targets(self, fitted: FittedModel, rows: pd.DataFrame) -> torch.Tensor | None:
        if "_target" not in rows:
            return None
        return fitted.task.encode(rows["_target"].tolist(), fitted.classes)

    def needs_tokens(self, model: nn.Module) -> bool:
        return bool(model.fusion.needs_tokens)

    def train(self, model: nn.Module, train_set: MultimodalDataset, val_set: MultimodalDataset,
              validate: Callable[[nn.Module], dict[str, float]], settings: TrainConfig,
              metric: str, *, run: RunFiles | None, resume: bool, weights: torch.Tensor | None,
              deadline: Deadline | None) -> TrainState:
        """End to end, or out of fold where the fusion is trained by stacking (its towers'
        out-of-fold outputs: ``training/stacking.py``; row weights do not apply there)."""
        if model.fusion.trained_by_stacking:
            if resume:
                CONSOLE.print("stack: folds start over on --resume (they read cached features)")
            return fit_stack(model, train_set, val_set, settings, deadline)
        return train(model, train_set, validate, settings, metric, run=run, resume=resume,
                     sample_weights=weights, deadline=deadline)

    def after_training(self, model: nn.Module, held_out: MultimodalDataset,
                       targets: torch.Tensor, num_workers: int) -> None:
        """A fusion that weighs its modalities on held-out rows (late fusion) gets them."""
        if not model.fusion.weighs_on_held_out_rows:
            return
        weights = fit_decision_weights(model, held_out, targets, num_workers)
        CONSOLE.print("modality weights fitted on the validation rows: " + ", ".join(
            f"{m} {w:.2f}" for m, w in zip(model.fusion.modalities, weights.tolist(),
                                           strict=True)))

    def score(self, fitted: FittedModel, model: nn.Module, rows: pd.DataFrame,
              dataset: MultimodalDataset, *, weights: np.ndarray | None = None
              ) -> dict[str, Any]:
        logits, _ = run_model(model, dataset, num_workers=fitted.config.train.num_workers)
        scores = model.head.probabilities(logits).numpy()
        decoded = model.head.decode(logits).numpy()
        y_true = self.targets(fitted, rows).numpy()
        result = fitted.task.metrics(y_true, decoded, scores, fitted.classes or [],
                                     sample_weight=weights)
        if dataset.targets is not None:
            device = model.head.linear.weight.device  # the GPU, right after training on one
            result["loss"] = float(model.head.loss(logits.to(device), dataset.targets.to(device)))
        return result


class DualEncoderModel:
    """Image and text towers projected into one space, trained with symmetric InfoNCE."""

    name = "dual_encoder"

    def fit_classes(self, config: Config, rows: pd.DataFrame) -> list[str] | None:
        return None

    def n_outputs(self, classes: list[str] | None) -> int:
        return 0

    def build(self, config: Config, classes: list[str] | None, vocabulary: Vocabulary | None,
              rows: pd.DataFrame | None) -> nn.Module:
        model_cfg = config.model
        image = create_encoder("image", model_cfg.image_encoder)
        scale = None
        if model_cfg.backbone is not None:  # towers already in one space: its scale, no heads
            scale = getattr(image, "logit_scale", None)
            if scale is None:
                raise ConfigError(
                    f"{model_cfg.backbone} is not a CLIP-style folder (an image and a text "
                    "tower trained together, with a logit scale)")
        text = model_cfg.text_encoder
        if model_cfg.backbone is not None and text.frozen is None:
            text = dataclasses.replace(text, frozen=False)  # LiT: the text tower is tuned
        encoders = {"image": image, "text": create_encoder("text", text, vocabulary=vocabulary)}
        return DualEncoder(encoders, config.data.image_cols[0], config.data.text_cols[0],
                           model_cfg.hidden_dim, model_cfg.dropout, logit_scale=scale)

    def targets(self, fitted: FittedModel, rows: pd.DataFrame) -> torch.Tensor | None:
        """(N, 2): which image and which text each pair has (pairs sharing one are not
        negatives of each other). Every row is a true pair: no label column is needed."""
        data = fitted.config.data
        images = pd.factorize(pd.Series(cells(rows, data.image_cols[0])))[0]
        texts = pd.factorize(pd.Series(cells(rows, data.text_cols[0])))[0]
        return torch.tensor(np.stack([images, texts], axis=1), dtype=torch.long)

    def needs_tokens(self, model: nn.Module) -> bool:
        return False

    def train(self, model: nn.Module, train_set: MultimodalDataset, val_set: MultimodalDataset,
              validate: Callable[[nn.Module], dict[str, float]], settings: TrainConfig,
              metric: str, *, run: RunFiles | None, resume: bool, weights: torch.Tensor | None,
              deadline: Deadline | None) -> TrainState:
        return train(model, train_set, validate, settings, metric, run=run, resume=resume,
                     sample_weights=weights, deadline=deadline)

    def after_training(self, model: nn.Module, held_out: MultimodalDataset,
                       targets: torch.Tensor, num_workers: int) -> None:
        """Nothing: the pairs' scores need no held-out fit."""

    def score(self, fitted: FittedModel, model: nn.Module, rows: pd.DataFrame,
              dataset: MultimodalDataset, *, weights: np.ndarray | None = None
              ) -> dict[str, Any]:
        """Recall of the pairs (retrieval takes no row weights)."""
        data = fitted.config.data
        image_of_row, images = pd.factorize(pd.Series(cells(rows, data.image_cols[0])))
        text_of_row, texts = pd.factorize(pd.Series(cells(rows, data.text_cols[0])))
        image_vectors = embed(fitted, model, "image", list(images))
        text_vectors = embed(fitted, model, "text", list(texts))
        pairs = list(zip(image_of_row.tolist(), text_of_row.tolist(), strict=True))
        return retrieval_metrics(image_vectors, text_vectors, pairs)


@torch.inference_mode()
def embed(fitted: FittedModel, model: DualEncoder, kind: str, values: list[str]) -> torch.Tensor:
    """(N, E) unit vectors of image paths or texts."""
    chunks = list(embed_chunks(fitted, model, kind, values))
    return torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim)


def embed_chunks(
    fitted: FittedModel, model: DualEncoder, kind: str, values: list[str]
) -> Iterator[torch.Tensor]:
    """(n, E) unit vectors, ``EMBED_CHUNK`` values at a time, with a progress bar."""
    was_training = model.training
    model.eval()
    column = model.columns[kind]
    encoder = model.encoders[kind]
    with make_progress() as progress, torch.inference_mode():
        task = progress.add_task(f"Embedding {kind}s", total=len(values), status="")
        for start in range(0, len(values), EMBED_CHUNK):
            chunk = pd.DataFrame({column: values[start:start + EMBED_CHUNK]})
            dataset = make_dataset(chunk, {column: encoder}, fitted.feature_cache(), False)  # type: ignore[dict-item]
            out = []
            for batch, _ in make_loader(dataset, 256, fitted.config.train.num_workers):
                out.append(model.embed(kind, batch[column]))
                progress.advance(task, len(batch[column]["present"]))
            yield torch.cat(out)
    model.train(was_training)


KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (SingleModel(), DualEncoderModel())}


def kind_for(config: Config) -> ModelKind:
    return KINDS[get_task(config.data.task).model_kind]
