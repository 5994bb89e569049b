"""A frozen encoder run over many items, for the feature cache: batched (texts sorted by
length within windows, so a batch pads little), images decoded and stacked in worker
processes while the encoder computes, on the GPU where there is one, else through the
encoder's fast path (``encoders/fast_path.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, Dataset

from mmfuse.data.images import ImageDecodeError, UndecodableImages, open_image
from mmfuse.encoders.base import Encoder, forward_of
from mmfuse.encoders.fast_path import arithmetic, attach
from mmfuse.progress import make_progress

# Image batches of 16 stay in the CPU's cache (eager, channels-last: 2.7x faster per image
# than batches of 64 on 2 cores).
IMAGE_BATCH = 16
# MiniLM on length-sorted texts: batches of 16-32 go faster than 64 (benchmarks/encode.py)
TEXT_BATCH = 32
# A GPU is fed batches this many times larger: small batches leave most of it idle
GPU_BATCH_SCALE = 8
SORT_WINDOW = 1024  # texts sorted by length within windows of this many (``by_length``)
MIN_ITEMS_FOR_WORKERS = 512  # starting worker processes costs ~0.1 s: not worth it for a few rows
# Encoding a column, images are decoded in worker processes only where decoding them all here
# would take longer than this: the workers' start and their competing with the encoder for the
# cores cost more than they save on small, quickly decoded images (easy-VQA's 64 px PNGs,
# Lite0 at 128 px, 2 cores: 1,000 predicted in 2.14 s decoded here, 2.35 s in two workers;
# 4,000 encoded in 8.2 s here, 7.6 s in workers), and far less than they save on photos.
WORKERS_WORTH_S = 0.5
DECODE_SAMPLE = 8  # images decoded (and dropped) to measure that


def worth_workers(decodes_images: bool, items: int) -> bool:
    return decodes_images and items >= MIN_ITEMS_FOR_WORKERS


class EncoderInputs(Dataset):
    """Decodes images in DataLoader workers (one that does not decode: its path and why);
    texts pass through."""

    def __init__(self, kind: str, values: list[str], encoder: Encoder) -> None:
        self.kind, self.values = kind, values
        self.transform = encoder.transform if kind == "image" else None

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> torch.Tensor | str | tuple[str, str]:
        value = self.values[index]
        if self.kind != "image":
            return value
        try:
            return self.transform(open_image(value))
        except ImageDecodeError as error:  # validation's check decodes less than this
            return value, str(error)


@dataclass
class ImageBatch:
    """A batch of decoded images: the encoder's inputs for those that decoded (None if
    none did), their positions in the batch, and the (path, why) of those that did not."""

    inputs: dict[str, torch.Tensor] | None
    decoded: list[int]
    failed: list[tuple[str, str]]


class StackImages:
    """The loader's collate for images: stacked where they are decoded (one tensor a batch
    crosses processes), the undecodable set apart."""

    def __init__(self, encoder: Encoder) -> None:
        self.prepare = encoder.prepare

    def __call__(self, items: list[torch.Tensor | tuple[str, str]]) -> ImageBatch:
        pixels = [item for item in items if isinstance(item, torch.Tensor)]
        return ImageBatch(self.prepare(pixels) if pixels else None,
                          [i for i, item in enumerate(items) if isinstance(item, torch.Tensor)],
                          [item for item in items if not isinstance(item, torch.Tensor)])


def decoding_seconds(inputs: EncoderInputs) -> float:
    """What decoding every image of ``inputs`` would take in this process, projected from
    its first ``DECODE_SAMPLE``."""
    sample = min(DECODE_SAMPLE, len(inputs))
    started = time.perf_counter()
    for index in range(sample):
        inputs[index]
    return (time.perf_counter() - started) / max(sample, 1) * len(inputs)


def by_length(texts: list[str], window: int = SORT_WINDOW) -> np.ndarray:
    """The texts' order for encoding: by length within each ``window`` of them, so that a
    batch pads little (a transformer's cost grows with its longest text) while items still
    reach the shards near their place in the table (``FeatureCache._table``)."""
    lengths = np.array([len(t) for t in texts])
    return np.concatenate([start + np.argsort(lengths[start:start + window], kind="stable")
                           for start in range(0, len(texts), window)] or [np.arange(0)])


def encoded(encoder: Encoder, values: list[str], with_tokens: bool, *, graphs: Path | None,
            batch_size: int | None = None, num_workers: int = 0
            ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(position in ``values``, {"pooled": (D,) float32, "tokens": (L, D) float16}), in the
    order the items were encoded; ``graphs``: where fast-path graphs are kept (None: a
    temporary folder). Images that do not decode are passed over and, once every other item
    is yielded, raised together (``UndecodableImages``)."""
    was_training = encoder.training
    home = next(encoder.parameters()).device
    device = torch.device("cuda") if torch.cuda.is_available() else home
    encoder.eval().to(device)  # the one-off encoding pass is the heavy part: use the GPU
    on_gpu = device.type == "cuda"
    # features keyed "bfloat16" are computed so on a GPU too (fast_path.arithmetic)
    gpu_autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=on_gpu and arithmetic(encoder) == "bfloat16")
    images = encoder.kind == "image"
    fast = attach(encoder, graphs).fast is not None and device.type == "cpu"
    # eager convolutions run faster channels-last; ONNX Runtime reads the tensor as it is
    layout = torch.channels_last if images and not fast else torch.contiguous_format
    encoder.to(memory_format=layout)
    order = np.arange(len(values)) if images else by_length(values)
    inputs = EncoderInputs(encoder.kind, [values[i] for i in order], encoder)
    workers = num_workers if num_workers and worth_workers(images, len(values)) and (
        decoding_seconds(inputs) > WORKERS_WORTH_S) else 0  # nothing timed without workers
    loader = DataLoader(
        inputs,
        batch_size=batch_size or (IMAGE_BATCH if images else TEXT_BATCH) * (
            GPU_BATCH_SCALE if on_gpu else 1),
        num_workers=workers, pin_memory=on_gpu,
        collate_fn=StackImages(encoder) if images else list,
    )
    done, failed = 0, {}
    try:
        with make_progress() as progress:
            task = progress.add_task(
                f"Encoding {encoder.kind}s ({encoder.fingerprint.split(':')[0]})",
                total=len(values), status="",
            )
            for batch in loader:
                if images:
                    failed.update(batch.failed)
                    prepared, positions = batch.inputs, batch.decoded
                    count = len(positions) + len(batch.failed)
                else:
                    prepared, count = encoder.prepare(batch), len(batch)
                    positions = list(range(count))
                if prepared is not None:
                    inputs = send_to_device(prepared, device)
                    if images:
                        inputs = {k: v.contiguous(memory_format=layout)
                                  for k, v in inputs.items()}
                    # Only the forward pass: the .to() copies above and below, made in
                    # inference mode, would be inference tensors that autograd
                    # (explanations) cannot use.
                    with torch.inference_mode(), gpu_autocast:
                        out = forward_of(encoder)(**inputs)
                    for row, position in enumerate(positions):
                        parts = {"pooled": out.pooled[row].float().cpu().clone()}
                        if with_tokens:
                            length = int(out.token_mask[row].sum())
                            parts["tokens"] = out.tokens[row, :length].half().cpu().clone()
                        yield int(order[done + position]), parts
                done += count
                progress.advance(task, count)
        if failed:
            raise UndecodableImages(failed)
    finally:
        encoder.to(home, memory_format=torch.contiguous_format).train(was_training)
