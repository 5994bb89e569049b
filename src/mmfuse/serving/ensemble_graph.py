"""An ensemble as one ONNX graph: every member, the combination and the label decision.

Inputs are named by what prepares them, once for all members that read the same thing:

- ``{column}.{key}``: an encoder's inputs of a column, as the network export lays them out
  (``pixels``, ``input_ids`` + ``attention_mask``, ``ngram_ids`` + ``ngram_weights``,
  ``numbers`` + ``categories``). Where members prepare a column in different ways (another
  tokenizer, vocabulary or image size), the second is ``{column}.2.{key}`` and so on; the
  export's ``preparation`` says which encoder prepares each.
- ``{view}.ngram_ids`` (B, K) int64: a TF-IDF member's n-grams of the row's texts (joined
  with " | "), each occurrence as its id in the member's vocabulary (``ensemble.json``),
  -1 as padding; unknown n-grams are left out. Counted in the graph by ONNX's
  ``TfIdfVectorizer`` operator, then weighted as scikit-learn's ``TfidfVectorizer``
  (sublinear tf, idf, L2 norm).
- ``{view}.features`` (B, F) float32: a tabular member's scaled numbers, missing flags and
  one-hot levels (``TabularEncoding.dense``); ``tabular-trees.codes`` (B, F): the raw numbers
  (NaN where missing) and category ids the boosted trees read (``TabularEncoding.codes``).

Frozen encoders run once per input in the graph, however many members read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.encoders.base import Encoder, run_encoder
from mmfuse.ensemble.inputs import MemberInputs
from mmfuse.ensemble.model import EnsembleModel
from mmfuse.features.assembly import make_dataset
from mmfuse.scoring import PROBABILITY_FLOOR
from mmfuse.types import EncoderOutput


@dataclass
class Prepared:
    """One named set of inputs: ``column``'s cells through ``encoder``'s preparation."""

    name: str
    column: str
    encoder: Encoder
    signature: str  # ``preparation(encoder)``

    def describe(self) -> str:
        return f"{self.column} through {type(self.encoder).__name__} ({self.encoder.preprocessing})"


def preparation(encoder: Encoder) -> str:
    """What decides an encoder's inputs: equal strings, equal inputs for every cell."""
    vocabulary = encoder.vocabulary.tokens if encoder.vocabulary is not None else None
    return json.dumps([type(encoder).__name__, encoder.fingerprint if encoder.pretrained else "",
                       encoder.preprocessing, encoder.fitted_state(), vocabulary],
                      sort_keys=True, default=str)


class PassReader:
    """A ``Reader`` over one forward pass's named tensors; frozen encoders' features are
    computed once per input, however many members read them."""

    def __init__(self, graph: EnsembleGraph, named: dict[str, torch.Tensor]) -> None:
        self.graph, self.named = graph, named
        self.encoded_: dict[tuple[str, str], EncoderOutput] = {}

    def own(self, name: str) -> torch.Tensor:
        return self.named[name]

    def prepared(self, column: str, encoder: Encoder) -> dict[str, torch.Tensor]:
        p = self.graph.prepared_for(column, encoder)
        return {k: self.named[f"{p.name}.{k}"] for k in self.graph.keys[p.name]}

    def encoded(self, column: str, encoder: Encoder) -> EncoderOutput:
        p = self.graph.prepared_for(column, encoder)
        key = (p.name, encoder.cache_key if encoder.frozen else str(id(encoder)))
        if key not in self.encoded_:
            self.encoded_[key] = run_encoder(encoder, self.prepared(column, encoder))
        return self.encoded_[key]


class EnsembleGraph(nn.Module):
    """The ensemble's ``predict`` as a module of positional tensors (``input_names``
    order): calibrated probabilities (values for regression) and the decided prediction.
    ``rows``: real validated rows, which fix each encoder's input keys."""

    def __init__(self, ensemble: EnsembleModel, rows: pd.DataFrame) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.graphs = nn.ModuleList([m.graph(ensemble.config, ensemble.encoders)
                                     for m in ensemble.members])
        self.prepared: list[Prepared] = []
        self.found: dict[tuple[str, int], Prepared] = {}  # (column, id(encoder)) -> inputs
        for graph in self.graphs:
            for column, encoder in graph.reads():
                self.prepared_for(column, encoder)
        self.keys = {p.name: [k for k in self._batch(p, rows, first=1) if k != "present"]
                     for p in self.prepared}
        own = set().union(*(g.own_inputs(self._member_inputs(rows.head(1))) for g in self.graphs))
        self.input_names = sorted(own | {f"{p.name}.{k}" for p in self.prepared
                                         for k in self.keys[p.name]})
        stacker = ensemble.stacker
        self.stacking = stacker is not None
        for name, value in (stacker.state() if stacker is not None else {}).items():
            self.register_buffer(f"stack_{name}", torch.as_tensor(np.asarray(value),
                                                                  dtype=torch.float32))
        self.register_buffer("weights", torch.as_tensor(ensemble.weights, dtype=torch.float32))
        shift = ensemble.decision_shift
        self.shifted = shift is not None and bool(shift.any())
        self.register_buffer("shift", torch.as_tensor(
            shift if self.shifted else np.zeros(1), dtype=torch.float32))

    # ------------------------------------------------------------------ inputs
    def prepared_for(self, column: str, encoder: Encoder) -> Prepared:
        """The named inputs of ``column`` through ``encoder``'s preparation: one set per
        distinct preparation of a column, shared by every member that reads it."""
        key = (column, id(encoder))
        if key not in self.found:  # read again on every forward pass: looked up once
            signature = preparation(encoder)
            same_column = [p for p in self.prepared if p.column == column]
            match = next((p for p in same_column if p.signature == signature), None)
            if match is None:
                name = column if not same_column else f"{column}.{len(same_column) + 1}"
                match = Prepared(name, column, encoder, signature)
                self.prepared.append(match)
            self.found[key] = match
        return self.found[key]

    def _batch(self, prepared: Prepared, rows: pd.DataFrame, first: int | None = None
               ) -> dict[str, torch.Tensor]:
        dataset = make_dataset(rows, {prepared.column: prepared.encoder},
                               self.ensemble.feature_cache(), False, use_cache=False)
        return dataset.__getitems__(list(range(first or len(rows))))[0][prepared.column]

    def _member_inputs(self, rows: pd.DataFrame) -> MemberInputs:
        return MemberInputs.from_rows(rows, self.ensemble.config, self.ensemble.feature_cache(),
                                      self.ensemble.encoders)

    def inputs(self, rows: pd.DataFrame, first: int | None = None) -> list[torch.Tensor]:
        """The graph's inputs for validated ``rows`` with every cell present, in
        ``input_names`` order: what a user of the ONNX file feeds it. ``first``: of the first
        rows only, laid out as for all (a column with several photos in any cell keeps its
        photo axis), texts padded to their own length."""
        named: dict[str, torch.Tensor] = {}
        for p in self.prepared:
            batch = self._batch(p, rows, first)
            named |= {f"{p.name}.{k}": batch[k] for k in self.keys[p.name]}
        member_inputs = self._member_inputs(rows.head(first) if first else rows)
        for graph in self.graphs:
            named |= graph.own_inputs(member_inputs)
        return [named[name] for name in self.input_names]

    def encoders(self) -> list[Encoder]:
        """Every encoder the graph runs (a fold model's or a linear member's)."""
        return [p.encoder for p in self.prepared]

    def preparation(self) -> dict[str, str]:
        """Each encoder input's name -> what prepares it."""
        return {p.name: p.describe() for p in self.prepared}

    # ------------------------------------------------------------------ graph
    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reader = PassReader(self, dict(zip(self.input_names, tensors, strict=True)))
        return self._combined([graph(reader) for graph in self.graphs])

    def _combined(self, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Members' outputs -> calibrated probabilities and the decision, as
        ``EnsembleModel.probabilities`` and ``decide`` compute them."""
        task, classes = self.ensemble.task, self.ensemble.classes
        if self.stacking and classes is None:  # regression: non-negative weights and a bias
            combined = torch.cat(outputs, 1) @ self.stack_coef.unsqueeze(1) + self.stack_intercept
        elif self.stacking:
            z = torch.log(torch.cat(outputs, 1).clamp(PROBABILITY_FLOOR, 1.0))
            logits = ((z - self.stack_mean) / self.stack_scale) @ self.stack_coef.T \
                + self.stack_intercept
            combined = torch.softmax(logits, dim=1)
        else:
            combined = sum(w * p for w, p in zip(self.weights, outputs, strict=True))
        if classes is None:
            return combined, combined[:, 0]
        if task.multilabel:
            return combined, (combined >= 0.5).long()
        logs = torch.log(combined.clamp(PROBABILITY_FLOOR, 1.0))
        calibrated = torch.softmax(logs / self.ensemble.temperature, dim=1)
        if not self.shifted:
            return calibrated, calibrated.argmax(1)
        return calibrated, (torch.log(calibrated.clamp(PROBABILITY_FLOOR, 1.0))
                            + self.shift).argmax(1)
