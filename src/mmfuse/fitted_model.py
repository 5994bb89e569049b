"""The model contract: one fitted network of any kind, with what it was fitted on.

``FittedModel.fit`` trains one (rows in, early stopping on validation rows, checkpoints into a
run folder); ``logits``/``evaluate`` score validated rows; ``save``/``load`` go through the
model folder. The façades (``Predictor``, ``RetrievalPredictor``) and every command use this
and nothing private.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.config import Config
from mmfuse.data.rows import given_weights, row_weights
from mmfuse.data.validate import cells, problems_frame
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.deadline import Deadline
from mmfuse.errors import CheckpointError, ConfigError, Problem
from mmfuse.features.assembly import HoldsFeatureCache, make_dataset
from mmfuse.features.batches import MultimodalDataset
from mmfuse.features.cache import FeatureCache, Together
from mmfuse.features.items import Item, items_batch
from mmfuse.model_folder import FITTED_STATE_FILE, Definition, ModelFolder
from mmfuse.model_kinds import KINDS, ModelKind, kind_for
from mmfuse.progress import CONSOLE
from mmfuse.scoring import fit_temperature
from mmfuse.tasks import Task, get_task, selection_metric
from mmfuse.training.distributed import encoding_together, is_main_process
from mmfuse.training.inference import run_model

PREDICT_CHUNK = 8192  # rows whose features are in memory at once while predicting


@dataclass
class FittedModel(HoldsFeatureCache):
    config: Config
    kind: ModelKind
    model: nn.Module
    classes: list[str] | None = None
    vocabulary: Vocabulary | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)  # bad rows dropped in training
    folder: Path | None = None  # where it was saved or loaded from
    cache: FeatureCache | None = None

    @property
    def task(self) -> Task:
        return get_task(self.config.data.task)

    def describe(self) -> str:
        model = self.config.model
        return (f"fusion {model.fusion} · {model.image_encoder.name} + "
                f"{model.text_encoder.name}")

    is_network = True  # one trained network: gradients, ONNX, its modules (``model_``)

    def components(self) -> dict[str, Any]:
        """What the model is made of, for its card (the server's ``/v1/model``)."""
        model = self.config.model
        parts = {"fusion": model.fusion, "image_encoder": model.image_encoder.name,
                 "text_encoder": model.text_encoder.name}
        if "tabular" in self.modality_kinds.values():
            parts["tabular_encoder"] = model.tabular_encoder.name
        return parts

    @property
    def metric(self) -> str:
        """What model selection optimises."""
        return selection_metric(self.config)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def build(cls, config: Config, train_rows: pd.DataFrame,
              classes: list[str] | None = None) -> FittedModel:
        """An untrained model for these training rows: classes (unless given), vocabulary
        and fitted encoder state (n-gram document frequencies) come from them."""
        kind = kind_for(config)
        classes = classes if classes is not None else kind.fit_classes(config, train_rows)
        torch.manual_seed(config.train.seed)
        model = kind.build(config, classes, None, train_rows)
        for name, encoder in model.encoders.items():
            if encoder.kind == "tabular":  # a row's cells, missing ones included
                encoder.fit(train_rows[encoder.columns])
                continue
            columns = config.data.text_cols if name == "text" else config.data.image_cols
            encoder.fit([v for c in columns if c in train_rows
                         for v in cells(train_rows, c) if v is not None])
        text = model.encoders["text"] if "text" in model.encoders else None
        return cls(config, kind, model, classes, text.vocabulary if text is not None else None)

    def fit(
        self, train_rows: pd.DataFrame, val_rows: pd.DataFrame, *, run: Path | None = None,
        resume: bool = False, deadline: Deadline | None = None,
    ) -> FittedModel:
        """Train in place with early stopping on ``val_rows``; checkpoints into ``run``."""
        cfg = self.config
        if resume and (run is None or not ModelFolder(run).can_resume()):
            # Killed before the first epoch ended: nothing to restore, but cached features
            # are reused, so starting over loses no finished work.
            CONSOLE.print("No completed epoch to resume from; starting at epoch 1.")
            resume = False
        if run is not None:
            if resume:
                ModelFolder(run).check_resume(cfg, self.classes)
            if is_main_process():
                ModelFolder(run).write_definition(self.definition(), self.model)
                if self.skipped:
                    problems_frame(self.skipped).to_csv(run / "bad_rows.csv", index=False)
        together = encoding_together()  # processes of a launch share the encoding work
        train_set = self.dataset(train_rows, together=together)
        val_set = self.dataset(val_rows, together=together)

        # Early stopping counts each validation row by its weight (--weight-col), as the
        # training loss does.
        val_weights = given_weights(val_rows)

        def validate(model: nn.Module) -> dict[str, float]:
            scores = self.kind.score(self, model, val_rows, val_set, weights=val_weights)
            return {k: v for k, v in scores.items() if isinstance(v, int | float)}

        weights = (self.task.sample_weights(train_rows["_target"].tolist(), cfg.train.imbalance)
                   if "_target" in train_rows and self.classes is not None else None)
        # Row weights draw each row in proportion to its weight: in expectation, its loss
        # times its weight (with the class balance's own weights, their product).
        given = row_weights(train_rows, cfg.data)
        if given is not None:
            weights = torch.tensor(given) * (weights if weights is not None else 1.0)
        state = self.kind.train(self.model, train_set, val_set, validate, cfg.train, self.metric,
                                run=ModelFolder(run) if run is not None else None,
                                resume=resume, weights=weights, deadline=deadline)
        self.history = state.history
        if len(val_rows):
            self.kind.after_training(self.model, val_set, self.targets(val_rows),
                                     cfg.train.num_workers)
        if cfg.train.calibrate:
            self.calibrate(val_rows, val_set)
        self.metrics = {"validation": self.kind.score(self, self.model, val_rows, val_set),
                        "best_epoch": state.best_epoch, "epochs_run": state.epoch}
        if state.privacy is not None:
            self.metrics["privacy"] = state.privacy
        if run is not None and is_main_process():
            self.save(run)
        return self

    def calibrate(self, rows: pd.DataFrame, dataset: MultimodalDataset | None = None) -> float:
        """Fit the probability temperature on held-out labelled rows, then, for a metric that
        reads labels (macro-F1), the labels' decision on the same rows; returns the
        temperature."""
        if not self.task.single_label:
            raise ConfigError(f"temperature scaling applies to single-label tasks, not to "
                              f"{self.task.name}")
        dataset = dataset if dataset is not None else self.dataset(rows)
        logits, _ = run_model(self.model, dataset, num_workers=self.config.train.num_workers)
        targets = self.targets(rows)
        head = self.model.head
        temperature = fit_temperature(logits, targets, binary=logits.shape[-1] == 1)
        head.temperature.fill_(temperature)
        CONSOLE.print(f"calibrated: temperature {temperature:.3f}")
        probabilities = head.probabilities(logits).numpy()  # (N, C): a binary head's too
        alpha = head.fit_decision(probabilities, targets.numpy(), self.metric)
        if alpha:
            CONSOLE.print(f"labels favour rare classes for {self.metric}: alpha {alpha:g}")
        return temperature


    def targets(self, rows: pd.DataFrame) -> torch.Tensor | None:
        return self.kind.targets(self, rows)

    def dataset(self, rows: pd.DataFrame, with_targets: bool = True,
                use_cache: bool = True, together: Together | None = None) -> MultimodalDataset:
        """Model inputs for validated rows; ``use_cache=False`` decodes and encodes live.
        ``together``: every process of a launch calls this and encodes a share."""
        encoders = {m: self.model.encoder_for(m) for m in self.model.modalities}
        targets = self.targets(rows) if with_targets else None
        return make_dataset(rows, encoders, self.feature_cache(),
                            self.kind.needs_tokens(self.model), targets=targets,
                            use_cache=use_cache, together=together)

    # ------------------------------------------------------------------ scoring
    def logits(self, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (N, C) and modality weights (N, M) or None, chunk by chunk: features of one
        chunk at a time are in memory, so memory grows with the output only."""
        logits, weights = [], []
        for start in range(0, len(rows), PREDICT_CHUNK):
            dataset = self.dataset(rows.iloc[start:start + PREDICT_CHUNK], with_targets=False)
            chunk_logits, chunk_weights = run_model(
                self.model, dataset, num_workers=self.config.train.num_workers)
            logits.append(chunk_logits)
            if chunk_weights is not None:
                weights.append(chunk_weights)
        return torch.cat(logits), (torch.cat(weights) if weights else None)

    def predict(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities (N, C) (values for regression), decoded outputs, modality weights."""
        return self._outputs(*self.logits(rows))

    @torch.inference_mode()
    def predict_items(self, items: list[Item]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The same for in-memory items (decoded images, strings): encoders run live."""
        encoders = {m: self.model.encoder_for(m) for m in self.model.modalities}
        self.live(encoders.values())
        output = self.model.eval()(items_batch(encoders, items))
        return self._outputs(output.logits, output.modality_weights)

    def _outputs(self, logits: torch.Tensor, weights: torch.Tensor | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return (self.model.head.probabilities(logits).numpy(),
                self.model.head.decode(logits).numpy(),
                weights.numpy() if weights is not None else None)

    @property
    def modality_kinds(self) -> dict[str, str]:
        """The input columns the network reads -> "image" | "text"."""
        return dict(self.model.modality_kinds)

    def evaluate(self, rows: pd.DataFrame) -> dict[str, Any]:
        """Metrics on labelled validated rows."""
        return self.kind.score(self, self.model, rows, self.dataset(rows))

    # ------------------------------------------------------------------ folder
    def definition(self) -> Definition:
        encoders = self.model.encoders.items()
        return Definition(self.config, self.kind.name, self.classes,
                          self.kind.n_outputs(self.classes), self.vocabulary,
                          {k: e.fingerprint for k, e in encoders},
                          {k: state for k, e in encoders if (state := e.fitted_state())})

    def save(self, directory: str | Path) -> Path:
        self.folder = ModelFolder(directory).save(self.definition(), self.model, self.metrics)
        return self.folder

    @classmethod
    def load(cls, directory: str | Path) -> FittedModel:
        """Rebuild from a model folder; reads no pickle, runs no stored code."""
        folder = ModelFolder(directory)
        definition = folder.definition()
        kind = KINDS[definition.kind]
        model = kind.build(definition.config, definition.classes, definition.vocabulary, None)
        for name, state in definition.fitted_state.items():
            try:
                model.encoders[name].load_fitted_state(state)
            except (KeyError, TypeError, ValueError) as error:
                raise CheckpointError(f"{folder.path / FITTED_STATE_FILE} does not fit the model "
                                      f"of config.yaml ({error}); re-save or retrain") from error
        folder.load_weights(model, definition)
        return cls(definition.config, kind, model, definition.classes, definition.vocabulary,
                   folder.metrics(), folder.history(), folder=folder.path)
