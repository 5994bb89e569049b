"""Model inputs for in-memory items (what the server receives): decoded images and strings,
no file is read and nothing is cached; encoders run live.

An item maps an input column to a decoded image, a string, or None (missing).
"""

from __future__ import annotations

import pandas as pd
import torch
from PIL import Image

from mmfuse.encoders.base import Encoder
from mmfuse.features.batches import Batch

Item = dict[str, Image.Image | str | None]


def is_present(value: Image.Image | str | None) -> bool:
    return value is not None and value != ""


def encoder_inputs(encoder: Encoder, values: list[Image.Image | str | None]
                   ) -> dict[str, torch.Tensor]:
    """The keyword inputs of ``encoder`` for B values, with ``present`` (B,): a missing image
    is zeros, a missing text empty (the model replaces both by its placeholder)."""
    if encoder.kind == "image":
        size = encoder.transform.size
        pixels = [encoder.transform(v) if isinstance(v, Image.Image) else torch.zeros(3, size, size)
                  for v in values]
        inputs = encoder.prepare(pixels)
    else:
        inputs = encoder.prepare([v if isinstance(v, str) else "" for v in values])
    return {**inputs, "present": torch.tensor([is_present(v) for v in values])}


def items_batch(encoders: dict[str, Encoder], items: list[Item]) -> Batch:
    """A network's batch for B items; ``encoders`` maps each modality (column, or the
    tabular modality of several) to its encoder."""
    return {m: tabular_inputs(encoder, items) if encoder.kind == "tabular"
            else encoder_inputs(encoder, [item.get(m) for item in items])
            for m, encoder in encoders.items()}


def tabular_inputs(encoder: Encoder, items: list[Item]) -> dict[str, torch.Tensor]:
    """The tabular encoder's inputs for B items' numeric and categorical cells (an absent or
    empty one is a missing value)."""
    columns = encoder.columns
    frame = pd.DataFrame([{c: v if is_present(v := item.get(c)) else None for c in columns}
                          for item in items], columns=columns, dtype=object)
    return {**encoder.prepare(frame), "present": torch.ones(len(items), dtype=torch.bool)}


@torch.inference_mode()
def pooled_features(encoder: Encoder, values: list[Image.Image | str | None]) -> torch.Tensor:
    """(B, D) pooled features of a frozen encoder, zeros where a value is missing: the same
    numbers the feature cache holds for the same inputs."""
    inputs = encoder_inputs(encoder, values)
    present = inputs.pop("present")
    pooled = encoder.eval()(**inputs).pooled.float()
    return pooled * present.unsqueeze(1)
