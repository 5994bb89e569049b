"""Scores shared by every layer: which way a metric improves, the noise of a difference
(bootstrap), calibration error (reliability bins) and temperature scaling. Pure numpy/torch;
imports nothing of mmfuse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Metric:
    """A metric a task reports, by name, and which way is better."""

    name: str
    greater_is_better: bool = True


_RANKS = [f"{d}_{s}_rank" for d in ("t2i", "i2t") for s in ("median", "mean")]
METRICS: dict[str, Metric] = {m.name: m for m in [
    *(Metric(n) for n in ("accuracy", "subset_accuracy", "macro_f1", "micro_f1", "f1",
                          "macro_precision", "macro_recall", "micro_precision", "micro_recall",
                          "auroc", "r2", "mean_recall")),
    *(Metric(f"{d}_r{k}") for d in ("t2i", "i2t") for k in (1, 5, 10)),
    *(Metric(n, greater_is_better=False) for n in ("rmse", "mae", "loss", "ece", *_RANKS)),
]}


def greater_is_better(metric: str) -> bool:
    """KeyError for a name no task reports (configs are checked when read: tasks/)."""
    return METRICS[metric].greater_is_better


def is_better(metric: str, new: float, best: float | None) -> bool:
    if best is None or np.isnan(best):
        return not np.isnan(new)
    return new > best if greater_is_better(metric) else new < best


def bootstrap_spread(statistic: Callable[[np.ndarray], float], rows: np.ndarray,
                     draws: int = 50, seed: int = 0) -> float:
    """The standard deviation of ``statistic(resampled rows)`` over ``draws`` resamples (with
    replacement) of the positions ``rows``: how far a score or a difference of scores moves
    with the luck of which rows were held out."""
    rng = np.random.default_rng(seed)
    return float(np.std([statistic(rng.choice(rows, len(rows))) for _ in range(draws)]))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins, and the bins themselves."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high) if low > 0 else confidence <= high
        count = int(inside.sum())
        accuracy = float(correct[inside].mean()) if count else 0.0
        mean_confidence = float(confidence[inside].mean()) if count else 0.0
        ece += count / max(1, len(confidence)) * abs(accuracy - mean_confidence)
        table.append({"low": float(low), "high": float(high), "count": count,
                      "accuracy": accuracy, "confidence": mean_confidence})
    return {"ece": float(ece), "bins": table}


def top_label_reliability(scores: np.ndarray, truth: np.ndarray, bins: int = 10
                          ) -> dict[str, Any]:
    """``reliability`` of probabilities (N, C) for the class ids ``truth`` (N,): how often the
    most probable class is right against that probability (Guo et al., 2017). A property of
    the probabilities alone, whichever label a decision rule then picks from them."""
    return reliability(scores.max(axis=1), (scores.argmax(axis=1) == truth).astype(float), bins)


PROBABILITY_FLOOR = 1e-7  # a probability of 0 has no log; read as this


def log_of(probabilities: np.ndarray) -> np.ndarray:
    """Log-probabilities, a probability of 0 read as ``PROBABILITY_FLOOR``."""
    return np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0))


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, binary: bool = False) -> float:
    """The temperature T in [0.05, 20] minimising validation NLL of logits / T (Guo et al.,
    2017): a bounded one-dimensional search over log T (Brent's), which cannot diverge where
    the loss is flat (an L-BFGS step there gave NaN)."""
    from scipy.optimize import minimize_scalar

    logits, target = logits.detach().float().clone(), target.clone()

    def nll(log_t: float) -> float:
        scaled = logits / float(np.exp(log_t))
        return float(F.binary_cross_entropy_with_logits(scaled.squeeze(-1), target.float())
                     if binary else F.cross_entropy(scaled, target.long()))

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))
