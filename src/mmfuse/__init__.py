"""mmfuse: learn from images and text together.

Public API: ``Predictor``, ``Config`` (and its parts), ``build_model``, ``load``,
``list_components``.
"""

from __future__ import annotations

from pathlib import Path

from mmfuse.config import Config, DataConfig, EncoderConfig, ModelConfig, TrainConfig
from mmfuse.estimator import Estimator
from mmfuse.models.build import build_model
from mmfuse.predictor import VERSION as __version__
from mmfuse.predictor import Predictor


def estimator_for(config: Config) -> type[Estimator]:
    """The estimator of a task: a Predictor, or a RetrievalPredictor for tasks that rank."""
    from mmfuse.retrieval.predictor import RetrievalPredictor
    from mmfuse.tasks import get_task

    return Predictor if get_task(config.data.task).predicts else RetrievalPredictor


def load(directory: str | Path) -> Estimator:
    """Load a saved model folder (safetensors + YAML/JSON; no pickle): a Predictor, or a
    RetrievalPredictor for retrieval models."""
    from mmfuse.model_folder import ModelFolder

    return estimator_for(ModelFolder(directory).definition().config).load(directory)


def list_components() -> dict[str, dict[str, str]]:
    """Every registered component, by kind: name -> one-line summary."""
    from mmfuse.data.builtin import DATASETS
    from mmfuse.encoders import IMAGE_ENCODERS, TABULAR_ENCODERS, TEXT_ENCODERS
    from mmfuse.fusion import FUSIONS
    from mmfuse.heads import HEADS

    registries = {
        "image encoders": IMAGE_ENCODERS, "text encoders": TEXT_ENCODERS,
        "tabular encoders": TABULAR_ENCODERS,
        "fusions": FUSIONS, "heads": HEADS, "datasets": DATASETS,
    }
    return {kind: {n: r.summary(n) for n in r.names()} for kind, r in registries.items()}


__all__ = [
    "Config", "DataConfig", "EncoderConfig", "ModelConfig", "Predictor", "TrainConfig",
    "__version__", "build_model", "estimator_for", "list_components", "load",
]
