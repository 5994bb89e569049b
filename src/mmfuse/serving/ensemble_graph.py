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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.encoders.base import Encoder, run_encoder
from mmfuse.ensemble.inputs import MemberInputs
from mmfuse.ensemble.members import TFIDF, LinearMember
from mmfuse.ensemble.model import EnsembleModel, Member
from mmfuse.ensemble.networks import NetworkMember
from mmfuse.ensemble.trees import TreeMember
from mmfuse.features.assembly import make_dataset
from mmfuse.scoring import PROBABILITY_FLOOR
from mmfuse.serving.tree_graph import TreeGraph
from mmfuse.types import EncoderOutput


@dataclass
class Prepared:
    """One named set of inputs: ``column``'s cells through ``encoder``'s preparation."""

    name: str
    column: str
    encoder: Encoder

    def describe(self) -> str:
        return f"{self.column} through {type(self.encoder).__name__} ({self.encoder.preprocessing})"


def preparation(encoder: Encoder) -> str:
    """What decides an encoder's inputs: equal strings, equal inputs for every cell."""
    vocabulary = encoder.vocabulary.tokens if encoder.vocabulary is not None else None
    return json.dumps([type(encoder).__name__, encoder.fingerprint if encoder.pretrained else "",
                       encoder.preprocessing, encoder.fitted_state(), vocabulary],
                      sort_keys=True, default=str)


class NgramCounts(torch.autograd.Function):
    """(B, K) n-gram ids (-1: padding) -> (B, V) counts; exported as ``TfIdfVectorizer``
    in TF mode over the pool of every id, so the graph counts as ONNX defines it."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, size: int) -> torch.Tensor:  # type: ignore[override]
        counts = torch.zeros(ids.shape[0], size, dtype=torch.float32)
        return counts.scatter_add_(1, ids.clamp(min=0), (ids >= 0).float())

    @staticmethod
    def symbolic(g, ids, size: int):  # type: ignore[no-untyped-def]
        every = list(range(size))
        return g.op("TfIdfVectorizer", ids, mode_s="TF", min_gram_length_i=1,
                    max_gram_length_i=1, max_skip_count_i=0, ngram_counts_i=[0],
                    ngram_indexes_i=every, pool_int64s_i=every)


class LinearGraph(nn.Module):
    """A linear member: its view's features -> probabilities (values for regression)."""

    def __init__(self, member: LinearMember) -> None:
        super().__init__()
        self.kind, self.multilabel = member.view.kind, member.multilabel
        self.regression = member.classes is None
        arrays = {k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                  for k, v in member.arrays.items() if k in ("idf", "mean", "scale", "coef",
                                                             "intercept")}
        for name, tensor in arrays.items():
            self.register_buffer(name, tensor)
        self.vocabulary_size = len(member.vocabulary)  # a plain int: the exporter traces shapes

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind in TFIDF:  # n-gram ids -> scikit-learn's sublinear, L2-normalised TF-IDF
            counts = NgramCounts.apply(features, self.vocabulary_size)
            tf = torch.where(counts > 0, 1 + torch.log(counts.clamp(min=1)), counts)
            weighted = tf * self.idf
            x = weighted / weighted.norm(dim=1, keepdim=True).clamp(min=1e-12)
        elif hasattr(self, "mean"):  # an encoder's pooled features, standardised
            x = (features - self.mean) / self.scale
        else:  # the tabular view: dense as prepared
            x = features
        outputs = x @ self.coef.T + self.intercept
        if self.regression:
            return outputs
        return torch.sigmoid(outputs) if self.multilabel else torch.softmax(outputs, dim=1)


@dataclass
class Reads:
    """What one member's graph reads: its own named input (n-gram ids, tabular features,
    tree codes), or an encoder's features of each column, or (a network member) each fold
    model's modalities' inputs."""

    name: str = ""
    encoder: Encoder | None = None
    columns: list[Prepared] = field(default_factory=list)
    folds: list[dict[str, Prepared]] = field(default_factory=list)


class EnsembleGraph(nn.Module):
    """The ensemble's ``predict`` as a module of positional tensors (``input_names``
    order): calibrated probabilities (values for regression) and the decided prediction.
    ``rows``: real validated rows, which fix each encoder's input keys."""

    def __init__(self, ensemble: EnsembleModel, rows: pd.DataFrame) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.prepared: list[Prepared] = []
        self.reads = [self._reads(member) for member in ensemble.members]
        self.graphs = nn.ModuleList([graph_of(member) for member in ensemble.members])
        self.keys = {p.name: [k for k in self._batch(p, rows, first=1) if k != "present"]
                     for p in self.prepared}
        self.input_names = sorted({r.name for r in self.reads if r.name}
                                  | {f"{p.name}.{k}" for p in self.prepared
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
    def _reads(self, member: Member) -> Reads:
        if isinstance(member, NetworkMember):
            return Reads(folds=[{m: self._prepared(m, fold.model.encoder_for(m))
                                 for m in fold.model.modalities} for fold in member.folds])
        if isinstance(member, TreeMember):
            return Reads(name="tabular-trees.codes")
        view = member.view
        if view.kind in TFIDF:
            return Reads(name=f"{view.kind}.ngram_ids")
        if view.kind == "tabular":
            return Reads(name="tabular.features")
        data = self.ensemble.config.data
        encoder = self.ensemble.encoders_by_name()[view.name]
        columns = data.image_cols if view.kind == "image" else data.text_cols
        return Reads(encoder=encoder, columns=[self._prepared(c, encoder) for c in columns])

    def _prepared(self, column: str, encoder: Encoder) -> Prepared:
        """The named inputs of ``column`` through ``encoder``'s preparation: one set per
        distinct preparation of a column, shared by every member that reads it."""
        same_column = [p for p in self.prepared if p.column == column]
        for p in same_column:
            if preparation(p.encoder) == preparation(encoder):
                return p
        name = column if not same_column else f"{column}.{len(same_column) + 1}"
        self.prepared.append(Prepared(name, column, encoder))
        return self.prepared[-1]

    def _batch(self, prepared: Prepared, rows: pd.DataFrame, first: int | None = None
               ) -> dict[str, torch.Tensor]:
        dataset = make_dataset(rows, {prepared.column: prepared.encoder},
                               self.ensemble.feature_cache(), False, use_cache=False)
        return dataset.__getitems__(list(range(first or len(rows))))[0][prepared.column]

    def inputs(self, rows: pd.DataFrame, first: int | None = None) -> list[torch.Tensor]:
        """The graph's inputs for validated ``rows`` with every cell present, in
        ``input_names`` order: what a user of the ONNX file feeds it. ``first``: of the first
        rows only, laid out as for all (a column with several photos in any cell keeps its
        photo axis), texts padded to their own length."""
        named: dict[str, torch.Tensor] = {}
        for p in self.prepared:
            batch = self._batch(p, rows, first)
            named |= {f"{p.name}.{k}": batch[k] for k in self.keys[p.name]}
        rows = rows.head(first) if first else rows
        table = MemberInputs.from_rows(rows, self.ensemble.config, self.ensemble.feature_cache(),
                                       self.ensemble.encoders)
        for member, reads in zip(self.ensemble.members, self.reads, strict=True):
            if reads.name.endswith("ngram_ids"):
                named[reads.name] = ngram_ids(member, table.texts())  # type: ignore[arg-type]
            elif reads.name == "tabular.features":
                named[reads.name] = torch.from_numpy(
                    member.tabular.dense(table.table()))  # type: ignore[union-attr]
            elif reads.name:
                named[reads.name] = torch.from_numpy(np.asarray(
                    member.tabular.codes(table.table()), dtype=np.float64))  # type: ignore[union-attr]
        return [named[name] for name in self.input_names]

    def preparation(self) -> dict[str, str]:
        """Each encoder input's name -> what prepares it."""
        return {p.name: p.describe() for p in self.prepared}

    # ------------------------------------------------------------------ graph
    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        named = dict(zip(self.input_names, tensors, strict=True))
        present = torch.ones(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
        encoded: dict[tuple[str, str], EncoderOutput] = {}

        def inputs_of(p: Prepared) -> dict[str, torch.Tensor]:
            return {k: named[f"{p.name}.{k}"] for k in self.keys[p.name]}

        def encode(p: Prepared, encoder: Encoder) -> EncoderOutput:
            """A frozen encoder runs once per input, however many members read it."""
            key = (p.name, encoder.cache_key if encoder.frozen else str(id(encoder)))
            if key not in encoded:
                encoded[key] = run_encoder(encoder, inputs_of(p))
            return encoded[key]

        outputs = []
        for graph, reads in zip(self.graphs, self.reads, strict=True):
            if reads.folds:  # the fold models' probabilities, averaged
                folds = []
                for model, layout in zip(graph, reads.folds, strict=True):
                    batch = {}
                    for m, p in layout.items():
                        encoder = model.encoder_for(m)
                        batch[m] = ({**encode(p, encoder)._asdict(), "present": present}
                                    if encoder.frozen else {**inputs_of(p), "present": present})
                    folds.append(model.head.probabilities(model(batch).logits))
                outputs.append(torch.stack(folds).mean(0))
            elif reads.encoder is not None:
                outputs.append(graph(torch.cat([encode(p, reads.encoder).pooled.float()
                                                for p in reads.columns], 1)))
            else:
                outputs.append(graph(named[reads.name]))
        return self._combined(outputs)

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


def graph_of(member: Member) -> nn.Module:
    """The member's computation as a module."""
    if isinstance(member, NetworkMember):
        return nn.ModuleList([fold.model for fold in member.folds])
    if isinstance(member, TreeMember):
        return TreeGraph(member)
    return LinearGraph(member)


def ngram_ids(member: LinearMember, texts: list[str]) -> torch.Tensor:
    """(N, K) int64: each text's n-grams in the member's vocabulary, -1 padding (K >= 1)."""
    analyse = member.vectorizer().build_analyzer()
    index = {gram: i for i, gram in enumerate(member.vocabulary)}
    rows = [[index[g] for g in analyse(text) if g in index] for text in texts]
    width = max([len(r) for r in rows] + [1])
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)
