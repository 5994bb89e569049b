"""A linear member as a graph: TF-IDF from n-gram ids, standardised encoder features,
normalised image embeddings (a head started from zero-shot prompts) or the tabular columns as
prepared, then the logistic (or ridge) regression."""

from __future__ import annotations

import numpy as np
import torch

from mmfuse.config import Config
from mmfuse.ensemble.inputs import MemberInputs, encoder_for
from mmfuse.ensemble.member_graph import MemberGraph, Reader
from mmfuse.ensemble.members import TFIDF, LinearMember
from mmfuse.ensemble.zero_shot import ZERO_SHOT


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


class LinearGraph(MemberGraph):
    """A linear member: its view's features -> probabilities (values for regression).

    Reads ``{view}.ngram_ids`` (a TF-IDF view: ``ngram_ids``), ``tabular.features`` (the
    tabular view: ``TabularEncoding.dense``) or the view's encoder's features of each column
    of its kind, side by side."""

    def __init__(self, member: LinearMember, config: Config,
                 encoders: dict[str, object]) -> None:
        super().__init__()
        self.member = member
        view = member.view
        self.kind, self.multilabel = view.kind, member.multilabel
        self.regression = member.classes is None
        for name in ("idf", "mean", "scale", "coef", "intercept"):
            if name in member.arrays:
                self.register_buffer(name, torch.from_numpy(
                    np.asarray(member.arrays[name], dtype=np.float32)))
        self.vocabulary_size = len(member.vocabulary)  # a plain int: the exporter traces shapes
        self.name = {"tabular": "tabular.features"}.get(view.kind, f"{view.kind}.ngram_ids")
        self.columns: list[tuple[str, object]] = []
        if view.encoder is not None:  # an encoder's features, of each column of its kind
            encoder = encoder_for(view, encoders)  # type: ignore[arg-type]
            columns = config.data.image_cols if view.encoder_kind == "image" \
                else config.data.text_cols
            self.columns = [(column, encoder) for column in columns]

    def reads(self) -> list:
        return self.columns

    def own_inputs(self, inputs: MemberInputs) -> dict[str, torch.Tensor]:
        if self.kind in TFIDF:
            return {self.name: ngram_ids(self.member, inputs.texts())}
        if self.kind == "tabular":
            assert self.member.tabular is not None
            return {self.name: torch.from_numpy(self.member.tabular.dense(inputs.table()))}
        return {}

    def forward(self, reader: Reader) -> torch.Tensor:  # type: ignore[override]
        if self.kind in TFIDF:  # n-gram ids -> scikit-learn's sublinear, L2-normalised TF-IDF
            counts = NgramCounts.apply(reader.own(self.name), self.vocabulary_size)
            tf = torch.where(counts > 0, 1 + torch.log(counts.clamp(min=1)), counts)
            weighted = tf * self.idf
            x = weighted / weighted.norm(dim=1, keepdim=True).clamp(min=1e-12)
        elif self.kind == ZERO_SHOT:  # each column's embedding normalised, averaged
            x = torch.cat([normalised(reader.encoded(column, encoder).pooled.float())  # type: ignore[arg-type]
                           for column, encoder in self.columns], 1) / len(self.columns)
        elif self.columns:  # an encoder's pooled features, standardised
            features = torch.cat([reader.encoded(column, encoder).pooled.float()  # type: ignore[arg-type]
                                  for column, encoder in self.columns], 1)
            x = (features - self.mean) / self.scale
        else:  # the tabular view, dense as prepared
            x = reader.own(self.name)
        outputs = x @ self.coef.T + self.intercept
        if self.regression:
            return outputs
        return torch.sigmoid(outputs) if self.multilabel else torch.softmax(outputs, dim=1)


def normalised(features: torch.Tensor) -> torch.Tensor:
    """(B, D) rows L2-normalised (a missing image's zeros stay zeros)."""
    return features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)


def ngram_ids(member: LinearMember, texts: list[str]) -> torch.Tensor:
    """(N, K) int64: each text's n-grams in the member's vocabulary, -1 padding (K >= 1)."""
    analyse = member.vectorizer().build_analyzer()
    index = {gram: i for i, gram in enumerate(member.vocabulary)}
    rows = [[index[g] for g in analyse(text) if g in index] for text in texts]
    width = max([len(r) for r in rows] + [1])
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)
