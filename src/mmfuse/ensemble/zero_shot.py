"""A CLIP-style folder's zero-shot classifier as the starting point of a linear head.

The folder's text tower embeds one prompt per class ("a photo of a {class}."); the folder's
zero-shot classifier is then linear on the L2-normalised image embedding x̂:
``logits = s · x̂ · T̂ᵀ`` (``s``: the folder's logit scale, ``T̂``: the normalised prompt
embeddings). This member starts from those weights W0 and fits, on the labelled rows,

    minimise  C · Σ_i w_i · CE(x̂_i Wᵀ + b, y_i)  +  ½ ‖W − W0‖²

a logistic regression pulled towards the prompts instead of towards zero: with a few rows per
class it stays near the zero-shot classifier, with many it follows the data (the "zero-shot
initialised linear probe"). Its state is plain arrays like every linear member's, and its
graph is the linear one with the rows normalised (``linear_graph.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax

from mmfuse.config import EncoderConfig
from mmfuse.encoders import create_encoder
from mmfuse.ensemble.inputs import MemberInputs, View, encoder_for
from mmfuse.ensemble.members import C_BY_VIEW, LinearMember
from mmfuse.errors import ConfigError
from mmfuse.features.items import pooled_features

ZERO_SHOT = "zero-shot"
PROMPT = "a photo of a {}."  # the CLIP paper's default prompt
MAX_ITER = 300


class ZeroShotMember(LinearMember):
    """A linear member on the normalised image embeddings of a CLIP-style folder, fitted
    from (and towards) the folder's zero-shot classifier for the class names."""

    @property
    def name(self) -> str:
        return f"zero-shot prompts + LR on {self.view.encoder.name}"  # type: ignore[union-attr]

    def fit(self, inputs: MemberInputs, y: np.ndarray) -> ZeroShotMember:
        """``y``: class ids (N,) into ``classes``."""
        if self.classes is None or y.ndim != 1:
            raise ConfigError("zero-shot prompts name classes: they start a classifier only")
        x = self._view(inputs)
        prior = self.arrays.get("prior")
        if prior is None:
            prior = prompt_weights(self.view.encoder, self.classes, inputs)  # type: ignore[arg-type]
            self.arrays["prior"] = prior = np.tile(prior, (1, x.shape[1] // prior.shape[1]))
        coef, intercept = fit_towards(x, y, prior, inputs.weights())
        self.arrays |= {"coef": coef, "intercept": intercept}
        return self

    def zero_shot(self, inputs: MemberInputs) -> np.ndarray:
        """(N, C) the folder's own zero-shot probabilities (the prior alone)."""
        return np.exp(log_softmax(self._view(inputs) @ self.arrays["prior"].T, axis=1))

    def _view(self, inputs: MemberInputs) -> np.ndarray:
        return normalised_columns(inputs.dense(self.view), len(inputs.config.data.image_cols))


def normalised_columns(x: np.ndarray, columns: int) -> np.ndarray:
    """(N, columns x D) features -> each column's D features L2-normalised, averaged over the
    image columns (a missing image: zeros, so it adds nothing)."""
    blocks = x.reshape(len(x), columns, -1)
    norms = np.linalg.norm(blocks, axis=2, keepdims=True)
    return (blocks / np.maximum(norms, 1e-12)).reshape(len(x), -1) / columns


def prompt_weights(encoder: EncoderConfig, classes: list[str], inputs: MemberInputs
                   ) -> np.ndarray:
    """(C, D) the zero-shot classifier's weights: the logit scale times each class prompt's
    normalised embedding by the folder's text tower (computed once for every fold: the
    inputs' memo is shared by their subsets)."""
    key = f"prompts: {encoder.name}: {classes}"
    if key not in inputs.memo:
        inputs.memo[key] = prompts_of(encoder, classes, inputs)
    return inputs.memo[key]  # type: ignore[return-value]


def prompts_of(encoder: EncoderConfig, classes: list[str], inputs: MemberInputs
               ) -> np.ndarray:
    image = encoder_for(View(ZERO_SHOT, encoder), inputs.encoders)
    log_scale = getattr(image, "logit_scale", None)
    if log_scale is None:
        raise ConfigError(f"{encoder.name} is not a CLIP-style folder (an image and a text "
                          "tower trained together, with a logit scale)")
    text = create_encoder("text", EncoderConfig(name=encoder.name))
    with torch.no_grad():
        prompts = pooled_features(text, [PROMPT.format(c) for c in classes]).numpy()
    prompts /= np.maximum(np.linalg.norm(prompts, axis=1, keepdims=True), 1e-12)
    return (np.exp(log_scale) * prompts).astype(np.float32)


def fit_towards(x: np.ndarray, y: np.ndarray, prior: np.ndarray,
                weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(C, F) weights and (C,) biases minimising the weighted cross-entropy of ``x`` (N, F)
    for class ids ``y`` (N,), times the view's strength (``C_BY_VIEW``), plus
    ½‖W − prior‖² with ``prior`` (C, F) (L-BFGS, float64)."""
    x, strength = x.astype(np.float64), C_BY_VIEW[ZERO_SHOT]
    n_classes, n_features = prior.shape
    onehot = np.eye(n_classes)[y]
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef = theta[:-n_classes].reshape(n_classes, n_features)
        logp = log_softmax(x @ coef.T + theta[-n_classes:], axis=1)  # (N, C)
        gap = coef - prior
        loss = -strength * float((w * (onehot * logp).sum(1)).sum()) + 0.5 * float((gap ** 2).sum())
        residual = strength * w[:, None] * (np.exp(logp) - onehot)  # (N, C)
        return loss, np.concatenate([(residual.T @ x + gap).ravel(), residual.sum(0)])

    start = np.concatenate([prior.ravel().astype(np.float64), np.zeros(n_classes)])
    theta = minimize(objective, start, jac=True, method="L-BFGS-B",
                     options={"maxiter": MAX_ITER}).x
    return (theta[:-n_classes].reshape(n_classes, n_features).astype(np.float32),
            theta[-n_classes:].astype(np.float32))
