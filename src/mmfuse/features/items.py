"""Model inputs for in-memory items (what the server receives): decoded images and strings,
no file is read and nothing is cached; encoders run live.

An item maps an input column to a decoded image (or a list of them: several photos of one
item), a string, a number, or None (missing).
"""

from __future__ import annotations

import pandas as pd
import torch
from PIL import Image

from mmfuse.encoders.base import Encoder, forward_of
from mmfuse.features.batches import Batch, photo_batch
from mmfuse.features.pooled import pool, stacked

Value = Image.Image | list[Image.Image] | str | float | None
Item = dict[str, Value]


def is_present(value: Value) -> bool:
    return value is not None and value != "" and value != []


def encoder_inputs(encoder: Encoder, values: list[Value]) -> dict[str, torch.Tensor]:
    """The keyword inputs of ``encoder`` for B values, with ``present`` (B,): a missing image
    is zeros, a missing text empty (the model replaces both by its placeholder). Several
    photos: a frozen encoder's features pooled over them (as the feature cache holds them),
    the photos themselves for one being trained (``photo_batch``, as training read them)."""
    if (parts := several(encoder, values)) is not None:
        if encoder.frozen:
            return part_features(encoder, parts)
        if encoder.kind == "image":
            return photo_batch([[encoder.transform(p) for p in cell] for cell in parts],
                               encoder.transform.size)
    if encoder.kind == "image":
        size = encoder.transform.size
        pixels = [encoder.transform(v) if isinstance(v, Image.Image)
                  else encoder.transform(v[0]) if isinstance(v, list) and v
                  else torch.zeros(3, size, size) for v in values]
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


def several(encoder: Encoder, values: list[Value]) -> list[list] | None:
    """Each value's parts (a value's photos, a long text's windows: ``Encoder.parts_of``)
    where some value has several; None where every value is one part."""
    if encoder.kind == "image":
        parts = [v if isinstance(v, list) else [v] if isinstance(v, Image.Image) else []
                 for v in values]
    elif encoder.kind == "text":
        texts = [v for v in values if isinstance(v, str) and v]
        windows = iter(encoder.parts_of(texts))
        parts = [next(windows) if isinstance(v, str) and v else [] for v in values]
    else:
        return None
    return parts if any(len(p) > 1 for p in parts) else None


@torch.inference_mode()
def part_features(encoder: Encoder, parts: list[list]) -> dict[str, torch.Tensor]:
    """A frozen encoder's features of B values of one or several parts (``several``):
    ``pooled`` (B, D) their mean, ``tokens`` (B, T, D) side by side with ``token_mask``
    (B, T), and ``present`` (B,): what the feature cache holds for such cells."""
    flat = [part for row in parts for part in row]
    prepared = [encoder.transform(p) for p in flat] if encoder.kind == "image" else flat
    out = forward_of(encoder.eval())(**encoder.prepare(prepared)) if flat else None
    cells, start = [], 0
    for row in parts:
        rows = slice(start, start + len(row))
        cells.append(pool({"pooled": out.pooled[rows], "tokens": out.tokens[rows],
                           "token_mask": out.token_mask[rows]}, True, torch.float32)
                     if row and out is not None else None)
        start += len(row)
    pooled, tokens, mask = stacked(cells, encoder.output_dim, True, torch.float32)
    return {"pooled": pooled, "tokens": tokens, "token_mask": mask,
            "present": torch.tensor([bool(row) for row in parts])}


@torch.inference_mode()
def pooled_features(encoder: Encoder, values: list[Value]) -> torch.Tensor:
    """(B, D) pooled features of a frozen encoder, zeros where a value is missing: the same
    numbers the feature cache holds for the same inputs."""
    if (parts := several(encoder, values)) is not None:
        return part_features(encoder, parts)["pooled"]
    inputs = encoder_inputs(encoder, values)
    present = inputs.pop("present")
    pooled = forward_of(encoder.eval())(**inputs).pooled.float()
    return pooled * present.unsqueeze(1)
