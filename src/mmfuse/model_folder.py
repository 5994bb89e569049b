"""The model folder: the one place that knows how a fitted model lies on disk.

``config.yaml`` (the resolved config), ``labels.json`` (task, classes, outputs), optional
``vocabulary.json``, ``meta.json`` (kind, versions, encoder fingerprints, preprocessing),
``model.safetensors`` (weights of the kept epoch), ``metrics.json``, ``history.json`` and
``history.csv`` (and ``tensorboard/`` where installed); ``training_state.safetensors`` while
training (resume): the trainer writes them through this class (``RunFiles``). Safetensors and
JSON/YAML only: loading a folder from a stranger runs no code.
"""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from mmfuse.config import Config
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.errors import CheckpointError, ConfigError
from mmfuse.io import (
    atomic_write_text,
    load_tensors,
    read_json,
    read_metadata,
    save_tensors,
    stale_temporaries,
    write_json,
)
from mmfuse.models.multimodal import load_persistent_state, persistent_state

VERSION = "0.1.0"
WEIGHTS_FILE = "model.safetensors"  # the kept epoch's weights (an ensemble's arrays)
STATE_FILE = "training_state.safetensors"  # the last completed epoch, while training
FITTED_STATE_FILE = "fitted_state.json"  # encoders' fitted state beside the weights
# what the commands write beside the model
LEADERBOARD_FILE = "leaderboard.json"  # auto mode's candidates
TEST_METRICS_FILE = "test_metrics.json"  # `train --test-data`
EVALUATION_FILE = "evaluation.json"  # the last `mmfuse evaluate`
ROBUSTNESS_FILE = "robustness.json"  # the last `mmfuse robustness`
PROFILE_FILE = "profile.json"  # the last `mmfuse profile`
CARD_FILE = "README.md"  # the model card (evaluation/model_card.py)
CARD_FACTS_FILE = "card.json"  # what `train` recorded for the card: data summary, command


@dataclass
class Definition:
    """What builds the network again: everything but the weights."""

    config: Config
    kind: str
    classes: list[str] | None
    n_outputs: int
    vocabulary: Vocabulary | None
    fingerprints: dict[str, str]
    # encoder kind -> what its ``fit`` learned beside the weights (a tabular tower's scaling)
    fitted_state: dict[str, Any] = field(default_factory=dict)


def read_as_trained(config: Config, path: Path) -> None:
    """A model saved before texts were read in windows was trained on each text's first
    window: it keeps reading them so (``max_windows`` 1), not in the new default's windows."""
    saved = yaml.safe_load(path.read_text()) or {}
    for kind in ("image", "text"):
        encoder = (saved.get("model") or {}).get(f"{kind}_encoder") or {}
        if "max_windows" not in encoder:
            getattr(config.model, f"{kind}_encoder").max_windows = 1


class ModelFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / "config.yaml").exists()

    def can_resume(self) -> bool:
        return (self.path / STATE_FILE).exists()

    # ------------------------------------------------------------ writing
    def write_definition(self, definition: Definition, model: nn.Module) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        definition.config.to_yaml(self.path / "config.yaml")
        write_json(self.path / "labels.json", {
            "task": definition.config.data.task, "classes": definition.classes,
            "n_outputs": definition.n_outputs, "label_col": definition.config.data.label_col,
        })
        if definition.vocabulary is not None:
            write_json(self.path / "vocabulary.json", definition.vocabulary.to_dict())
        if definition.fitted_state:
            write_json(self.path / FITTED_STATE_FILE, definition.fitted_state)
        write_json(self.path / "meta.json", {
            "kind": definition.kind,
            "mmfuse_version": VERSION,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "encoders": {k: e.fingerprint for k, e in model.encoders.items()},
            "preprocessing": {k: e.preprocessing for k, e in model.encoders.items()},
            "modalities": model.modalities,
        })

    def save(self, definition: Definition, model: nn.Module, metrics: dict[str, Any]) -> Path:
        self.write_definition(definition, model)
        save_tensors(self.path / WEIGHTS_FILE, persistent_state(model))
        write_json(self.path / "metrics.json", metrics)
        return self.path

    def save_ensemble(self, config: Config, classes: list[str] | None, *, spec: dict[str, Any],
                      tensors: dict[str, torch.Tensor], fingerprints: dict[str, str],
                      metrics: dict[str, Any]) -> Path:
        """An ensemble: its linear members' arrays (safetensors) and how members combine
        (``ensemble.json``: views, vocabularies, weights or stacker, temperature)."""
        self.path.mkdir(parents=True, exist_ok=True)
        config.to_yaml(self.path / "config.yaml")
        write_json(self.path / "labels.json", {
            "task": config.data.task, "classes": classes,
            "n_outputs": 1 if classes is None else len(classes),
            "label_col": config.data.label_col})
        write_json(self.path / "meta.json", {
            "kind": "ensemble", "mmfuse_version": VERSION, "torch_version": torch.__version__,
            "python_version": platform.python_version(), "encoders": fingerprints})
        write_json(self.path / "ensemble.json", spec)
        save_tensors(self.path / WEIGHTS_FILE, tensors)
        write_json(self.path / "metrics.json", metrics)
        return self.path

    def ensemble(self) -> tuple[Definition, dict[str, Any], dict[str, torch.Tensor]]:
        return (self.definition(), read_json(self.path / "ensemble.json"),
                load_tensors(self.path / WEIGHTS_FILE))

    # ------------------------------------------------------------ reading
    def definition(self) -> Definition:
        if not self.exists():
            raise CheckpointError(
                f"{self.path} is not an mmfuse model folder (no config.yaml). "
                "Pass the --out folder of `mmfuse train`."
            )
        try:
            config = Config.from_yaml(self.path / "config.yaml")
        except ConfigError as error:
            raise CheckpointError(f"{self.path / 'config.yaml'}: {error}") from error
        read_as_trained(config, self.path / "config.yaml")
        labels = self._labels()
        meta = read_json(self.path / "meta.json")
        if not isinstance(meta, dict):
            raise CheckpointError(f"{self.path / 'meta.json'} must be a JSON object")
        vocabulary_file = self.path / "vocabulary.json"
        try:
            vocabulary = (Vocabulary.from_dict(read_json(vocabulary_file))
                          if vocabulary_file.exists() else None)
        except (ConfigError, KeyError, TypeError) as error:
            raise CheckpointError(f"{vocabulary_file} is not a vocabulary ({error}); re-save "
                                  "or retrain") from error
        kind = meta.get("kind") or ("dual_encoder" if labels["n_outputs"] == 0 else "single")
        state_file = self.path / FITTED_STATE_FILE
        fitted_state = read_json(state_file) if state_file.exists() else {}
        if not isinstance(fitted_state, dict):
            raise CheckpointError(f"{state_file} must be a JSON object; re-save or retrain")
        return Definition(config, kind, labels["classes"], labels["n_outputs"], vocabulary,
                          meta.get("encoders", {}), fitted_state)

    def _labels(self) -> dict[str, Any]:
        """labels.json, checked: an object whose ``classes`` (names, or null) agree with its
        ``n_outputs``."""
        path = self.path / "labels.json"
        labels = read_json(path)
        if not isinstance(labels, dict):
            raise CheckpointError(f"{path} must be a JSON object with task, classes, n_outputs")
        missing = [key for key in ("classes", "n_outputs") if key not in labels]
        if missing:
            raise CheckpointError(f"{path} lacks {', '.join(missing)}; re-save or retrain")
        classes, outputs = labels["classes"], labels["n_outputs"]
        if classes is not None and not (isinstance(classes, list)
                                        and all(isinstance(c, str) for c in classes)):
            raise CheckpointError(f"{path}: classes must be a list of names (or null)")
        if not isinstance(outputs, int) or (classes is not None and outputs not in (
                len(classes), 1)):
            raise CheckpointError(f"{path}: n_outputs {outputs!r} does not fit its "
                                  f"{len(classes or [])} classes; was it edited?")
        return labels

    def load_weights(self, model: nn.Module, definition: Definition) -> None:
        """The saved weights into ``model``, after checking its encoders are those it was
        trained with."""
        self.check_fingerprints(dict(model.encoders.items()), definition)
        load_persistent_state(model, load_tensors(self.path / WEIGHTS_FILE))
        model.eval()

    @staticmethod
    def check_fingerprints(encoders: dict[str, Any], definition: Definition) -> None:
        """The encoders are those the model was trained with (same weights files)."""
        for name, fingerprint in definition.fingerprints.items():
            current = encoders[name].fingerprint
            if current != fingerprint:
                raise CheckpointError(
                    f"the {name} encoder's weights differ from those the model was trained with "
                    f"({current} vs {fingerprint}); install the package version it was trained "
                    "with, or retrain."
                )

    # ---------------------------------------------------------------- while training
    # (``training.checkpoints.RunFiles``: the trainer writes through these)
    def save_best(self, weights: dict[str, torch.Tensor]) -> None:
        save_tensors(self.path / WEIGHTS_FILE, weights)

    def load_best(self) -> dict[str, torch.Tensor]:
        return load_tensors(self.path / WEIGHTS_FILE)

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
                        ) -> None:
        save_tensors(self.path / STATE_FILE, tensors, metadata=metadata)

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        path = self.path / STATE_FILE
        return load_tensors(path), read_metadata(path)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """``history.json`` (every number) and ``history.csv`` (the scalar ones)."""
        write_json(self.path / "history.json", history)
        scalar = [{k: v for k, v in row.items() if not isinstance(v, list | dict)}
                  for row in history]
        if not scalar:
            return
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(scalar[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(scalar)
        atomic_write_text(self.path / "history.csv", table.getvalue())

    def log_scalars(self, row: dict[str, Any]) -> None:
        """``tensorboard/``, when TensorBoard is installed (``pip install mmfuse[tensorboard]``)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        with SummaryWriter(str(self.path / "tensorboard")) as writer:
            for name, value in row.items():
                if name != "epoch" and isinstance(value, int | float):
                    writer.add_scalar(name, value, row["epoch"])

    def clear_stale(self) -> None:
        for stale in stale_temporaries(self.path):
            stale.unlink()

    def metrics(self) -> dict[str, Any]:
        path = self.path / "metrics.json"
        return read_json(path) if path.exists() else {}

    def optional(self, name: str) -> Any:
        """The JSON file ``name`` of the folder, or None where there is none."""
        path = self.path / name
        return read_json(path) if path.exists() else None

    def history(self) -> list[dict[str, Any]]:
        path = self.path / "history.json"
        return read_json(path) if path.exists() else []

    def check_resume(self, config: Config, classes: list[str] | None) -> None:
        """A resumed run must train the same model on the same labels."""
        stored_config = self.path / "config.yaml"
        if not stored_config.exists():
            raise CheckpointError(f"nothing to resume in {self.path}: no config.yaml there")
        if yaml.safe_load(stored_config.read_text()) != config.to_dict():
            raise CheckpointError(
                f"--resume: the settings differ from those saved in {stored_config}. Resume with "
                "the same settings (or `--config` that file), or train into a new --out folder."
            )
        if read_json(self.path / "labels.json")["classes"] != classes:
            raise CheckpointError(
                "--resume: the labels in this data differ from the interrupted run's labels"
            )
