"""ONNX export of the whole model (encoders + fusion + head), checked against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmfuse.errors import MmfuseError
from mmfuse.predictor import Predictor


class ExportableModel(nn.Module):
    """Positional tensors in, probabilities out: per modality (sorted), ``pixels`` (B, 3, S, S)
    for images, and for texts what the text encoder's ``prepare`` returns (``input_ids``,
    ``attention_mask`` (B, T); ``ngram_ids``, ``ngram_weights`` (B, K)). Every input is present.
    Tokenising (or hashing n-grams) stays outside the graph, as decoding images does."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.model = predictor.model_
        self.layout = [(m, input_keys(self.model.encoder_for(m))) for m in self.model.modalities]

    def input_names(self) -> list[str]:
        return [f"{m}.{key}" for m, keys in self.layout for key in keys]

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch, position = {}, 0
        size = tensors[0].shape[0]
        for m, keys in self.layout:
            present = torch.ones(size, dtype=torch.bool, device=tensors[0].device)
            batch[m] = {**dict(zip(keys, tensors[position:position + len(keys)], strict=True)),
                        "present": present}
            position += len(keys)
        return self.model.head.probabilities(self.model(batch).logits)


def input_keys(encoder: nn.Module) -> list[str]:
    """The names of an encoder's inputs, in the order its ``prepare`` gives them."""
    return ["pixels"] if encoder.kind == "image" else list(encoder.prepare(["x"]))


def example_inputs(predictor: Predictor, texts: list[str], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for m in predictor.model_.modalities:
        encoder = predictor.model_.encoder_for(m)
        if encoder.kind == "image":
            size = encoder.transform.size
            inputs.append(torch.rand(len(texts), 3, size, size, generator=generator) * 2 - 1)
        else:
            inputs += list(encoder.prepare(texts).values())
    return inputs


def export_onnx(predictor: Predictor, path: str | Path, tolerance: float = 1e-4) -> dict[str, Any]:
    """Write ``path`` and check onnxruntime against PyTorch on inputs of another batch size and
    text length than the traced ones. Raises MmfuseError naming what cannot be exported."""
    if getattr(predictor, "model_", None) is None or not hasattr(predictor.model_, "fusion"):
        raise MmfuseError("ONNX export covers classification-style models, not retrieval towers")
    encoders = dict(predictor.model_.encoders.items())
    texts = encoders.get("text")
    if texts is not None and texts.fingerprint.startswith("gru"):
        raise MmfuseError("the gru text encoder packs variable-length sequences, which ONNX "
                          "cannot express; export a model with minilm or an hf: text encoder")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportableModel(predictor).eval()
    image = encoders.get("image")
    if image is not None and hasattr(image, "backbone"):
        image.backbone.set_swish(memory_efficient=False)  # a custom autograd op does not export
    traced = example_inputs(predictor, ["an example text", "another, longer example text here"])
    names = wrapper.input_names()
    dynamic = {name: ({0: "batch"} if name.endswith("pixels") else {0: "batch", 1: "tokens"})
               for name in names}
    dynamic["probabilities"] = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(traced), str(path), input_names=names,
                              output_names=["probabilities"], dynamic_axes=dynamic,
                              opset_version=17, dynamo=False)
    except Exception as error:  # the exporter raises many kinds; the user needs the reason
        raise MmfuseError(f"ONNX export failed: {error}") from error
    return check_parity(wrapper, path, predictor, tolerance)


def check_parity(
    wrapper: ExportableModel, path: Path, predictor: Predictor, tolerance: float
) -> dict[str, Any]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    texts = ["a", "a third text of another length", "short", "x y z"]
    inputs = example_inputs(predictor, texts, seed=1)
    with torch.no_grad():
        expected = wrapper(*inputs).numpy()
    feed = {name: tensor.numpy() for name, tensor in zip(wrapper.input_names(), inputs, strict=True)}
    actual = session.run(["probabilities"], feed)[0]
    difference = float(np.abs(actual - expected).max())
    if difference > tolerance:
        raise MmfuseError(f"the ONNX model differs from PyTorch by {difference:.2e} "
                          f"(tolerance {tolerance:.0e}); do not use it")
    return {"path": str(path), "inputs": wrapper.input_names(), "max_abs_difference": difference,
            "checked_rows": len(texts), "size_mb": path.stat().st_size / 2**20}
