"""Efficiency: parameters, size on disk, latency, throughput, peak memory, epoch time."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfuse.features.batches import MultimodalDataset
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


def _summary(times: list[float], batch_size: int) -> dict[str, float]:
    return {"p50_ms": 1000 * float(np.percentile(times, 50)),
            "p95_ms": 1000 * float(np.percentile(times, 95)),
            "rows_per_second": batch_size / float(np.mean(times))}


def profile(
    predictor: Predictor, data: Data, *, base_dir: str | Path | None = None,
    run_dir: str | Path | None = None, repeats: int = 20, batch_sizes: tuple[int, ...] = (1, 32),
) -> dict[str, Any]:
    """Latency p50/p95 and throughput per batch size, end to end from files ("raw") and from
    cached features ("cached", when an encoder is frozen), plus sizes and memory."""
    model = predictor.require_network("profile")
    rows = predictor.read(data, base_dir=base_dir, require_labels=False)
    model.eval()
    raw = predictor.dataset(rows, use_cache=False)
    cached = predictor.dataset(rows)
    any_frozen = any(e.frozen for e in model.encoders.values())
    latency: dict[str, dict[str, Any]] = {}
    for size in batch_sizes:
        latency[f"batch_{size}"] = {
            "raw": _summary(_latencies(model, raw, size, repeats), size),
            "cached": _summary(_latencies(model, cached, size, repeats), size) if any_frozen
            else None,
        }
    result: dict[str, Any] = {
        "parameters": parameter_counts(model),
        "latency": latency,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": len(rows),
        "threads": torch.get_num_threads(),
    }
    result["total_parameters"] = sum(sum(c.values()) for c in result["parameters"].values())
    if run_dir is not None:
        weights = Path(run_dir) / "model.safetensors"
        result["checkpoint_mb"] = weights.stat().st_size / 2**20 if weights.exists() else None
    history = predictor.history_
    if history:
        seconds = [row["seconds"] for row in history if "seconds" in row]
        result["epoch_seconds"] = {"first": seconds[0], "mean": float(np.mean(seconds)),
                                   "epochs": len(seconds)}
    return result
