"""Tree members: gradient-boosted trees on the numeric and categorical columns.

scikit-learn's ``HistGradientBoostingClassifier`` (``...Regressor`` for regression) with
native categorical splits: what wins on the tabular part of a table (interactions such as
price x category that a linear model cannot draw), fitted to convergence with early stopping
in seconds. The trees are saved with
skops, which rebuilds them from JSON and plain arrays, never with pickle; loading trusts
exactly the types a fitted booster holds, so a tampered file cannot run code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from mmfuse.config import Config
from mmfuse.data.tabular import TabularEncoding
from mmfuse.encoders.base import Encoder
from mmfuse.ensemble.inputs import MemberInputs, View
from mmfuse.ensemble.member_graph import MemberGraph
from mmfuse.ensemble.tree_graph import TreeGraph
from mmfuse.errors import CheckpointError

TREES_FILE = "trees.skops"
# What a fitted booster holds beyond skops' default trusted types (scikit-learn estimators,
# NumPy arrays): checked against the file before anything in it is built.
TRUSTED = ["functools.partial", "sklearn.utils.validation.check_array",
           "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
MAX_ITER = 500  # early stopping on an inner 10 % ends far sooner on small tables
VIEW = View("tabular-trees")
Booster = HistGradientBoostingClassifier | HistGradientBoostingRegressor


@dataclass
class TreeMember:
    """Boosted trees over ``classes`` (None: regression); ``fit`` then ``predict_proba``, as
    a linear member."""

    classes: list[str] | None
    seed: int = 0
    tabular: TabularEncoding | None = None
    model: Booster | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # the tabular scaling
    view = VIEW

    @property
    def name(self) -> str:
        return "boosted trees on tabular"

    @property
    def modalities(self) -> set[str]:
        return {"tabular"}

    def fit(self, inputs: MemberInputs, y: np.ndarray) -> TreeMember:
        """``y``: class ids (N,) into ``classes``, or values (N,) for regression."""
        self.tabular = inputs.tabular_encoding()
        self.arrays = self.tabular.arrays()
        booster = HistGradientBoostingRegressor if self.classes is None else \
            HistGradientBoostingClassifier
        self.model = booster(
            max_iter=MAX_ITER, early_stopping=True, validation_fraction=0.1,
            n_iter_no_change=20, categorical_features=self.tabular.categorical_mask or None,
            random_state=self.seed)
        with threadpool_limits(2, user_api="openmp"):
            self.model.fit(self.tabular.codes(inputs.table()), y,
                           sample_weight=inputs.weights())
        return self

    def predict_proba(self, inputs: MemberInputs) -> np.ndarray:
        """(N, C) probabilities, a class absent from the fitting rows at 0; regression:
        (N, 1) values."""
        assert self.model is not None and self.tabular is not None, "fit or load first"
        codes = self.tabular.codes(inputs.table())
        with threadpool_limits(2, user_api="openmp"):
            if self.classes is None:
                return self.model.predict(codes).reshape(-1, 1)
            known = self.model.predict_proba(codes)  # type: ignore[union-attr]
        out = np.zeros((len(known), len(self.classes)))
        out[:, self.model.classes_.astype(int)] = known
        return out

    def graph(self, config: Config, encoders: dict[str, Encoder]) -> MemberGraph:
        """The trees as a module, for one exported graph (``tree_graph.py``)."""
        return TreeGraph(self)

    def parameters(self) -> int:
        """Nodes of every tree."""
        assert self.model is not None
        return sum(len(p.nodes) for trees in self.model._predictors for p in trees)

    # ------------------------------------------------------------------ saved state
    def entry(self) -> dict[str, Any]:
        assert self.tabular is not None
        return {"trees": TREES_FILE, "tabular": self.tabular.entry()}

    def save(self, directory: Path) -> None:
        import skops.io

        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{TREES_FILE}.tmp"
        skops.io.dump(self.model, temporary)
        temporary.replace(directory / TREES_FILE)  # atomic: a killed save leaves the old file

    @classmethod
    def load(cls, entry: dict[str, Any], directory: Path, classes: list[str] | None,
             arrays: dict[str, np.ndarray]) -> TreeMember:
        import skops.io

        path = directory / TREES_FILE
        try:
            untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED)
            if untrusted:
                raise CheckpointError(f"{path} holds types a boosted-trees member never has "
                                      f"({', '.join(sorted(untrusted))}); it was not written by "
                                      "mmfuse and is not loaded")
            model = skops.io.load(path, trusted=TRUSTED)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise CheckpointError(f"cannot read {path} ({error}); re-save or retrain") from error
        fits = (isinstance(model, HistGradientBoostingRegressor) if classes is None else
                isinstance(model, HistGradientBoostingClassifier)
                and model.classes_.max(initial=0) < len(classes))
        if not fits:
            raise CheckpointError(f"{path} is not a boosted-trees model for this ensemble's "
                                  "task and classes; re-save or retrain")
        return cls(classes, tabular=TabularEncoding.from_saved(entry["tabular"], arrays),
                   model=model, arrays=arrays)
