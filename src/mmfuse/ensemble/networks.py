"""Network members: a candidate network bagged over its folds.

Auto mode judges a network on k folds, fitting one model without each fold. Those k models are
kept and their probabilities averaged (bagging) instead of refitting once: nothing is trained
twice, each member's out-of-fold probabilities are exactly the evidence it was weighed by, and
the average of k models is steadier than any one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmfuse.config import Config
from mmfuse.encoders.base import Encoder
from mmfuse.ensemble.inputs import MemberInputs
from mmfuse.ensemble.member_graph import MemberGraph, Reader
from mmfuse.errors import CheckpointError
from mmfuse.fitted_model import FittedModel


@dataclass
class NetworkMember:
    """``name`` (the candidate's) and its fold models, fitted over the ensemble's classes."""

    name: str
    folds: list[FittedModel]

    @property
    def modalities(self) -> set[str]:
        """"image" and/or "text": what the member reads."""
        return set(self.folds[0].modality_kinds.values())

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Nothing in the ensemble's safetensors file: the fold models are folders."""
        return {}

    def predict_proba(self, inputs: MemberInputs) -> np.ndarray:
        """(N, C) the fold models' probabilities, averaged."""
        if inputs.rows is not None:
            outputs = [fold.predict(inputs.rows)[0] for fold in self.folds]
        else:
            outputs = [fold.predict_items(inputs.items)[0] for fold in self.folds]
        return np.mean(outputs, axis=0)

    def entry(self) -> dict[str, Any]:
        """What ensemble.json keeps of the member: a fold count, never a path (a tampered
        file cannot point outside the folder)."""
        return {"network": self.name, "folds": len(self.folds)}

    def save(self, directory: Path) -> None:
        for k, fold in enumerate(self.folds):
            fold.save(directory / f"fold{k}")

    @classmethod
    def load(cls, name: str, directory: Path, folds: int, classes: list[str],
             shared: dict[str, Encoder]) -> NetworkMember:
        """The member saved in ``directory`` (``folds`` model folders), its frozen encoders
        shared through ``shared``."""
        models = [share_frozen_encoders(FittedModel.load(directory / f"fold{k}"), shared)
                  for k in range(folds)]
        for k, model in enumerate(models):
            if model.classes != classes:
                raise CheckpointError(f"{directory / f'fold{k}'} predicts other classes than the "
                                      "ensemble around it; re-save or retrain")
        return cls(name, models)

    def graph(self, config: Config, encoders: dict[str, Encoder]) -> MemberGraph:
        """The fold models as one module, for one exported graph."""
        return NetworkGraph(self)

    def parameters(self) -> int:
        """Trained parameters of every fold (frozen encoders, shared, not counted)."""
        return sum(p.numel() for fold in self.folds for p in fold.model.parameters()
                   if p.requires_grad)


class NetworkGraph(MemberGraph):
    """The fold models' probabilities, averaged; each fold model reads a frozen encoder's
    features (computed once for every member that reads them) or a trained encoder's
    prepared inputs."""

    def __init__(self, member: NetworkMember) -> None:
        super().__init__()
        self.folds = nn.ModuleList([fold.model for fold in member.folds])

    def reads(self) -> list[tuple[str, Encoder]]:
        return [(m, model.encoder_for(m)) for model in self.folds for m in model.modalities]

    def forward(self, reader: Reader) -> torch.Tensor:  # type: ignore[override]
        outputs = []
        for model in self.folds:
            batch = {}
            for m in model.modalities:
                encoder = model.encoder_for(m)
                inputs = (reader.encoded(m, encoder)._asdict() if encoder.frozen
                          else reader.prepared(m, encoder))
                first = next(v for v in inputs.values() if v is not None)
                batch[m] = {**inputs, "present": torch.ones(first.shape[0], dtype=torch.bool,
                                                            device=first.device)}
            outputs.append(model.head.probabilities(model(batch).logits))
        return torch.stack(outputs).mean(0)


def share_frozen_encoders(fitted: FittedModel, shared: dict[str, Encoder]) -> FittedModel:
    """``fitted`` reading the frozen pretrained encoders of ``shared`` (by cache key: same
    weights, same preprocessing) instead of a copy of its own. They are never trained, so k
    folds of several candidates can hold one MiniLM (91 MB) instead of one each."""
    for kind, encoder in list(fitted.model.encoders.items()):
        if encoder.frozen and encoder.pretrained:
            fitted.model.encoders[kind] = shared.setdefault(encoder.cache_key, encoder)
    return fitted
