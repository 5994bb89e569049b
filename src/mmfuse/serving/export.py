"""ONNX export of the whole model (a network: encoders + fusion + head; an ensemble: every
member, the combination and the decision), checked against `mmfuse predict`."""

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
from mmfuse.encoders.base import Encoder
from mmfuse.errors import MmfuseError
from mmfuse.features.batches import Batch
from mmfuse.predictor import Data, Predictor
from mmfuse.tasks import get_task


class ExportableModel(nn.Module):
    """Positional tensors in; probabilities and the prediction out (the decided class id,
    0/1 indicators or values, as `mmfuse predict` decodes them). Inputs per modality (sorted):
    ``pixels`` (B, 3, S, S) for images (where cells hold several photos: (B, K, 3, S, S) with
    ``photo_mask`` (B, K), True where a photo is real), for texts what the text encoder's
    ``prepare`` returns (``input_ids``, ``attention_mask`` (B, T); ``ngram_ids``,
    ``ngram_weights`` (B, K); a frozen transformer's column with a text longer than its
    window: (B, W, T) with ``window_mask`` (B, W), each text's windows), and
    for the tabular tower ``numbers`` (B, 2 x numeric columns: each scaled, then its missing
    flag) and ``categories`` (B, categorical columns) ids, as its ``prepare`` maps a row with
    the scaling and levels of the run folder's ``fitted_state.json``. Every input is present.
    Tokenising (or hashing n-grams, or scaling) stays outside the graph, as decoding images
    does."""

    def __init__(self, predictor: Predictor, rows: pd.DataFrame) -> None:
        super().__init__()
        self.predictor = predictor
        self.model = predictor.model_
        # each modality's inputs as the Predictor's own path lays them out for these rows
        batch = self._batch(rows, first=1)
        self.layout = [(m, [key for key in batch[m] if key != "present"])
                       for m in self.model.modalities]
        self.input_names = [f"{m}.{key}" for m, keys in self.layout for key in keys]

    def _batch(self, rows: pd.DataFrame, first: int | None = None) -> Batch:
        dataset = self.predictor.dataset(rows, use_cache=False)
        return dataset.__getitems__(list(range(first or len(rows))))[0]

    def inputs(self, rows: pd.DataFrame, first: int | None = None) -> list[torch.Tensor]:
        """The ONNX inputs of rows, built by the Predictor's own path from files and strings
        (decode, transform, tokenise): exactly what a user of the ONNX file must feed it.
        ``first``: of the first rows only, laid out as for all rows."""
        batch = self._batch(rows, first)
        return [batch[m][key] for m, keys in self.layout for key in keys]

    def encoders(self) -> list[Encoder]:
        return [self.model.encoder_for(m) for m, _ in self.layout]

    def preparation(self) -> dict[str, str]:
        """Each modality -> what prepares its inputs."""
        return {m: f"{m} through {type(self.model.encoder_for(m)).__name__} "
                   f"({self.model.encoder_for(m).preprocessing})" for m, _ in self.layout}

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


def parity_rows(predictor: Predictor, data: Data, base_dir: str | Path | None,
                max_rows: int) -> pd.DataFrame:
    """Real rows with every input present (the exported graph takes no missing modality)."""
    rows = predictor.read(data, base_dir=base_dir, require_labels=False)
    read = list(predictor.modality_kinds_)
    columns = [m for m in read if m in rows]  # tabular: never missing
    complete = rows[[all(v is not None for v in values) for values in
                     zip(*(cells(rows, m) for m in columns), strict=True)]]
    if len(complete) == 0:
        raise MmfuseError("the parity check needs rows with every input present "
                          f"({', '.join(read)}); none has them all")
    return complete.head(max_rows)


def dynamic_axes(names: list[str], inputs: list[torch.Tensor]) -> dict[str, dict[int, str]]:
    """Every input's batch axis, and its second axis where that varies: a text's tokens or
    n-grams, a cell's photos (each input's own length: two tokenizers need not agree)."""
    axes: dict[str, dict[int, str]] = {}
    for name, tensor in zip(names, inputs, strict=True):
        prefix, key = name.rsplit(".", 1)
        axes[name] = {0: "batch"}
        if key in ("pixels", "photo_mask") and tensor.dim() in (2, 5):  # cells of photos
            axes[name][1] = f"{prefix}.photos"
        elif key == "window_mask":  # texts of windows: (B, W), their tokens (B, W, T)
            axes[name][1] = f"{prefix}.windows"
        elif tensor.dim() == 3:
            axes[name] |= {1: f"{prefix}.windows", 2: f"{prefix}.tokens"}
        elif key not in ("pixels", "numbers", "categories", "features", "codes"):
            axes[name][1] = f"{prefix}.tokens"
    return axes | {"probabilities": {0: "batch"}, "prediction": {0: "batch"}}


def export_onnx(
    predictor: Predictor, path: str | Path, data: Data, *, base_dir: str | Path | None = None,
    tolerance: float = 1e-4, max_rows: int = 32,
) -> dict[str, Any]:
    """Write ``path`` and check it: onnxruntime on the documented inputs of up to ``max_rows``
    real rows of ``data`` against ``predict_proba`` of the model as trained (computed before
    anything is traced). A network exports as ``ExportableModel``, an ensemble (every
    member, the combination and the decision) as ``EnsembleGraph``. Raises MmfuseError naming
    what cannot be exported, or the difference."""
    get_task(predictor.config.data.task).require_predictions("export to ONNX")
    rows = parity_rows(predictor, data, base_dir, max_rows)
    # what `mmfuse predict` says, computed in float32 as the graph is (its fast path may read
    # text in bfloat16: encoders/fast_path.py)
    with fast_path.disabled():
        expected = predictor.fitted_.predict(rows)[:2]
    graph = graph_for(predictor, rows).eval()
    # the default predict, for the record, where it differs: an encoder whose fast path reads
    # text in bfloat16 on this CPU
    drift = float(np.abs(predictor.fitted_.predict(rows)[0] - expected[0]).max()) if any(
        fast_path.arithmetic(e) == "bfloat16" for e in graph.encoders()) else 0.0
    inputs = graph.inputs(rows)
    # Traced on the first rows alone (their own text length): parity is then checked at
    # another batch size and token count.
    traced = graph.inputs(rows, first=min(2, len(rows)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = graph.input_names
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, tuple(traced), str(path), input_names=names,
                              output_names=["probabilities", "prediction"],
                              dynamic_axes=dynamic_axes(names, inputs), opset_version=17,
                              dynamo=False)
    except Exception as error:  # the exporter raises many kinds; the user needs the reason
        raise MmfuseError(f"ONNX export failed: {error}") from error
    return check_parity(path, names, inputs, expected, tolerance) | {
        "preparation": graph.preparation(), "default_predict_difference": drift}


def graph_for(predictor: Predictor, rows: pd.DataFrame) -> nn.Module:
    """The module that computes what ``predict`` does, from positional tensors; an encoder
    that ONNX cannot express (``Encoder.not_exportable``) is refused in one sentence."""
    from mmfuse.serving.ensemble_graph import EnsembleGraph

    graph = (ExportableModel(predictor, rows) if predictor.is_network
             else EnsembleGraph(predictor.fitted_, rows))  # type: ignore[arg-type]
    for encoder in graph.encoders():
        if encoder.not_exportable:
            raise MmfuseError(encoder.not_exportable)
    return graph


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
