"""Linear members: one logistic regression on one view of the rows, fitted to convergence.

A view is TF-IDF of the texts (character 1-3 grams, or words 1-2: any language or script),
the frozen features of a pretrained encoder (from the feature cache, standardised) or the
numeric and categorical columns (scaled numbers, one-hot levels: ``data/tabular.py``). Cheap,
strong on small tables, and a member's state is plain arrays: saved as safetensors + JSON.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from threadpoolctl import threadpool_limits

from mmfuse.config import Config, EncoderConfig
from mmfuse.data.tabular import TabularEncoding
from mmfuse.encoders.base import Encoder
from mmfuse.ensemble.inputs import MemberInputs, View
from mmfuse.ensemble.member_graph import MemberGraph

TFIDF = {"tfidf-char": ("char_wb", (1, 3)), "tfidf-word": ("word", (1, 2))}
WORDS = {"word": {"token_pattern": r"(?u)\b\w+\b"}, "char_wb": {}}  # one-letter words count
# Measured on MATH-V's 2,736 training rows (5-fold out-of-fold macro-F1, never its test rows):
# sparse L2-normalised TF-IDF wants weak regularisation, dense standardised features strong.
C_BY_VIEW = {"tfidf-char": 10.0, "tfidf-word": 10.0, "image": 0.01, "text": 0.1,
             "tabular": 1.0,  # tabular: a handful of scaled numbers and one-hot levels
             "zero-shot": 1.0}  # weighs the data against the pull towards the prompts
                                # (zero_shot.py): scikit-learn's default C
RIDGE_ALPHAS = np.logspace(-2, 4, 13)  # dense views: chosen by leave-one-out per fit
MAX_ITER = 300
TOL = 1e-3


@dataclass
class LinearMember:
    """A view and the logistic regression on it; ``fit`` then ``predict_proba``."""

    view: View
    classes: list[str] | None  # None: regression, one value per row (a ridge regression)
    vocabulary: list[str] = field(default_factory=list)  # TF-IDF views
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # idf/mean/scale, coef, intercept
    tabular: TabularEncoding | None = None  # the tabular view's scaling and category levels
    multilabel: bool = False  # each class its own yes or no: a binary LR per class

    @property
    def name(self) -> str:
        kind = "ridge" if self.classes is None else "per-label LR" if self.multilabel else "LR"
        return f"{kind} on {self.view.name}"

    @property
    def modalities(self) -> set[str]:
        return {self.view.modality}

    def entry(self) -> dict[str, Any]:
        """What ensemble.json keeps of the member (its arrays go to safetensors)."""
        return {"view": self.view.kind, "vocabulary": self.vocabulary,
                "encoder": vars(self.view.encoder) if self.view.encoder is not None else None,
                "tabular": self.tabular.entry() if self.tabular is not None else None,
                "multilabel": self.multilabel}

    @classmethod
    def from_entry(cls, entry: dict[str, Any], classes: list[str] | None,
                   arrays: dict[str, np.ndarray]) -> LinearMember:
        """The member ``entry`` describes, with its ``arrays``; ValueError if they disagree."""
        if entry["view"] not in C_BY_VIEW:
            raise ValueError(f"unknown view {entry['view']!r}")
        # an entry saved before texts were read in windows: its member read the first one
        encoder = EncoderConfig(**{"max_windows": 1, **entry["encoder"]}) if entry["encoder"] \
            else None
        tabular = entry.get("tabular")  # absent from folders saved before tabular columns
        member = cls(View(entry["view"], encoder), classes, entry["vocabulary"], arrays,
                     TabularEncoding.from_saved(tabular, arrays) if tabular else None,
                     bool(entry.get("multilabel", False)))
        n = 1 if classes is None else len(classes)
        if arrays["coef"].shape[0] != n or arrays["intercept"].shape != (n,):
            raise ValueError(f"{member.name}: its coefficients are not for {n} outputs")
        return member

    def save(self, directory: Path) -> None:
        """Nothing beside its arrays, which the ensemble's safetensors file holds."""

    def graph(self, config: Config, encoders: dict[str, Encoder]) -> MemberGraph:
        """The member as a module, for one exported graph (``linear_graph.py``)."""
        from mmfuse.ensemble.linear_graph import LinearGraph

        return LinearGraph(self, config, encoders)

    def parameters(self) -> int:
        """Fitted coefficients."""
        return int(self.arrays["coef"].size + self.arrays["intercept"].size)

    def fit(self, inputs: MemberInputs, y: np.ndarray) -> LinearMember:
        """``y``: class ids (N,) into ``classes``, label indicators (N, C) (multilabel), or
        values (N,) (regression)."""
        x, weights = self._fit_view(inputs), inputs.weights()
        self.multilabel = y.ndim == 2
        if self.classes is None:
            coef, intercept = fit_ridge(x, y, weights)
        elif self.multilabel:
            coef, intercept = label_weights(x, y, C_BY_VIEW[self.view.kind], weights)
        else:
            model = fit_logistic_regression(x, y, C_BY_VIEW[self.view.kind], weights)
            coef, intercept = class_weights(model, len(self.classes))
        self.arrays |= {"coef": coef, "intercept": intercept}
        return self

    def predict_proba(self, inputs: MemberInputs) -> np.ndarray:
        """(N, C) probabilities (multilabel: each label's own); regression: (N, 1) values."""
        outputs = np.asarray(self._view(inputs) @ self.arrays["coef"].T) + self.arrays["intercept"]
        if self.classes is None:
            return outputs
        return expit(outputs) if self.multilabel else softmax(outputs)

    # ------------------------------------------------------------------ views
    def _fit_view(self, inputs: MemberInputs) -> Any:
        if self.view.kind in TFIDF:
            analyzer, ngrams = TFIDF[self.view.kind]
            vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True,
                                         min_df=2, dtype=np.float32, **WORDS[analyzer])
            x = sp.csr_matrix(vectorizer.fit_transform(inputs.texts()))  # columns: sorted n-grams
            self.vocabulary = vectorizer.get_feature_names_out().tolist()
            self.arrays["idf"] = vectorizer.idf_.astype(np.float32)
            return x
        if self.view.kind == "tabular":
            self.tabular = inputs.tabular_encoding()
            self.arrays |= self.tabular.arrays()
            return self.tabular.dense(inputs.table())
        x = inputs.dense(self.view)
        self.arrays["mean"], self.arrays["scale"] = x.mean(axis=0), spread(x)
        return (x - self.arrays["mean"]) / self.arrays["scale"]

    def vectorizer(self) -> TfidfVectorizer:
        """A TF-IDF view's fitted vectorizer, rebuilt from the vocabulary and idf."""
        analyzer, ngrams = TFIDF[self.view.kind]
        vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True,
                                     dtype=np.float32, **WORDS[analyzer],
                                     vocabulary={g: i for i, g in enumerate(self.vocabulary)})
        vectorizer.idf_ = self.arrays["idf"]
        return vectorizer

    def _view(self, inputs: MemberInputs) -> Any:
        if self.view.kind in TFIDF:
            return sp.csr_matrix(self.vectorizer().transform(inputs.texts()))
        if self.tabular is not None:
            return self.tabular.dense(inputs.table())
        return (inputs.dense(self.view) - self.arrays["mean"]) / self.arrays["scale"]


def fit_logistic_regression(x: Any, y: np.ndarray, c: float,
                            sample_weight: np.ndarray | None = None) -> LogisticRegression:
    """Multinomial L2 LR on (N, F) ``x`` (dense or sparse) for class ids ``y`` (N,), each row
    counted ``sample_weight`` times.

    NumPy's BLAS runs on one thread here: beside torch's threads it ran 2.6x slower on two
    (image features of MATH-V's 2,188 rows: 1.28 -> 0.49 s a fit; MiniLM 0.34 -> 0.14 s)."""
    model = LogisticRegression(C=c, max_iter=MAX_ITER, tol=TOL)
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol is loose on purpose
        return model.fit(x, y, sample_weight=sample_weight)


def label_weights(x: Any, y: np.ndarray, c: float, sample_weight: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(C, F) weights and (C,) biases of one binary LR per label of indicators ``y`` (N, C):
    sigmoid(x W^T + b) are the labels' probabilities. A label that is always (or never) on
    in these rows gets a bias that says so."""
    coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    intercept = np.zeros(y.shape[1], dtype=np.float32)
    for label in range(y.shape[1]):
        column = y[:, label].astype(int)
        if column.min() == column.max():
            intercept[label] = 30.0 if column[0] else -30.0
            continue
        model = fit_logistic_regression(x, column, c, sample_weight)
        coef[label], intercept[label] = model.coef_[0], model.intercept_[0]
    return coef, intercept


def fit_ridge(x: Any, y: np.ndarray, sample_weight: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(1, F) weights and (1,) bias of a ridge regression of values ``y`` (N,) on ``x``
    (each row counted ``sample_weight`` times).

    The targets are standardised for the fit, so one penalty suits any unit. Dense views
    choose it by efficient leave-one-out (RidgeCV, an SVD of the N x F features); sparse
    TF-IDF, where that would cost an N x N eigendecomposition, takes scikit-learn's default."""
    mean, std = float(np.mean(y)), float(np.std(y)) or 1.0
    z = (y - mean) / std
    with threadpool_limits(1, user_api="blas"):
        model = (Ridge(alpha=1.0) if sp.issparse(x) else
                 RidgeCV(alphas=RIDGE_ALPHAS)).fit(x, z, sample_weight=sample_weight)
    coef = (np.asarray(model.coef_, dtype=np.float64) * std).reshape(1, -1)
    return coef.astype(np.float32), np.asarray([model.intercept_ * std + mean], np.float32)


def spread(x: np.ndarray) -> np.ndarray:
    """(D,) per-column standard deviation for standardising; 1 where a column is constant."""
    std = x.std(axis=0)
    return np.where(std > 1e-6, std, 1.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> probabilities."""
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def class_weights(model: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, F) weights and (C,) biases of a fitted multinomial LR over all ``n_classes``, so
    that softmax(x W^T + b) are its probabilities: a class absent from the fitting rows gets
    a bias that rules it out; two classes become two rows (scikit-learn keeps one)."""
    coef = np.zeros((n_classes, model.coef_.shape[1]), dtype=np.float32)
    intercept = np.full(n_classes, -1e4, dtype=np.float32)
    if len(model.classes_) == 2:
        coef[model.classes_[1]], intercept[model.classes_[1]] = model.coef_[0], model.intercept_[0]
        coef[model.classes_[0]], intercept[model.classes_[0]] = 0.0, 0.0
    else:
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
    return coef, intercept
