"""What every mmfuse estimator does, whatever the model kind: fit, read rows, evaluate, save,
load. ``Predictor`` (predictions) and ``RetrievalPredictor`` (search) are its two faces; both
delegate to ``FittedModel`` (the model contract) and own no training or file logic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.config import Config
from mmfuse.data.rows import Data, given_weights, read_rows, split_rows, with_pairs
from mmfuse.data.shards import shard_folder
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.deadline import Deadline
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.errors import CheckpointError, MmfuseError, NotFittedError
from mmfuse.features.batches import MultimodalDataset
from mmfuse.features.cache import FeatureCache, cache_root
from mmfuse.features.items import Item
from mmfuse.fitted_model import FittedModel
from mmfuse.model_folder import ModelFolder
from mmfuse.model_kinds import KINDS, kind_for
from mmfuse.tasks import Task, get_task


class Fitted(Protocol):
    """The model contract every kind implements whole: a single network and a dual encoder
    (``FittedModel``, their differences in ``model_kinds.py``) and an ensemble of members
    (``EnsembleModel``). Rows are validated rows (``Estimator.read``); items are in-memory
    values (decoded images, strings), as the server has them. Exporting is
    ``serving/export.py``'s, for every kind; explaining by gradients needs one network
    (``is_network``)."""

    config: Config
    classes: list[str] | None
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    skipped: list
    is_network: bool

    @property
    def task(self) -> Task: ...

    @property
    def modality_kinds(self) -> dict[str, str]: ...

    @property
    def vocabulary(self) -> Vocabulary | None: ...

    def predict(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities (N, C) (values for regression), decoded outputs, modality weights."""

    def predict_items(self, items: list[Item]) -> tuple[np.ndarray, np.ndarray,
                                                        np.ndarray | None]: ...

    def logits(self, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def calibrate(self, rows: pd.DataFrame) -> float:
        """The temperature (and the labels' decision) refitted on held-out labelled rows."""

    def evaluate(self, rows: pd.DataFrame) -> dict[str, Any]: ...

    def targets(self, rows: pd.DataFrame) -> torch.Tensor | None: ...

    def describe(self) -> str: ...

    def components(self) -> dict[str, Any]: ...

    def save(self, directory: str | Path) -> Path: ...

    def using_cache(self, cache: FeatureCache) -> AbstractContextManager[None]: ...


# Every kind of fitted model, by the name its folder records (``meta.json``).
FITTED_KINDS: dict[str, Any] = {**dict.fromkeys(KINDS, FittedModel),
                                EnsembleModel.kind_name: EnsembleModel}

E = TypeVar("E", bound="Estimator")


class Estimator:
    """Fitted: ``fitted_`` (the model contract) and, from it, ``model_``, ``classes_`` (None
    for regression and retrieval), ``history_`` (per-epoch rows), ``metrics_`` (validation
    metrics of the kept epoch) and ``skipped_rows_``."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else Config()

    # ------------------------------------------------------------------ fit
    def fit(
        self: E, data: Data, validation: Data | None = None, *, base_dir: str | Path | None = None,
        run_dir: str | Path | None = None, resume: bool = False, deadline: Deadline | None = None,
        cache: FeatureCache | None = None, classes: list[str] | None = None,
    ) -> E:
        """Validate the data, cache frozen features, train with early stopping; returns self.

        ``run_dir`` receives checkpoints every epoch; ``resume=True`` continues from them.
        ``deadline`` ends training early (the best epoch so far is kept); ``cache`` is a
        feature cache to share (auto mode's candidates). ``classes``: the label set, by
        default every label of ``data`` (a rare one may fall in the validation split only);
        auto mode gives each fold the same. The global random state and thread count are as
        they were afterwards.
        """
        cfg = self.config.validate()
        rows = self._rows(data, base_dir)
        skipped = list(rows.attrs.get("skipped", []))
        train_rows, val_rows = split_rows(rows, cfg) if validation is None else (rows, None)
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=[]):
            try:
                if cfg.train.threads:
                    torch.set_num_threads(cfg.train.threads)
                if classes is None and validation is None and not get_task(cfg.data.task).paired:
                    classes = kind_for(cfg).fit_classes(cfg, rows)  # pairs: drawn later
                train_rows = with_pairs(train_rows, cfg, cfg.train.seed)
                fitted = FittedModel.build(cfg, train_rows, classes)
                if val_rows is None:
                    val_rows = self._rows(validation, base_dir, known_labels=fitted.classes)
                    skipped += val_rows.attrs.get("skipped", [])
                fitted.skipped, fitted.cache = skipped, cache
                self.fitted_ = fitted.fit(
                    train_rows, with_pairs(val_rows, cfg, cfg.train.seed + 1),
                    run=Path(run_dir) if run_dir is not None else None, resume=resume,
                    deadline=deadline)
            finally:
                torch.set_num_threads(threads)
        return self

    def split(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(training, validation) rows of validated rows, as ``fit`` splits them."""
        return split_rows(rows, self.config)

    # ------------------------------------------------------------ evaluate
    def evaluate(self, data: Data, *, base_dir: str | Path | None = None) -> dict[str, Any]:
        """Metrics on labelled data (labels unseen in training are reported as data problems)."""
        return self.evaluate_rows(self.read(data, base_dir=base_dir))

    def read(self, data: Data, *, base_dir: str | Path | None = None,
             require_labels: bool = True) -> pd.DataFrame:
        """Validated, labelled rows as ``evaluate_rows`` takes them: image cells are absolute
        paths, ``None`` marks a missing modality, ``_target`` holds the parsed label.
        Rows that ``read`` already returned pass through unchanged."""
        self._check_fitted()
        if isinstance(data, pd.DataFrame) and data.attrs.get("validated"):
            return data
        rows = self._rows(data, base_dir, known_labels=self.classes_, require_labels=require_labels)
        return with_pairs(rows, self.config, self.config.train.seed + 2)

    def evaluate_rows(self, rows: pd.DataFrame) -> dict[str, Any]:
        """Metrics on rows from ``read`` (possibly altered: corrupted files, removed
        modalities); where the rows carry weights (``--weight-col``), the same metrics
        weighted too, under ``weighted``."""
        self._check_fitted()
        metrics = self.fitted_.evaluate(rows)
        weights = given_weights(rows)
        if weights is not None and get_task(self.config.data.task).predicts:
            scores, decoded = self.fitted_.predict(rows)[:2]
            weighted = get_task(self.config.data.task).metrics(
                self.targets(rows).numpy(), decoded, scores, self.classes_ or [],
                sample_weight=weights)
            metrics["weighted"] = {k: v for k, v in weighted.items()  # ece: unweighted
                                   if isinstance(v, float) and k not in ("n", "ece")}
        return metrics

    def targets(self, rows: pd.DataFrame) -> torch.Tensor:
        """Encoded targets of rows from ``read``: class ids (N,), indicators (N, C), values (N,)."""
        return self.fitted_.targets(rows)

    def dataset(self, rows: pd.DataFrame, use_cache: bool = True) -> MultimodalDataset:
        """Model inputs for rows from ``read``; ``use_cache=False`` decodes and encodes live
        (explanations need gradients through the encoders; profiling measures both)."""
        self.require_network("build one network's inputs")
        return self.fitted_.dataset(rows, with_targets=False, use_cache=use_cache)  # type: ignore[attr-defined]

    @contextmanager
    def feature_cache(self, cache: FeatureCache) -> Iterator[None]:
        """Use another feature cache for a while (e.g. a throw-away one for corrupted inputs)."""
        with self._fitted().using_cache(cache):
            yield

    # ----------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> Path:
        """A self-describing folder: weights (safetensors), config, labels, vocabulary, metrics."""
        self._check_fitted()
        return self.fitted_.save(directory)

    @classmethod
    def load(cls: type[E], directory: str | Path) -> E:
        """Rebuild from a folder written by ``save``; reads no pickle, runs no stored code."""
        kind = ModelFolder(directory).definition().kind
        if kind not in FITTED_KINDS:
            raise CheckpointError(f"{directory} holds a model of kind '{kind}', which this "
                                  f"version of mmfuse does not know ({', '.join(FITTED_KINDS)})")
        return cls.of(FITTED_KINDS[kind].load(directory))

    @classmethod
    def of(cls: type[E], fitted: Fitted) -> E:
        """The estimator around an already fitted model."""
        estimator = cls(fitted.config)
        estimator.fitted_ = fitted
        return estimator

    def describe(self) -> str:
        """What the model is, in one line (fusion and encoders, or the ensemble's members)."""
        return self._fitted().describe()

    @property
    def is_network(self) -> bool:
        """One trained network (not an ensemble of members)."""
        return self._fitted().is_network

    def require_network(self, action: str) -> nn.Module:
        """The fitted network, or a one-sentence refusal of ``action`` for an ensemble
        (which is many models, not one network)."""
        fitted = self._fitted()
        if not fitted.is_network:
            raise MmfuseError(
                f"cannot {action}: this model is an ensemble of members "
                f"({fitted.describe()}), not one network. Every other command works on it; "
                f"to {action}, train a network with model flags (e.g. --fusion concat).")
        return fitted.model

    # ------------------------------------------------------------ fitted state
    model_ = property(lambda self: self.require_network("use the network (model_)"))
    classes_ = property(lambda self: self._fitted().classes)
    vocabulary_ = property(lambda self: self._fitted().vocabulary)
    history_ = property(lambda self: self._fitted().history)
    metrics_ = property(lambda self: self._fitted().metrics)
    skipped_rows_ = property(lambda self: self._fitted().skipped)

    @property
    def modality_kinds_(self) -> dict[str, str]:
        """The input modalities the model reads -> "image" | "text" | "tabular"."""
        return self._fitted().modality_kinds

    def _fitted(self) -> Fitted:
        self._check_fitted()
        return self.fitted_

    def _check_fitted(self) -> None:
        if "fitted_" not in vars(self):
            name = type(self).__name__
            raise NotFittedError(f"this {name} is not fitted yet: call fit() or {name}.load()")

    def _rows(self, data: Data, base_dir: str | Path | None, known_labels: list[str] | None = None,
              require_labels: bool = True) -> pd.DataFrame:
        return read_rows(data, self.config, cache_root(self.config.cache_dir), base_dir=base_dir,
                         known_labels=known_labels, require_labels=require_labels)

    def _extract_root(self, spec: str | Path) -> Path:
        return shard_folder(cache_root(self.config.cache_dir), spec)
