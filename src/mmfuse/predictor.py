"""The Predictor facade, in the scikit-learn manner: fit returns self, learned state ends in ``_``."""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from mmfuse.config import Config
from mmfuse.data.batches import MultimodalDataset
from mmfuse.data.manifest import as_frame, iter_manifest
from mmfuse.data.shards import is_shard_spec, iter_shards, read_shards, shard_folder
from mmfuse.data.split import split_by_group, split_frame
from mmfuse.data.validate import cells, problems_frame, validate_frame
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.errors import CheckpointError, ConfigError, DataValidationError, MmfuseError, Problem
from mmfuse.evaluation.calibration import fit_temperature
from mmfuse.evaluation.metrics import compute_metrics, default_metric
from mmfuse.io import (
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from mmfuse.models.build import build_model
from mmfuse.models.multimodal import MultimodalModel, load_persistent_state, persistent_state
from mmfuse.progress import CONSOLE, make_progress
from mmfuse.retrieval.matching import NO, YES, make_matching_pairs
from mmfuse.training.distributed import is_main_process, main_process_first
from mmfuse.training.feature_cache import FeatureCache, default_cache_dir, make_dataset
from mmfuse.training.inference import run_model
from mmfuse.training.stacking import fit_stack
from mmfuse.training.trainer import BEST_FILE, STATE_FILE, Deadline, train

VERSION = "0.1.0"
Data = pd.DataFrame | str | Path  # a table, a manifest file, or tar shards (data/shards.py)
PAIRED_TASKS = ("matching", "retrieval")  # tables of (image, caption) pairs, no label column
IMBALANCE_RATIO_FOR_WEIGHTS = 10.0  # "auto": weight the loss only when imbalance is severe
PREDICT_CHUNK = 8192  # rows whose features are in memory at once while predicting


class Predictor:
    """Train, evaluate, predict and save an image+text model.

    >>> predictor = Predictor(Config()).fit("train.csv")       # doctest: +SKIP
    >>> predictor.predict("new.csv")                           # doctest: +SKIP

    Fitted attributes: ``model_``, ``classes_`` (None for regression), ``vocabulary_``,
    ``history_`` (per-epoch rows), ``metrics_`` (validation metrics of the kept epoch).
    """

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else Config()

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        data: Data,
        validation: Data | None = None,
        *,
        base_dir: str | Path | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        deadline: Deadline | None = None,
    ) -> Predictor:
        """Validate the data, cache frozen features, train with early stopping; returns self.

        ``run_dir`` receives checkpoints every epoch; ``resume=True`` continues from them.
        ``deadline`` ends training early (the best epoch so far is kept).
        """
        cfg = self.config.validate()
        run = Path(run_dir) if run_dir is not None else None
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        frame = self._read(data, base_dir)
        skipped = list(frame.attrs.get("skipped", []))
        if validation is None:
            train_frame, val_frame = self._split(frame)
        else:
            train_frame = frame
        self.classes_ = self._fit_classes(train_frame)
        if validation is not None:
            val_frame = self._read(validation, base_dir, known_labels=self.classes_)
            skipped += val_frame.attrs.get("skipped", [])
        train_frame = self._with_targets(train_frame, cfg.train.seed)
        val_frame = self._with_targets(val_frame, cfg.train.seed + 1)
        self.vocabulary_ = self._fit_vocabulary(train_frame)
        torch.manual_seed(cfg.train.seed)
        self.model_ = self._build_model(self._n_outputs(), self._head_options(train_frame))
        text_encoder = self.model_.encoders["text"] if "text" in self.model_.encoders else None
        if hasattr(text_encoder, "fit_texts"):  # e.g. n-gram document frequencies
            text_encoder.fit_texts(self._texts(train_frame))
        self.skipped_rows_ = skipped
        if resume and (run is None or not (run / STATE_FILE).exists()):
            # Killed before the first epoch ended: nothing to restore, but cached features
            # are reused, so starting over loses no finished work.
            CONSOLE.print("No completed epoch to resume from; starting at epoch 1.")
            resume = False
        if run is not None:
            if resume:
                self._check_resume(run)
            if is_main_process():
                self._write_definition(run)
                if skipped:
                    problems_frame(skipped).to_csv(run / "bad_rows.csv", index=False)
        with main_process_first():  # one process fills the feature cache, the others read it
            train_set = self._dataset(train_frame)
            val_set = self._dataset(val_frame)

        def validate(model: MultimodalModel) -> dict[str, float]:
            scores = self._score(model, val_frame, val_set)
            return {k: v for k, v in scores.items() if isinstance(v, int | float)}

        if getattr(getattr(self.model_, "fusion", None), "trained_by_stacking", False):
            if resume:
                CONSOLE.print("stack: folds start over on --resume (they read cached features)")
            state = fit_stack(self.model_, train_set, val_set, cfg.train, deadline)
        else:
            state = train(
                self.model_, train_set, validate, cfg.train, self._metric(), run, resume,
                self._sample_weights(train_frame), deadline=deadline,
            )
        self.history_ = state.history
        if cfg.train.calibrate:
            self._calibrate(val_frame, val_set)
        self.metrics_ = {"validation": self._score(self.model_, val_frame, val_set),
                         "best_epoch": state.best_epoch, "epochs_run": state.epoch}
        if state.privacy is not None:
            self.metrics_["privacy"] = state.privacy
        if run is not None and is_main_process():
            self.save(run)
        return self

    # ------------------------------------------------------------- predict
    def predict_proba(self, data: Data, *, base_dir: str | Path | None = None) -> pd.DataFrame:
        """One row per input row: a probability column per class (``prediction`` for regression)."""
        scores, _, frame, _ = self._forward(data, base_dir)
        columns = self.classes_ if self.classes_ is not None else ["prediction"]
        return pd.DataFrame(scores, columns=columns, index=frame["_row"].to_numpy())

    def predict(self, data: Data, *, base_dir: str | Path | None = None) -> np.ndarray:
        """Labels (classification, binary), label lists (multilabel) or values (regression)."""
        _, decoded, _, _ = self._forward(data, base_dir)
        return self._labels(decoded)

    def predict_frame(self, data: Data, *, base_dir: str | Path | None = None) -> pd.DataFrame:
        """The input rows with ``prediction``, per-class probabilities and modality weights."""
        return self._prediction_table(*self._forward(data, base_dir))

    def predict_to_csv(
        self, data: Data, output: str | Path, *, base_dir: str | Path | None = None,
        chunk_rows: int = PREDICT_CHUNK,
    ) -> int:
        """``predict_frame`` streamed: the manifest is read, validated, predicted and written
        ``chunk_rows`` rows at a time, so memory does not grow with its length. The CSV appears
        (atomically) only when complete. Returns the number of rows written."""
        self._check_fitted()
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        written = 0
        try:
            with open(partial, "w", newline="") as handle, make_progress(False) as progress:
                task = progress.add_task("Predicting", total=None, status="rows")
                chunks = (iter_shards(data, self.config.data, self._shard_dir(data), chunk_rows)
                          if is_shard_spec(data) else iter_manifest(data, chunk_rows, base_dir))
                for chunk in chunks:
                    table = self._prediction_table(*self._forward(chunk, base_dir))
                    table.to_csv(handle, index=False, header=written == 0)
                    written += len(table)
                    progress.advance(task, len(chunk))
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
        return written

    def _prediction_table(
        self, scores: np.ndarray, decoded: np.ndarray, frame: pd.DataFrame,
        weights: np.ndarray | None,
    ) -> pd.DataFrame:
        out = pd.DataFrame({"row": frame["_row"].to_numpy()})
        labels = self._labels(decoded)
        out["prediction"] = ["|".join(x) if isinstance(x, list) else x for x in labels]
        if self.classes_ is not None:
            for i, name in enumerate(self.classes_):
                out[f"p_{name}"] = scores[:, i]
        if weights is not None:
            for i, name in enumerate(self.model_.modalities):
                out[f"weight_{name}"] = weights[:, i]
        return out

    def evaluate(self, data: Data, *, base_dir: str | Path | None = None) -> dict[str, Any]:
        """Metrics on labelled data (labels unseen in training are reported as data problems)."""
        return self.evaluate_rows(self.read(data, base_dir=base_dir))

    def read(
        self, data: Data, *, base_dir: str | Path | None = None, require_labels: bool = True
    ) -> pd.DataFrame:
        """Validated, labelled rows as ``evaluate_rows`` takes them: image cells are absolute
        paths, ``None`` marks a missing modality, ``_target`` holds the parsed label.
        Rows that ``read`` already returned pass through unchanged."""
        self._check_fitted()
        if isinstance(data, pd.DataFrame) and data.attrs.get("validated"):
            return data
        frame = self._read(data, base_dir, known_labels=self.classes_,
                           require_labels=require_labels)
        return self._with_targets(frame, self.config.train.seed + 2)

    def evaluate_rows(self, rows: pd.DataFrame) -> dict[str, Any]:
        """Metrics on rows from ``read`` (possibly altered: corrupted files, removed modalities)."""
        self._check_fitted()
        return self._score(self.model_, rows, self._dataset(rows))

    def targets(self, rows: pd.DataFrame) -> torch.Tensor:
        """Encoded targets of rows from ``read``: class ids (N,), indicators (N, C), values (N,)."""
        return self._targets(rows)

    def calibrate(self, data: Data, *, base_dir: str | Path | None = None) -> float:
        """Fit the probability temperature on held-out labelled data; returns it. ``save``
        stores it with the weights."""
        rows = self.read(data, base_dir=base_dir)
        return self._calibrate(rows, self._dataset(rows))

    def _calibrate(self, rows: pd.DataFrame, dataset: MultimodalDataset) -> float:
        task = self.config.data.task
        if task not in ("classification", "binary", "matching"):
            raise ConfigError(f"temperature scaling applies to classification, not to {task}")
        logits, _ = run_model(self.model_, dataset, num_workers=self.config.train.num_workers)
        temperature = fit_temperature(logits, self._targets(rows), binary=task != "classification")
        self.model_.head.temperature.fill_(temperature)
        CONSOLE.print(f"calibrated: temperature {temperature:.3f}")
        return temperature

    def logits(self, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw logits (N, C) and modality weights (N, M) or None for rows from ``read``."""
        self._check_fitted()
        return run_model(self.model_, self._dataset(rows, with_targets=False),
                         num_workers=self.config.train.num_workers)

    @contextmanager
    def feature_cache(self, cache: FeatureCache) -> Iterator[None]:
        """Use another feature cache for a while (e.g. a throw-away one for corrupted inputs)."""
        previous = getattr(self, "_feature_cache", None)
        self._feature_cache = cache
        try:
            yield
        finally:
            self._feature_cache = previous

    # ----------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> Path:
        """A self-describing folder: weights (safetensors), config, labels, vocabulary, metrics."""
        self._check_fitted()
        directory = Path(directory)
        self._write_definition(directory)
        save_tensors(directory / BEST_FILE, persistent_state(self.model_))
        write_json(directory / "metrics.json", getattr(self, "metrics_", {}))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        """Rebuild from a folder written by ``save``; reads no pickle, runs no stored code."""
        directory = Path(directory)
        if not (directory / "config.yaml").exists():
            raise CheckpointError(
                f"{directory} is not an mmfuse model folder (no config.yaml). "
                "Pass the --out folder of `mmfuse train`."
            )
        predictor = cls(Config.from_yaml(directory / "config.yaml"))
        labels = read_json(directory / "labels.json")
        predictor.classes_ = labels["classes"]
        vocabulary_file = directory / "vocabulary.json"
        predictor.vocabulary_ = (
            Vocabulary.from_dict(read_json(vocabulary_file)) if vocabulary_file.exists() else None
        )
        meta = read_json(directory / "meta.json")
        predictor.model_ = predictor._build_model(labels["n_outputs"], {})
        load_persistent_state(predictor.model_, load_tensors(directory / BEST_FILE))
        predictor.model_.eval()
        for kind, fingerprint in meta.get("encoders", {}).items():
            current = predictor.model_.encoders[kind].fingerprint
            if current != fingerprint:
                raise CheckpointError(
                    f"the {kind} encoder's weights differ from those the model was trained with "
                    f"({current} vs {fingerprint}); install the package version it was trained "
                    "with, or retrain."
                )
        metrics = directory / "metrics.json"
        predictor.metrics_ = read_json(metrics) if metrics.exists() else {}
        history = directory / "history.json"
        predictor.history_ = read_json(history) if history.exists() else []
        return predictor

    # ------------------------------------------------------------ internals
    def _read(
        self, data: Data, base_dir: str | Path | None, known_labels: list[str] | None = None,
        require_labels: bool = True,
    ) -> pd.DataFrame:
        """Validated rows. Paired tasks (matching, retrieval) need no label column."""
        if isinstance(data, pd.DataFrame) and data.attrs.get("validated"):
            return data  # rows already read (e.g. by the auto search), with their targets
        paired = self.config.data.task in PAIRED_TASKS
        if is_shard_spec(data):
            data = read_shards(data, self.config.data, self._shard_dir(data))
        return validate_frame(
            as_frame(data, base_dir), self.config.data, self.config.model.modalities,
            known_labels=None if paired else known_labels,
            require_labels=require_labels and not paired,
        )

    def _split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validation rows: stratified by label, or (paired tasks) by image, so no image is
        seen in both training and validation."""
        data, seed = self.config.data, self.config.train.seed
        if data.task in PAIRED_TASKS:
            return split_by_group(frame, data.val_fraction, seed, frame[data.image_cols[0]])
        stratify = frame["_target"] if data.task in ("classification", "binary") else None
        return split_frame(frame, data.val_fraction, seed, stratify)

    def _with_targets(self, frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        """Matching learns from true pairs only: mismatched captions are drawn here."""
        data = self.config.data
        if data.task != "matching":
            return frame
        return make_matching_pairs(frame, data.image_cols[0], data.text_cols[0], data.negatives,
                                   data.hard_negative_fraction, seed)

    def _build_model(self, n_outputs: int, head_options: dict[str, Any]) -> Any:
        return build_model(self.config, n_outputs, self.vocabulary_, head_options)

    def _metric(self) -> str:
        return self.config.train.metric or default_metric(self.config.data.task)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise MmfuseError("this Predictor is not fitted yet: call fit() or Predictor.load()")

    def _fit_classes(self, frame: pd.DataFrame) -> list[str] | None:
        task = self.config.data.task
        if task == "regression":
            return None
        if task == "matching":
            return [NO, YES]
        targets = frame["_target"].tolist()
        classes = sorted({t for row in targets for t in row} if task == "multilabel" else set(targets))
        if task in ("binary", "matching") and len(classes) != 2:
            raise ConfigError(f"task 'binary' needs exactly 2 labels, found {classes}")
        if len(classes) < 2 and task != "multilabel":
            raise DataValidationError(
                [Problem(frame.attrs.get("source", "<DataFrame>"), None,
                         self.config.data.label_col, f"only one label ({classes}) in training")]
            )
        return classes

    def _n_outputs(self) -> int:
        return len(self.classes_) if self.classes_ is not None else 1

    def _fit_vocabulary(self, frame: pd.DataFrame) -> Vocabulary | None:
        text = self.config.model.text_encoder
        if text.name != "gru" or "text" not in self.config.model.modalities:
            return None
        return Vocabulary.build(
            self._texts(frame), level=text.options.get("level", "word"),
            max_size=int(text.options.get("max_vocabulary", 30000)),
        )

    def _texts(self, frame: pd.DataFrame) -> list[str]:
        return [t for c in self.config.data.text_cols for t in cells(frame, c) if t is not None]

    def _imbalance_mode(self, frame: pd.DataFrame) -> str:
        mode = self.config.train.imbalance
        if mode != "auto" or self.config.data.task not in ("classification", "binary"):
            return "none" if mode == "auto" else mode
        counts = Counter(frame["_target"])
        ratio = max(counts.values()) / min(counts.values())
        return "weight" if ratio >= IMBALANCE_RATIO_FOR_WEIGHTS else "none"

    def _head_options(self, frame: pd.DataFrame) -> dict[str, Any]:
        task = self.config.data.task
        if task == "regression":
            values = np.asarray(frame["_target"].tolist(), dtype=np.float64)
            return {"mean": float(values.mean()), "std": float(values.std() or 1.0)}
        if task == "classification" and self._imbalance_mode(frame) == "weight":
            counts = Counter(frame["_target"])
            n, k = len(frame), len(self.classes_)
            weights = [n / (k * counts[c]) if counts[c] else 0.0 for c in self.classes_]
            return {"class_weights": torch.tensor(weights)}
        if task in ("binary", "matching") and self._imbalance_mode(frame) == "weight":
            counts = Counter(frame["_target"])
            return {"pos_weight": counts[self.classes_[0]] / max(1, counts[self.classes_[1]])}
        return {}

    def _sample_weights(self, frame: pd.DataFrame) -> torch.Tensor | None:
        if self._imbalance_mode(frame) != "sample" or self.config.data.task == "regression":
            return None
        keys = [tuple(t) if isinstance(t, list) else t for t in frame["_target"]]
        counts = Counter(keys)
        return torch.tensor([1.0 / counts[k] for k in keys], dtype=torch.double)

    def _targets(self, frame: pd.DataFrame) -> torch.Tensor:
        task, targets = self.config.data.task, frame["_target"].tolist()
        if task == "regression":
            return torch.tensor(targets, dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.classes_)}
        if task == "multilabel":
            matrix = torch.zeros(len(targets), len(self.classes_))
            for row, labels in enumerate(targets):
                matrix[row, [index[label] for label in labels]] = 1.0
            return matrix
        return torch.tensor([index[t] for t in targets], dtype=torch.long)

    def _cache_root(self) -> Path:
        """The cache folder; with the feature cache off ("none"), the default one (shard images)."""
        root = self.config.cache_dir
        return default_cache_dir() if not root or root == "none" else Path(root)

    def _shard_dir(self, spec: str | Path) -> Path:
        """Images from tar shards are written here once (the pipeline reads image files)."""
        return shard_folder(self._cache_root(), spec)

    def _cache(self) -> FeatureCache:
        """One cache per Predictor, so features read once serve every split and prediction."""
        if getattr(self, "_feature_cache", None) is None:
            path = None if self.config.cache_dir == "none" else self._cache_root()
            self._feature_cache = FeatureCache(path, num_workers=self.config.train.num_workers)
        return self._feature_cache

    def _dataset(
        self, frame: pd.DataFrame, with_targets: bool = True, use_cache: bool = True
    ) -> MultimodalDataset:
        targets = self._targets(frame) if with_targets and "_target" in frame else None
        encoders = {m: self.model_.encoder_for(m) for m in self.model_.modalities}
        fusion = getattr(self.model_, "fusion", None)
        needs_tokens = bool(fusion is not None and fusion.needs_tokens)
        return make_dataset(frame, encoders, self._cache(), needs_tokens, targets, use_cache)

    def dataset(self, rows: pd.DataFrame, use_cache: bool = True) -> MultimodalDataset:
        """Model inputs for rows from ``read``; ``use_cache=False`` decodes and encodes live
        (explanations need gradients through the encoders; profiling measures both)."""
        self._check_fitted()
        return self._dataset(rows, with_targets=False, use_cache=use_cache)

    def _forward(
        self, data: Data, base_dir: str | Path | None
    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray | None]:
        """Probabilities, decoded predictions, the validated rows and modality weights."""
        self._check_fitted()
        frame = self._read(data, base_dir, require_labels=False)
        logits, weights = self._run_chunked(frame)
        scores = self.model_.head.probabilities(logits).numpy()
        decoded = self.model_.head.decode(logits).numpy()
        return scores, decoded, frame, (weights.numpy() if weights is not None else None)

    def _run_chunked(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits chunk by chunk: features of one chunk at a time are in memory, so memory
        grows with the output only, not with the inputs' features."""
        logits, weights = [], []
        for start in range(0, len(frame), PREDICT_CHUNK):
            dataset = self._dataset(frame.iloc[start:start + PREDICT_CHUNK], with_targets=False)
            chunk_logits, chunk_weights = run_model(
                self.model_, dataset, num_workers=self.config.train.num_workers)
            logits.append(chunk_logits)
            if chunk_weights is not None:
                weights.append(chunk_weights)
        return torch.cat(logits), (torch.cat(weights) if weights else None)

    def _labels(self, decoded: np.ndarray) -> np.ndarray:
        task = self.config.data.task
        if task == "regression":
            return decoded
        classes = np.asarray(self.classes_, dtype=object)
        if task == "multilabel":
            out = np.empty(len(decoded), dtype=object)
            out[:] = [list(classes[row.astype(bool)]) for row in decoded]
            return out
        return classes[decoded]

    def _score(self, model: MultimodalModel, frame: pd.DataFrame, dataset: MultimodalDataset) -> dict:
        logits, _ = run_model(model, dataset, num_workers=self.config.train.num_workers)
        scores = model.head.probabilities(logits).numpy()
        decoded = model.head.decode(logits).numpy()
        y_true = self._targets(frame).numpy()
        result = compute_metrics(self.config.data.task, y_true, decoded, scores,
                                 self.classes_ or [])
        if dataset.targets is not None:
            device = model.head.linear.weight.device  # the GPU, right after training on one
            result["loss"] = float(model.head.loss(logits.to(device), dataset.targets.to(device)))
        return result

    def _write_definition(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config.to_yaml(directory / "config.yaml")
        write_json(directory / "labels.json", {
            "task": self.config.data.task, "classes": self.classes_,
            "n_outputs": self._n_outputs(), "label_col": self.config.data.label_col,
        })
        if self.vocabulary_ is not None:
            write_json(directory / "vocabulary.json", self.vocabulary_.to_dict())
        write_json(directory / "meta.json", {
            "mmfuse_version": VERSION,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "encoders": {k: e.fingerprint for k, e in self.model_.encoders.items()},
            "preprocessing": {k: e.preprocessing for k, e in self.model_.encoders.items()},
            "modalities": self.model_.modalities,
        })

    def _check_resume(self, run: Path) -> None:
        """A resumed run must train the same model on the same labels."""
        stored_config = run / "config.yaml"
        if not stored_config.exists():
            raise CheckpointError(f"nothing to resume in {run}: no config.yaml there")
        stored = yaml.safe_load(stored_config.read_text())
        if stored != self.config.to_dict():
            raise CheckpointError(
                f"--resume: the settings differ from those saved in {stored_config}. Resume with "
                "the same settings (or `--config` that file), or train into a new --out folder."
            )
        labels = read_json(run / "labels.json")
        if labels["classes"] != self.classes_:
            raise CheckpointError(
                "--resume: the labels in this data differ from the interrupted run's labels"
            )

