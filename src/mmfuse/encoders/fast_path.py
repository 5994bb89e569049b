"""Frozen pretrained encoders at this CPU's limit, at equal features.

Eager PyTorch leaves speed on a CPU's table (``python -m benchmarks.encode`` measures it):

- **Images**: an ONNX Runtime session of the encoder's graph (convolutions fused with their
  batch norms and activations) computes the same features several times faster. The graph is
  exported once per encoder (its ``cache_key``) and kept beside the feature cache, in
  ``<cache>/graphs/``, so a later run loads it in a moment.
- **Texts**: a transformer's matrix products in bfloat16 (``torch.autocast``) on a CPU with
  bfloat16 units (AVX512-BF16, AMX), accumulating in float32. ONNX Runtime's float32 graph
  was slower than eager PyTorch for MiniLM here.

Either path is checked against the untouched encoder on its first batch (the largest cosine
distance between their pooled features at most ``MAX_COSINE_GAP``) and is dropped, for
eager PyTorch, when it differs or fails; ``MMFUSE_FAST_PATH=0`` turns it off. It runs only
where nothing needs gradients or a trace (explanations, ONNX export use the encoder itself)
and only on a CPU.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch

from mmfuse.encoders.base import Encoder
from mmfuse.progress import CONSOLE
from mmfuse.types import EncoderOutput

MAX_COSINE_GAP = 1e-3
Runner = Callable[..., EncoderOutput]


_OFF: ContextVar[bool] = ContextVar("fast_path_off", default=False)


def enabled() -> bool:
    return os.environ.get("MMFUSE_FAST_PATH", "1") != "0" and not _OFF.get()


@contextmanager
def disabled() -> Iterator[None]:
    """Encoders compute in float32 eager PyTorch for a while (in this thread or task): what
    an exported float32 graph is checked against."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


def attach(encoder: Encoder, cache_root: Path | None) -> Encoder:
    """Give a frozen pretrained encoder its fast path (``Encoder.fast``), built on first use
    and checked then; graphs are kept under ``cache_root`` (None: a temporary folder)."""
    if (encoder.frozen and encoder.pretrained and enabled() and encoder.fast is None
            and encoder.kind in ("image", "text")):
        encoder.fast = FastPath(encoder, cache_root)
    return encoder


def arithmetic(encoder: Encoder) -> str:
    """What a frozen encoder's features are computed in, which the feature cache keys them by
    (features of two arithmetics are never mixed): "bfloat16" where its fast path reads text
    so, "float32" otherwise. Should the first batch's check drop the bfloat16 path, the
    features stored under "bfloat16" are float32 ones: closer to the encoder, never mixed
    with the path's."""
    if not (encoder.frozen and encoder.pretrained and enabled()):
        return "float32"
    if torch.cuda.is_available():  # the encoding pass runs on the GPU (features/encoding.py)
        return "bfloat16" if gpu_bf16() else "float32"
    return "bfloat16" if encoder.kind == "text" and bf16_capable() else "float32"


def gpu_bf16() -> bool:
    """Whether a GPU is visible and computes in bfloat16 natively (Ampere and later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def bf16_capable() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (else bfloat16 is emulated: slower)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class FastPath:
    """``fast(**inputs)`` -> the encoder's output, computed the fastest checked way."""

    def __init__(self, encoder: Encoder, cache_root: Path | None) -> None:
        self.encoder = encoder
        self.cache_root = cache_root
        self.runner: Runner | None = None  # decided on the first batch
        self.name = "eager"

    def __call__(self, **inputs: torch.Tensor) -> EncoderOutput:
        if not enabled():
            return self.encoder(**inputs)
        if self.runner is None:
            return self._first(inputs)
        return self.runner(**inputs)

    def _first(self, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """Build the candidate path, check it against the eager encoder on this batch, keep
        whichever is valid."""
        eager = self.encoder.eval()
        with torch.inference_mode():
            reference = eager(**inputs)
        self.runner, self.name = eager, "eager"
        try:
            candidate, name = self._candidate()
        except Exception as error:  # an exporter or a runtime refusing: eager stays
            CONSOLE.print(f"fast path for {self.encoder.fingerprint.split(':')[0]} not used "
                          f"({type(error).__name__}: {str(error)[:120]})")
            return reference
        if candidate is None:
            return reference
        with torch.inference_mode():
            got = candidate(**inputs)
        gap = cosine_gap(got.pooled, reference.pooled)
        if gap <= MAX_COSINE_GAP:
            self.runner, self.name = candidate, name
            return got  # every batch from the one path: the same input, the same features
        CONSOLE.print(f"fast path {name} for {self.encoder.fingerprint.split(':')[0]} "
                      f"differs from the encoder (cosine {gap:.1e}); not used")
        return reference

    def _candidate(self) -> tuple[Runner | None, str]:
        if self.encoder.kind == "image" and not self.encoder.not_exportable:
            key = hashlib.blake2b(self.encoder.cache_key.encode(), digest_size=10).hexdigest()
            if self.cache_root is not None:
                return OnnxImageRunner(self.encoder, self.cache_root / "graphs" / f"{key}.onnx"
                                       ), "onnxruntime"
            with tempfile.TemporaryDirectory(prefix="mmfuse-graph-") as folder:
                return OnnxImageRunner(self.encoder, Path(folder) / f"{key}.onnx"), "onnxruntime"
        if arithmetic(self.encoder) == "bfloat16":
            return Bf16Runner(self.encoder), "bfloat16"
        return None, "eager"


def cosine_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest per-row cosine distance between (B, D) features; rows that are zero in
    both agree (a solid-colour image can leave every ReLU off)."""
    a, b = a.float(), b.float()
    zero = (a.norm(dim=-1) < 1e-6) & (b.norm(dim=-1) < 1e-6)
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    return float(torch.where(zero, 0.0, 1 - (a * b).sum(-1)).max()) if len(a) else 0.0


class Bf16Runner:
    """The encoder under bfloat16 autocast: float32 outputs."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def __call__(self, **inputs: torch.Tensor) -> EncoderOutput:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.encoder(**inputs)
        return EncoderOutput(out.pooled.float(), out.tokens.float(), out.token_mask)


class _ImageGraph(torch.nn.Module):
    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(pixels=pixels)
        return out.pooled, out.tokens


class OnnxImageRunner:
    """An image encoder's ONNX Runtime session: pixels (B, 3, S, S) -> pooled (B, D) and
    tokens (B, T, D), every token real."""

    def __init__(self, encoder: Encoder, path: Path) -> None:
        import onnxruntime

        if not path.exists():
            export_image_graph(encoder, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # its threads must not spin-wait after a call: torch's own, running next, would lose
        # the cores to them (a batch-1 prediction took 27 ms spinning, 15 ms eager)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, pixels: torch.Tensor) -> EncoderOutput:
        pooled, tokens = self.session.run(["pooled", "tokens"], {
            "pixels": np.ascontiguousarray(pixels.float().numpy())})
        tokens = torch.from_numpy(tokens)
        return EncoderOutput(torch.from_numpy(pooled), tokens,
                             torch.ones(tokens.shape[:2], dtype=torch.bool))


def export_image_graph(encoder: Encoder, path: Path) -> None:
    """Write the encoder's graph to ``path`` atomically (a killed export leaves nothing)."""
    size = encoder.transform.size
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_ImageGraph(encoder.eval()), (torch.zeros(2, 3, size, size),),
                          str(partial), input_names=["pixels"], output_names=["pooled", "tokens"],
                          dynamic_axes={"pixels": {0: "batch"}, "pooled": {0: "batch"},
                                        "tokens": {0: "batch"}},
                          opset_version=17, dynamo=False)
    os.replace(partial, path)
