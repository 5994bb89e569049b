"""Matplotlib figures rendered to PNG bytes (headless: the Agg backend)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


def to_png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def robustness_curves(result: dict[str, Any]) -> bytes:
    """One panel per modality: metric against severity, a line per corruption."""
    kinds = [k for k in ("image", "text") if result["corruptions"].get(k)]
    figure, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5.2 * max(1, len(kinds)), 3.6),
                                squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=False):
        for colour, (name, curve) in zip(PALETTE, result["corruptions"][kind].items(),
                                         strict=False):
            severities = [0, *[int(s) for s in curve]]
            values = [result["clean"], *curve.values()]
            axis.plot(severities, values, marker="o", color=colour, label=name.replace("_", " "))
        axis.set_title(f"{kind} corruptions")
        axis.set_xlabel("severity (0 = clean)")
        axis.set_ylabel(result["metric"])
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return to_png(figure)


def training_curves(history: list[dict[str, Any]], metric: str) -> bytes:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    epochs = [row["epoch"] for row in history]
    left.plot(epochs, [row["train_loss"] for row in history], marker="o", color=PALETTE[0],
              label="train")
    if all("val_loss" in row for row in history):
        left.plot(epochs, [row["val_loss"] for row in history], marker="o", color=PALETTE[1],
                  label="validation")
    left.set_title("loss")
    left.legend()
    right.plot(epochs, [row.get(f"val_{metric}", np.nan) for row in history], marker="o",
               color=PALETTE[2])
    right.set_title(f"validation {metric}")
    for axis in (left, right):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    return to_png(figure)


def confusion_matrix(matrix: list[list[int]], classes: list[str]) -> bytes:
    values = np.asarray(matrix, dtype=float)
    normalised = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size * 0.85))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 15:
        for (i, j), count in np.ndenumerate(values):
            if count:
                axis.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=7,
                          color="white" if normalised[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    return to_png(figure)


def reliability_diagram(bins: list[dict[str, float]], ece: float) -> bytes:
    figure, axis = plt.subplots(figsize=(4.6, 4.2))
    centres = [(b["low"] + b["high"]) / 2 for b in bins if b["count"]]
    accuracy = [b["accuracy"] for b in bins if b["count"]]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    axis.bar(centres, accuracy, width=width * 0.9, color=PALETTE[0], alpha=0.8, label="accuracy")
    axis.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability (ECE {ece:.3f})")
    axis.legend(fontsize=8)
    return to_png(figure)


def modality_bars(shares: dict[str, float], title: str) -> bytes:
    figure, axis = plt.subplots(figsize=(4.2, 0.5 + 0.45 * len(shares)))
    names = list(shares)
    axis.barh(names, [shares[n] for n in names], color=PALETTE[: len(names)])
    axis.set_xlim(0, 1)
    axis.set_title(title)
    return to_png(figure)
