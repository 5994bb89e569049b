"""A boosted-trees member as tensors: scikit-learn's ``HistGradientBoosting*`` prediction
on raw data, written as gathers over every tree at once, so that it exports to ONNX.

Each step moves every row in every tree one level down, exactly as scikit-learn's
``_predict_one_from_raw_data`` decides: a missing value (NaN) goes where the split sends
missing values; a category goes left when it is in the split's left set, right when the
training data knew it, and where missing values go otherwise; a number goes left when it is
at most the threshold. Inputs and thresholds are float64, as scikit-learn compares them.
Fitted with categorical columns, scikit-learn first puts them in front, each category
replaced by its rank among the training categories (unknown: missing): so does the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from mmfuse.ensemble.inputs import MemberInputs
from mmfuse.ensemble.member_graph import MemberGraph, Reader

if TYPE_CHECKING:
    from mmfuse.ensemble.trees import TreeMember

CATEGORIES = 256  # scikit-learn's categories are bin ids: uint8


def bitset_table(bitsets: np.ndarray) -> np.ndarray:
    """(S, 8) uint32 bitsets -> (S, 256) bool: is category c in set s."""
    values = np.arange(CATEGORIES)
    return ((bitsets[:, values // 32] >> (values % 32).astype(np.uint32)) & 1).astype(bool)


class TreeGraph(MemberGraph):
    """``tabular-trees.codes`` (B, F) float64 (``TabularEncoding.codes``) -> (B, C)
    probabilities over the ensemble's classes (a class the trees never saw at 0), or (B, 1)
    values (regression)."""

    name = "tabular-trees.codes"

    def __init__(self, member: TreeMember) -> None:
        super().__init__()
        self.tabular = member.tabular
        model = member.model
        assert model is not None, "a fitted member"
        trees = [p for iteration in model._predictors for p in iteration]
        width = max(len(p.nodes) for p in trees)
        self.per_iteration = model.n_trees_per_iteration_
        self.depth = max(int(p.nodes["depth"].max()) for p in trees)
        known, feature_row = model._bin_mapper.make_known_categories_bitsets()
        fields: dict[str, list[np.ndarray]] = {k: [] for k in (
            "feature", "threshold", "left", "right", "leaf", "value", "missing_left",
            "categorical", "left_set")}
        sets, offset = [], 0
        for t, tree in enumerate(trees):
            nodes, pad = tree.nodes, width - len(tree.nodes)
            base = t * width
            leaf = np.pad(nodes["is_leaf"].astype(bool), (0, pad), constant_values=True)
            fields["feature"].append(np.pad(nodes["feature_idx"], (0, pad)))
            fields["threshold"].append(np.pad(nodes["num_threshold"], (0, pad)))
            fields["left"].append(base + np.pad(nodes["left"].astype(np.int64), (0, pad)))
            fields["right"].append(base + np.pad(nodes["right"].astype(np.int64), (0, pad)))
            fields["leaf"].append(leaf)
            fields["value"].append(np.pad(nodes["value"], (0, pad)))
            fields["missing_left"].append(np.pad(nodes["missing_go_to_left"].astype(bool),
                                                 (0, pad)))
            fields["categorical"].append(np.pad(nodes["is_categorical"].astype(bool), (0, pad)))
            # a numeric split's set is never read: row 0, which always exists
            fields["left_set"].append(np.pad(np.where(
                nodes["is_categorical"].astype(bool), offset + nodes["bitset_idx"], 0)
                .astype(np.int64), (0, pad)))
            sets.append(tree.raw_left_cat_bitsets)
            offset += len(tree.raw_left_cat_bitsets)
        for name, parts in fields.items():
            self.register_buffer(name, torch.from_numpy(np.concatenate(parts)))
        left_sets = np.concatenate(sets) if offset else np.zeros((1, 8), np.uint32)
        self.register_buffer("in_left_set", torch.from_numpy(bitset_table(left_sets)))
        known_table = bitset_table(known) if len(known) else np.zeros((1, CATEGORIES), bool)
        self.register_buffer("known", torch.from_numpy(known_table))
        self.register_buffer("known_row", torch.from_numpy(feature_row.astype(np.int64)))
        self._preprocessing(model)
        self.register_buffer("roots", torch.arange(len(trees)) * width)
        self.register_buffer("baseline", torch.from_numpy(
            np.asarray(model._baseline_prediction, np.float64).reshape(1, -1)))
        self.regression = member.classes is None
        n_classes = 1 if member.classes is None else len(member.classes)  # type: ignore[arg-type]
        if not self.regression:  # the trees' classes -> the ensemble's, as one matrix
            to_classes = np.zeros((len(model.classes_), n_classes))
            to_classes[np.arange(len(model.classes_)), model.classes_.astype(int)] = 1.0
            self.register_buffer("to_classes", torch.from_numpy(to_classes))

    def _preprocessing(self, model: object) -> None:
        """Buffers for scikit-learn's column order and category ranks (``_preprocessor``)."""
        preprocessor = getattr(model, "_preprocessor", None)  # None: no categorical column
        self.ranked = 0
        if preprocessor is None:
            return
        categorical = np.asarray(model.is_categorical_, dtype=bool)  # type: ignore[attr-defined]
        order = np.r_[np.flatnonzero(categorical), np.flatnonzero(~categorical)]
        # each column's training categories, sorted (NaN, when seen, last: it stays missing)
        seen = [c[~np.isnan(c)] for c in preprocessor.named_transformers_["encoder"].categories_]
        size = int(max(c.max(initial=0) for c in seen)) + 2  # the last slot: unknown
        ranks = np.full((len(seen), size), np.nan)
        for j, categories in enumerate(seen):
            ranks[j, categories.astype(int)] = np.arange(len(categories))
        self.ranked = len(seen)
        self.register_buffer("order", torch.from_numpy(order.astype(np.int64)))
        self.register_buffer("ranks", torch.from_numpy(ranks))

    def _preprocessed(self, codes: torch.Tensor) -> torch.Tensor:
        if not self.ranked:
            return codes
        codes = codes[:, self.order]
        size = self.ranks.shape[1]
        columns = []
        for j in range(self.ranked):
            value = codes[:, j]
            outside = torch.isnan(value) | (value < 0) | (value >= size - 1)
            columns.append(self.ranks[j][torch.where(outside, size - 1, value.nan_to_num(0.0)
                                                     .long())])
        return torch.cat([torch.stack(columns, 1), codes[:, self.ranked:]], 1)

    def own_inputs(self, inputs: MemberInputs) -> dict[str, torch.Tensor]:
        assert self.tabular is not None
        return {self.name: torch.from_numpy(np.asarray(self.tabular.codes(inputs.table()),
                                                       dtype=np.float64))}

    def forward(self, reader: Reader) -> torch.Tensor:  # type: ignore[override]
        return self.trees(reader.own(self.name))

    def trees(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, F) codes -> probabilities or values, as scikit-learn predicts them."""
        codes = self._preprocessed(codes.double())
        node = self.roots.unsqueeze(0).expand(codes.shape[0], -1)  # (B, T)
        for _ in range(self.depth):
            value = codes.gather(1, self.feature[node])  # (B, T)
            missing = torch.isnan(value)
            category = value.nan_to_num(0.0).clamp(0, CATEGORIES - 1).long()
            in_left = self.in_left_set[self.left_set[node], category]
            known = self.known[self.known_row[self.feature[node]], category]
            # boolean algebra, not Where: onnxruntime has no Where over booleans
            missing_left = self.missing_left[node]
            odd = missing | (value < 0)
            categorical_left = (odd & missing_left) | (~odd & (in_left | (~known & missing_left)))
            numeric_left = (missing & missing_left) | (~missing & (value <= self.threshold[node]))
            categorical = self.categorical[node]
            left = (categorical & categorical_left) | (~categorical & numeric_left)
            step = torch.where(left, self.left[node], self.right[node])
            node = torch.where(self.leaf[node], node, step)
        raw = self.value[node].reshape(codes.shape[0], -1, self.per_iteration).sum(1) \
            + self.baseline  # (B, K)
        if self.regression:
            return raw.float()
        if self.per_iteration == 1:  # binary: one logit for the second class
            known = torch.cat([1 - torch.sigmoid(raw), torch.sigmoid(raw)], 1)
        else:
            known = torch.softmax(raw, dim=1)
        return (known @ self.to_classes).float()
