"""Efficiency: parameters, size on disk, latency, throughput, peak memory, epoch time."""

from __future__ import annotations

import contextlib
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse.features.batches import MultimodalDataset
from mmfuse.features.cache import FeatureCache
from mmfuse.model_folder import WEIGHTS_FILE
from mmfuse.predictor import Data, Predictor


def parameter_counts(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """Trainable and frozen parameters per top-level component (encoders split by kind)."""
    counts: dict[str, dict[str, int]] = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        component = ".".join(parts[:2]) if parts[0] == "encoders" else parts[0]
        entry = counts.setdefault(component, {"trainable": 0, "frozen": 0})
        entry["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    return counts


def _latencies(model, dataset: MultimodalDataset, batch_size: int, repeats: int) -> list[float]:
    """Seconds per batch, from row indices to logits (decoding included for raw sources)."""
    n = len(dataset)
    times = []
    with torch.inference_mode():
        for r in range(repeats + 1):
            rows = [(r * batch_size + i) % n for i in range(batch_size)]
            started = time.perf_counter()
            batch, _ = dataset.__getitems__(rows)
            model(batch)
            if r:  # the first call warms up allocator and kernels
                times.append(time.perf_counter() - started)
    return times


def _row_latencies(predictor: Predictor, rows, batch_size: int, repeats: int,
                   cached: bool) -> list[float]:
    """Seconds per batch of validated rows to probabilities; not ``cached``: no feature cache,
    so images are decoded and encoded on every call."""
    n, times = len(rows), []
    for r in range(repeats + 1):
        picked = rows.iloc[[(r * batch_size + i) % n for i in range(batch_size)]]
        with contextlib.ExitStack() as stack:
            if not cached:
                stack.enter_context(predictor.feature_cache(FeatureCache(None)))
            started = time.perf_counter()
            predictor.outputs(picked)
            if r:
                times.append(time.perf_counter() - started)
    return times


def _ensemble_parameters(ensemble) -> dict[str, dict[str, int]]:
    """Frozen parameters per encoder view of the linear members; every member's fitted
    coefficients and trained network weights as trainable."""
    counts = {f"encoder {name}": {"trainable": 0, "frozen": sum(
        p.numel() for p in encoder.parameters())}
        for name, encoder in ensemble.encoders_by_name().items()}
    counts["members"] = {"trainable": sum(m.parameters() for m in ensemble.members), "frozen": 0}
    return counts


def _summary(times: list[float], batch_size: int) -> dict[str, float]:
    return {"p50_ms": 1000 * float(np.percentile(times, 50)),
            "p95_ms": 1000 * float(np.percentile(times, 95)),
            "rows_per_second": batch_size / float(np.mean(times))}


def profile(
    predictor: Predictor, data: Data, *, base_dir: str | Path | None = None,
    run_dir: str | Path | None = None, repeats: int = 20, batch_sizes: tuple[int, ...] = (1, 32),
) -> dict[str, Any]:
    """Latency p50/p95 and throughput per batch size, end to end from files ("raw") and from
    cached features ("cached", when an encoder is frozen), plus sizes and memory. A network is
    timed from its dataset to its logits; an ensemble of linear members from validated rows
    to its probabilities."""
    rows = predictor.read(data, base_dir=base_dir, require_labels=False)
    if predictor.is_network:
        model = predictor.model_.eval()
        datasets = {False: predictor.dataset(rows, use_cache=False), True: predictor.dataset(rows)}

        def timed(size: int, cached: bool) -> list[float]:
            return _latencies(model, datasets[cached], size, repeats)

        any_frozen = any(e.frozen for e in model.encoders.values())
        parameters = parameter_counts(model)
    else:
        def timed(size: int, cached: bool) -> list[float]:
            return _row_latencies(predictor, rows, size, repeats, cached)

        any_frozen = True  # every encoder view of an ensemble is frozen
        parameters = _ensemble_parameters(predictor.fitted_)
    latency: dict[str, dict[str, Any]] = {}
    for size in batch_sizes:
        latency[f"batch_{size}"] = {
            "raw": _summary(timed(size, cached=False), size),
            "cached": _summary(timed(size, cached=True), size) if any_frozen else None,
        }
    result: dict[str, Any] = {
        "parameters": parameters,
        "latency": latency,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": len(rows),
        "threads": torch.get_num_threads(),
    }
    result["total_parameters"] = sum(sum(c.values()) for c in result["parameters"].values())
    if run_dir is not None:
        weights = Path(run_dir) / WEIGHTS_FILE
        result["checkpoint_mb"] = weights.stat().st_size / 2**20 if weights.exists() else None
    history = predictor.history_
    if history:
        seconds = [row["seconds"] for row in history if "seconds" in row]
        result["epoch_seconds"] = {"first": seconds[0], "mean": float(np.mean(seconds)),
                                   "epochs": len(seconds)}
    return result
