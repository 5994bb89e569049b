"""Why the model decided: modality shares (fusion weights and ablation), image heatmaps and
token attributions by Integrated Gradients (captum), saved as PNG overlays and JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

from mmfuse.data.images import open_image
from mmfuse.data.photos import joined, photos
from mmfuse.data.validate import as_object_column, cells
from mmfuse.evaluation import plots
from mmfuse.features.batches import Batch
from mmfuse.io import write_json
from mmfuse.predictor import Data, Predictor
from mmfuse.progress import track
from mmfuse.tasks import get_task

NGRAMS_SHOWN = 12  # an n-gram text has dozens of features; the strongest tell the story


def _with(batch: Batch, modality: str, **changes: torch.Tensor) -> Batch:
    """``batch`` (of one example) with some inputs of ``modality`` replaced; every other tensor
    repeated to the replacements' batch size (captum evaluates many interpolation steps)."""
    size = next(iter(changes.values())).shape[0]
    expanded = {m: {k: v.expand(size, *v.shape[1:]) for k, v in inputs.items()}
                for m, inputs in batch.items()}
    expanded[modality].update(changes)
    return expanded


def _scores(predictor: Predictor, batch: Batch) -> torch.Tensor:
    """(B, C) class probabilities (or the value, for regression) the user sees."""
    return predictor.model_.head.probabilities(predictor.model_(batch).logits)


def _evidence(predictor: Predictor, batch: Batch) -> torch.Tensor:
    """(B, C) what attributions explain: the task's log-odds of each class."""
    return get_task(predictor.config.data.task).evidence(predictor.model_(batch).logits)


def explain_batch(
    predictor: Predictor, batch: Batch, steps: int = 32, texts: dict[str, str] | None = None
) -> dict[str, Any]:
    """Explain one example (a batch of 1, raw inputs) of a fitted predictor. ``texts`` (the
    raw text per modality) names the n-grams of an n-gram encoder."""
    model = predictor.model_
    model.eval()
    with torch.no_grad():
        output = model(batch)
        scores = model.head.probabilities(output.logits)[0]
        decoded = model.head.decode(output.logits)[0]
    # the predicted class (a decision rule may name another than the most probable one)
    target = explained_class(scores.numpy(), decoded.numpy()) if scores.numel() > 1 else 0
    result: dict[str, Any] = {"target_index": target, "score": float(scores[target])}
    if output.modality_weights is not None:
        result["fusion_weights"] = dict(zip(model.modalities,
                                            output.modality_weights[0].tolist(), strict=True))
    result["ablation_shares"] = ablation_shares(predictor, batch, target, float(scores[target]))
    result["images"], result["tokens"] = {}, {}
    for m in model.modalities:
        inputs = batch[m]
        if not bool(inputs["present"][0]):
            continue
        if "pixels" in inputs:
            result["images"][m] = _image_heatmap(predictor, batch, m, target, steps)
        elif "numbers" in inputs:
            result["tokens"][m] = _column_attributions(predictor, batch, m, target)
        elif "ngram_weights" in inputs:
            result["tokens"][m] = _ngram_attributions(predictor, batch, m, target, steps=steps,
                                                      text=(texts or {}).get(m, ""))
        else:
            encoder = model.encoder_for(m)
            forward = lambda ids, m=m: _evidence(predictor, _with(batch, m, input_ids=ids))  # noqa: E731
            attribution = LayerIntegratedGradients(forward, encoder.input_embeddings()).attribute(
                inputs["input_ids"], baselines=encoder.neutral_ids(inputs["input_ids"]),
                target=target, n_steps=steps)
            per_token = attribution.sum(-1)[0]  # (T,)
            mask = inputs["attention_mask"][0].bool()
            words = encoder.token_strings(inputs["input_ids"][0][mask])
            result["tokens"][m] = list(zip(words, per_token[mask].tolist(), strict=True))
    return result


def _column_attributions(predictor: Predictor, batch: Batch, modality: str, target: int
                         ) -> list[tuple[str, float]]:
    """Each numeric and categorical column's part in the explained score: how far it falls
    when that one cell is made missing (a value the tower learned), largest first."""
    encoding = predictor.model_.encoder_for(modality).encoding  # type: ignore[attr-defined]
    numbers, categories = batch[modality]["numbers"], batch[modality]["categories"]
    with torch.no_grad():
        full = float(_evidence(predictor, batch)[0, target])
        drops = []
        for j, column in enumerate(encoding.num_cols):
            hidden = numbers.clone()
            hidden[0, 2 * j:2 * j + 2] = torch.tensor([0.0, 1.0])  # at the median, flagged
            drops.append((column, full - float(_evidence(
                predictor, _with(batch, modality, numbers=hidden))[0, target])))
        for k, column in enumerate(encoding.cat_cols):
            hidden = categories.clone()
            hidden[0, k] = len(encoding.levels[column]) + 1  # the "missing" row
            drops.append((column, full - float(_evidence(
                predictor, _with(batch, modality, categories=hidden))[0, target])))
    return sorted(drops, key=lambda item: -abs(item[1]))


def _ngram_attributions(
    predictor: Predictor, batch: Batch, modality: str, target: int, *, steps: int, text: str,
    top: int = NGRAMS_SHOWN,
) -> list[tuple[str, float]]:
    """The ``top`` n-grams by |Integrated Gradients| of their TF-IDF weight (baseline: none)."""
    weights = batch[modality]["ngram_weights"]  # (1, K)
    forward = lambda w: _evidence(predictor, _with(batch, modality, ngram_weights=w))  # noqa: E731
    attribution = IntegratedGradients(forward).attribute(
        weights, baselines=torch.zeros_like(weights), target=target, n_steps=steps)[0]
    names = predictor.model_.encoder_for(modality).bucket_names(text)
    ids = batch[modality]["ngram_ids"][0].tolist()
    real = [(names.get(i, f"#{i}"), float(a)) for i, a, w in
            zip(ids, attribution.tolist(), weights[0].tolist(), strict=True) if w != 0]
    return sorted(real, key=lambda item: -abs(item[1]))[:top]


def _image_heatmap(
    predictor: Predictor, batch: Batch, modality: str, target: int, steps: int
) -> np.ndarray:
    """(S, S) in [0, 1]: Integrated Gradients from a blurred copy of the image (Blur IG).

    A blurred baseline keeps what carries no detail (a plain background, the overall colour
    cast), so attribution lands on objects and their edges rather than on everything that
    differs from a grey or black image.
    """
    pixels = batch[modality]["pixels"]  # (1, 3, S, S), or (1, K, 3, S, S): a cell of photos
    one_each = pixels.reshape(-1, *pixels.shape[-3:])  # (K, 3, S, S)
    baseline = _blur(one_each, sigma=pixels.shape[-1] / 8).reshape(pixels.shape)
    forward = lambda p: _evidence(predictor, _with(batch, modality, pixels=p))  # noqa: E731
    attribution = IntegratedGradients(forward).attribute(
        pixels, baselines=baseline, target=target, n_steps=steps, internal_batch_size=16)
    # the first photo's map, as the figure shows it (``photo_parts`` ranks a cell's photos)
    heat = attribution.abs().reshape(one_each.shape)[:1].sum(1, keepdim=True).detach()  # (1, 1, S, S)
    heat = _blur(heat, sigma=max(1.0, pixels.shape[-1] / 64))[0, 0]  # per-pixel IG is speckled
    return (heat / heat.max().clamp_min(1e-12)).numpy()


def _blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, S, S), edges replicated."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    channels = pixels.shape[1]
    kernel = (kernel / kernel.sum()).view(1, 1, -1).repeat(channels, 1, 1)  # (C, 1, K)
    padded = torch.nn.functional.pad(pixels, (radius, radius, radius, radius), mode="replicate")
    rows = torch.nn.functional.conv2d(padded, kernel.unsqueeze(2), groups=channels)  # width
    return torch.nn.functional.conv2d(rows, kernel.unsqueeze(3), groups=channels)  # height


def ablation_shares(
    predictor: Predictor, batch: Batch, target: int, full: float
) -> dict[str, float]:
    """``shares_by_hiding`` for a network's batch (of one example)."""
    def score_without(m: str) -> float:
        hidden = _with(batch, m, present=torch.zeros_like(batch[m]["present"]))
        with torch.no_grad():
            return float(_scores(predictor, hidden)[0, target])

    return shares_by_hiding(predictor.model_.modalities, full, score_without)


def shown_cells(row: pd.Series, modality: str, predictor: Predictor) -> str:
    """A modality's input as a person reads it: the text, or ``price=12.5, brand=acme``."""
    if modality in row:
        return row[modality]
    data = predictor.config.data
    return ", ".join(f"{c}={row[c]}" for c in data.tabular_cols)


def shares_by_hiding(modalities: list[str], full: float,
                     score_without: Callable[[str], float]) -> dict[str, float]:
    """How much the predicted class's score (``full``) falls when each modality is hidden,
    as shares that sum to 1 (equal shares when hiding any one changes nothing)."""
    if len(modalities) < 2:
        return {m: 1.0 for m in modalities}
    drops = {m: max(0.0, full - score_without(m)) for m in modalities}
    total = sum(drops.values())
    return {m: (d / total if total > 0 else 1.0 / len(drops)) for m, d in drops.items()}


def explain(
    predictor: Predictor, data: Data, *, base_dir: str | Path | None = None,
    out_dir: str | Path | None = None, max_rows: int = 8, steps: int = 32,
) -> list[dict[str, Any]]:
    """Explain up to ``max_rows`` rows. With ``out_dir``: one PNG per row and explanations.json.

    A network gets modality shares, heatmaps and token attributions; an ensemble of linear
    members (no gradients to follow) gets modality shares."""
    get_task(predictor.config.data.task).require_predictions("explain")
    rows = predictor.read(data, base_dir=base_dir, require_labels=False).head(max_rows)
    explain_row = (_network_explainer(predictor, rows, steps) if predictor.is_network
                   else _hiding_explainer(predictor, rows))
    labels = predictor.classes_
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    results = []
    for i in track(range(len(rows)), total=len(rows), description="Explaining"):
        row = rows.iloc[i]
        explained = explain_row(i)
        record: dict[str, Any] = {
            "row": int(row["_row"]),
            "prediction": labels[explained["target_index"]] if labels else explained["score"],
            "score": explained["score"],
            "fusion_weights": explained.get("fusion_weights"),
            "ablation_shares": explained["ablation_shares"],
            "tokens": explained["tokens"],
            "texts": {m: shown_cells(row, m, predictor) for m in explained["tokens"]},
            "images": {m: row[m] for m in explained["images"]},
        }
        if "_target" in row and isinstance(row["_target"], str):
            record["truth"] = row["_target"]
        record["photos"] = photo_parts(predictor, rows.iloc[[i]])
        if folder is not None:
            png = folder / f"row-{record['row']}.png"
            png.write_bytes(explanation_figure(record, explained["images"]))
            record["figure"] = png.name
        record["heatmaps"] = {m: h.tolist() for m, h in explained["images"].items()}
        results.append(record)
    if folder is not None:
        write_json(folder / "explanations.json",
                   [{k: v for k, v in r.items() if k != "heatmaps"} for r in results])
    return results


def photo_parts(predictor: Predictor, row: pd.DataFrame) -> dict[str, list[tuple[str, float]]]:
    """Which photo mattered, for each image cell of several photos in ``row`` (one row):
    each photo with how far the predicted outcome's score falls without it, as ``predict``
    scores the cell (its other photos' mean). Empty where every cell is one photo."""
    scores, decoded, _ = predictor.outputs(row)
    target = explained_class(scores[0], decoded[0])
    out = {}
    for column, kind in predictor.modality_kinds_.items():
        cell = cells(row, column)[0] if column in row else None
        if kind != "image" or cell is None or len(photos(cell)) < 2:
            continue
        parts = photos(cell)
        drops = []
        for k, path in enumerate(parts):
            without = row.copy()
            without[column] = as_object_column([joined(parts[:k] + parts[k + 1:])], row.index)
            drops.append((path, float(scores[0, target] - predictor.outputs(without)[0][0, target])))
        out[column] = drops
    return out


def _network_explainer(predictor: Predictor, rows: pd.DataFrame, steps: int
                       ) -> Callable[[int], dict[str, Any]]:
    """Row position -> ``explain_batch`` of it (raw inputs: gradients reach the encoders)."""
    dataset = predictor.dataset(rows, use_cache=False)
    text_columns = [m for m in predictor.config.data.text_cols if m in rows]

    def explain_row(i: int) -> dict[str, Any]:
        batch, _ = dataset.__getitems__([i])
        return explain_batch(predictor, batch, steps,
                             {m: rows.iloc[i][m] for m in text_columns})

    return explain_row


def explained_class(scores: np.ndarray, decoded: np.ndarray) -> int:
    """The class an explanation is about: one row's predicted class id (``decoded``: a
    decision rule may name another class than the most probable one), or the highest of its
    ``scores`` where the prediction is not one class (label indicators, a value)."""
    one_class = np.ndim(decoded) == 0 and np.issubdtype(np.asarray(decoded).dtype, np.integer)
    return int(decoded) if one_class else int(np.argmax(scores))


def _hiding_explainer(predictor: Predictor, rows: pd.DataFrame) -> Callable[[int], dict[str, Any]]:
    """Row position -> the prediction and each modality's share, by emptying its cell."""
    modalities = list(predictor.modality_kinds_)

    def explain_row(i: int) -> dict[str, Any]:
        row = rows.iloc[[i]]
        scores, decoded, _ = predictor.outputs(row)
        scores, target = scores[0], explained_class(scores[0], decoded[0])

        def score_without(m: str) -> float:
            hidden = row.copy()
            hidden[m] = pd.Series([None], index=hidden.index, dtype=object)
            return float(predictor.outputs(hidden)[0][0, target])

        present = [m for m in modalities if cells(row, m)[0] is not None]
        return {"target_index": target, "score": float(scores[target]), "images": {},
                "tokens": {}, "ablation_shares": shares_by_hiding(present, float(scores[target]),
                                                                  score_without)}

    return explain_row


def explanation_figure(record: dict[str, Any], heatmaps: dict[str, np.ndarray]) -> bytes:
    """Image(s) with the attribution heatmap overlaid, tokens coloured by attribution, shares."""
    import matplotlib.pyplot as plt

    panels = len(heatmaps) + 1
    figure, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.6), squeeze=False)
    for axis, (m, heat) in zip(axes[0], heatmaps.items(), strict=False):
        # a pale grey copy of the image keeps the heat colours readable on any colour
        image = open_image(photos(record["images"][m])[0]).convert("L").resize(heat.shape[::-1])
        axis.imshow(np.asarray(image) * 0.5 + 127, cmap="gray", vmin=0, vmax=255)
        overlay = plt.cm.jet(heat)  # (S, S, 4): opaque where the evidence is, clear elsewhere
        overlay[..., 3] = 0.75 * heat
        axis.imshow(overlay)
        axis.set_title(f"{m}: where the evidence is", fontsize=9)
        axis.axis("off")
    text_axis = axes[0][-1]
    text_axis.axis("off")
    title = f"prediction: {record['prediction']} ({record['score']:.2f})"
    if "truth" in record:
        title += f"\ntruth: {record['truth']}"
    text_axis.set_title(title, fontsize=9)
    y = 0.9
    for m, tokens in record["tokens"].items():
        largest = max((abs(s) for _, s in tokens), default=1.0) or 1.0
        text_axis.text(0, y, f"{m}:", fontsize=8, weight="bold", transform=text_axis.transAxes)
        y -= 0.09
        x = 0.0
        for token, score in tokens:
            colour = plt.cm.RdBu_r(0.5 + 0.5 * score / largest)
            ink = "white" if abs(score) > 0.6 * largest else "black"
            label = text_axis.text(x, y, token, fontsize=8, transform=text_axis.transAxes,
                                   color=ink,
                                   bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5})
            x += 0.03 + 0.024 * len(token)
            if x > 0.9:
                x, y = 0.0, y - 0.09
            del label
        y -= 0.12
    shares = record["ablation_shares"]
    text_axis.text(0, max(y, 0.02), "modality share (ablation): " + ", ".join(
        f"{m} {v:.0%}" for m, v in shares.items()), fontsize=8, transform=text_axis.transAxes)
    return plots.to_png(figure)
