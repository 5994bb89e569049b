"""ONNX export of the whole model (encoders + fusion + head), checked against `mmfuse predict`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mmfuse.data.validate import cells
from mmfuse.encoders import fast_path
from mmfuse.errors import MmfuseError
from mmfuse.features.batches import Batch
from mmfuse.predictor import Data, Predictor
from mmfuse.tasks import get_task


class ExportableModel(nn.Module):
    """Positional tensors in; probabilities and the prediction out (the decided class id,
    0/1 indicators or values, as `mmfuse predict` decodes them). Inputs per modality (sorted):
    ``pixels`` (B, 3, S, S) for images (where cells hold several photos: (B, K, 3, S, S) with
    ``photo_mask`` (B, K), True where a photo is real), for texts what the text encoder's ``prepare`` returns
    (``input_ids``, ``attention_mask`` (B, T); ``ngram_ids``, ``ngram_weights`` (B, K)), and
    for the tabular tower ``numbers`` (B, 2 x numeric columns: each scaled, then its missing
    flag) and ``categories`` (B, categorical columns) ids, as its ``prepare`` maps a row with
    the scaling and levels of the run folder's ``fitted_state.json``. Every input is present.
    Tokenising (or hashing n-grams, or scaling) stays outside the graph, as decoding images
    does."""

    def __init__(self, predictor: Predictor, batch: Batch) -> None:
        super().__init__()
        self.model = predictor.model_
        # each modality's inputs as the Predictor's own path lays them out for these rows
        self.layout = [(m, [key for key in batch[m] if key != "present"])
                       for m in self.model.modalities]

    def input_names(self) -> list[str]:
        return [f"{m}.{key}" for m, keys in self.layout for key in keys]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, position = {}, 0
        size = tensors[0].shape[0]
        for m, keys in self.layout:
            present = torch.ones(size, dtype=torch.bool, device=tensors[0].device)
            batch[m] = {**dict(zip(keys, tensors[position:position + len(keys)], strict=True)),
                        "present": present}
            position += len(keys)
        logits = self.model(batch).logits
        return self.model.head.probabilities(logits), self.model.head.decode(logits)


def documented_inputs(wrapper: ExportableModel, batch: Batch) -> list[torch.Tensor]:
    """The ONNX inputs of a batch built by the Predictor's own path from files and strings
    (decode, transform, tokenise): exactly what a user of the ONNX file must feed it."""
    return [batch[m][key] for m, keys in wrapper.layout for key in keys]


def parity_rows(predictor: Predictor, data: Data, base_dir: str | Path | None,
                max_rows: int) -> pd.DataFrame:
    """Real rows with every input present (the exported graph takes no missing modality)."""
    rows = predictor.read(data, base_dir=base_dir, require_labels=False)
    columns = [m for m in predictor.model_.modalities if m in rows]  # tabular: never missing
    complete = rows[[all(v is not None for v in values) for values in
                     zip(*(cells(rows, m) for m in columns), strict=True)]]
    if len(complete) == 0:
        raise MmfuseError("the parity check needs rows with every input present "
                          f"({', '.join(predictor.model_.modalities)}); none has them all")
    return complete.head(max_rows)


def export_onnx(
    predictor: Predictor, path: str | Path, data: Data, *, base_dir: str | Path | None = None,
    tolerance: float = 1e-4, max_rows: int = 32,
) -> dict[str, Any]:
    """Write ``path`` and check it: onnxruntime on the documented inputs of up to ``max_rows``
    real rows of ``data`` against ``predict_proba`` of the model as trained (computed before
    anything is traced). Raises MmfuseError naming what cannot be exported, or the difference."""
    get_task(predictor.config.data.task).require_predictions("export to ONNX")
    predictor.require_network("export to ONNX")
    for encoder in predictor.model_.encoders.values():
        if encoder.not_exportable:
            raise MmfuseError(encoder.not_exportable)
    rows = parity_rows(predictor, data, base_dir, max_rows)
    # what `mmfuse predict` says, computed in float32 as the graph is (its fast path may read
    # text in bfloat16: encoders/fast_path.py)
    with fast_path.disabled():
        expected = predictor.fitted_.predict(rows)[:2]
    dataset = predictor.dataset(rows, use_cache=False)
    batch = dataset.__getitems__(list(range(len(rows))))[0]
    wrapper = ExportableModel(predictor, batch).eval()
    inputs = documented_inputs(wrapper, batch)
    # Traced on the first rows alone (their own text length): parity is then checked at
    # another batch size and token count.
    traced = documented_inputs(wrapper, dataset.__getitems__(list(range(min(2, len(rows)))))[0])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = wrapper.input_names()
    fixed_width = ("pixels", "numbers", "categories")
    dynamic = {name: ({0: "batch"} if name.endswith(fixed_width) else {0: "batch", 1: "tokens"})
               for name in names}
    for name, tensor in zip(names, inputs, strict=True):
        if name.endswith(("photo_mask", "pixels")) and tensor.dim() in (2, 5):  # cells of photos
            dynamic[name] = {0: "batch", 1: "photos"}
    dynamic |= {"probabilities": {0: "batch"}, "prediction": {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(traced), str(path), input_names=names,
                              output_names=["probabilities", "prediction"], dynamic_axes=dynamic,
                              opset_version=17, dynamo=False)
    except Exception as error:  # the exporter raises many kinds; the user needs the reason
        raise MmfuseError(f"ONNX export failed: {error}") from error
    return check_parity(path, names, inputs, expected, tolerance)


def check_parity(
    path: Path, names: list[str], inputs: list[torch.Tensor],
    expected: tuple[np.ndarray, np.ndarray], tolerance: float,
) -> dict[str, Any]:
    """``expected``: the probabilities (N, C) and decoded predictions `mmfuse predict` gave."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
    scores, decoded = expected
    actual, predicted = session.run(["probabilities", "prediction"], feed)
    difference = float(np.abs(actual.reshape(scores.shape) - scores).max())
    if difference > tolerance:
        raise MmfuseError(f"the ONNX model differs from `mmfuse predict` by {difference:.2e} "
                          f"(tolerance {tolerance:.0e}) on {len(scores)} rows; do not use it")
    predicted = predicted.reshape(decoded.shape)
    if (not np.allclose(predicted, decoded, atol=tolerance) if decoded.dtype.kind == "f"
            else not np.array_equal(predicted, decoded)):
        raise MmfuseError(f"the ONNX model's predictions differ from `mmfuse predict` on "
                          f"{int((predicted != decoded).sum())} of {len(decoded)} rows; do not "
                          "use it")
    return {"path": str(path), "inputs": names, "max_abs_difference": difference,
            "checked_rows": len(scores), "size_mb": path.stat().st_size / 2**20}
