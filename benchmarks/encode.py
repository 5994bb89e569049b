"""Frozen encoders: eager PyTorch against the fast path (encoders/fast_path.py), at equal
features, on real texts and images.

For MiniLM at 64 and 144 tokens and EfficientNet-Lite0 at 128 and 224 px:

- the encoder alone on inputs prepared beforehand: eager items/s (texts in their table order,
  batches of 64; images channels-last, batches of 16: the path before the fast one) against
  the fast path's (texts length-sorted in batches of 32 under bfloat16 where the CPU has
  bfloat16 units; images through ONNX Runtime), their ratio (``text_speedup_144``, ...) and
  the largest per-row cosine distance between the two paths' features (``max_cosine_gap``);
- the feature cache end to end, from files and strings (decoding, tokenising, hashing,
  storing), with a fresh cache each time: ``MMFUSE_FAST_PATH=0`` against the default.

Inputs: MATH-V's questions and figures with ``--math-vision DIR``, else easy-VQA's.

Run: .venv/bin/python -m benchmarks.encode [--math-vision DIR] [--items N] [--smoke]
(writes benchmarks/results/encode.json; --smoke: a few items, for the test suite, writes
nothing)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import write_result
from mmfuse import EncoderConfig
from mmfuse.data.images import open_image
from mmfuse.encoders import create_encoder
from mmfuse.encoders.fast_path import FastPath, cosine_gap
from mmfuse.features.cache import FeatureCache
from mmfuse.features.encoding import IMAGE_BATCH, TEXT_BATCH, by_length

EAGER_TEXT_BATCH = 64  # the text batch before the fast path


def inputs(math_vision: str | None, items: int) -> tuple[list[str], list[str]]:
    """Texts and image paths of a real set, ``items`` of each."""
    from benchmarks.datasets import easy_vqa
    from benchmarks.datasets import math_vision as read

    train, _, columns = read(Path(math_vision)) if math_vision else easy_vqa()
    texts = list(dict.fromkeys(train[columns["text_cols"][0]].dropna()))
    images = list(dict.fromkeys(train[columns["image_cols"][0]]))
    return texts[:items], images[:items]


def timed(run, batches: list) -> tuple[float, list]:
    run(batches[0])  # warm-up: first-call allocations
    started = time.perf_counter()
    outputs = [run(b) for b in batches]
    return time.perf_counter() - started, outputs


@torch.inference_mode()
def text_speed(texts: list[str], tokens: int) -> dict[str, float]:
    encoder = create_encoder("text", EncoderConfig("minilm", max_length=tokens, max_windows=1))
    eager_batches = [encoder.prepare(texts[i:i + EAGER_TEXT_BATCH])
                     for i in range(0, len(texts), EAGER_TEXT_BATCH)]
    order = by_length(texts)
    fast_batches = [encoder.prepare([texts[j] for j in order[i:i + TEXT_BATCH]])
                    for i in range(0, len(texts), TEXT_BATCH)]
    fast = FastPath(encoder, None)
    fast(**fast_batches[0])  # chooses and checks its path
    eager_s, eager_out = timed(lambda b: encoder(**b).pooled, eager_batches)
    fast_s, fast_out = timed(lambda b: fast(**b).pooled, fast_batches)
    reference = torch.cat(eager_out)
    got = torch.empty_like(reference)
    got[torch.as_tensor(order)] = torch.cat(fast_out)
    return {"eager_per_s": len(texts) / eager_s, "fast_per_s": len(texts) / fast_s,
            "speedup": eager_s / fast_s, "max_cosine_gap": cosine_gap(got, reference),
            "path": fast.name}


@torch.inference_mode()
def image_speed(paths: list[str], side: int) -> dict[str, float]:
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=side))
    pixels = [encoder.transform(open_image(p)) for p in paths]
    batches = [torch.stack(pixels[i:i + IMAGE_BATCH]) for i in range(0, len(paths), IMAGE_BATCH)]
    fast = FastPath(encoder, None)
    fast(pixels=batches[0])
    channels_last = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    encoder.to(memory_format=torch.channels_last)
    eager_s, eager_out = timed(lambda b: encoder(pixels=b).pooled, channels_last)
    encoder.to(memory_format=torch.contiguous_format)
    fast_s, fast_out = timed(lambda b: fast(pixels=b).pooled, batches)
    return {"eager_per_s": len(paths) / eager_s, "fast_per_s": len(paths) / fast_s,
            "speedup": eager_s / fast_s,
            "max_cosine_gap": cosine_gap(torch.cat(fast_out), torch.cat(eager_out)),
            "path": fast.name}


def cache_seconds(kind: str, config: EncoderConfig, values: list[str], fast: bool) -> float:
    """A fresh feature cache filled with ``values``' features, from files and strings."""
    os.environ["MMFUSE_FAST_PATH"] = "1" if fast else "0"
    try:
        encoder = create_encoder(kind, config)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            FeatureCache(Path(folder)).table(encoder, values, with_tokens=False)
            return time.perf_counter() - started
    finally:
        os.environ.pop("MMFUSE_FAST_PATH")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--math-vision", default=None, help="a MATH-V folder (data/, images/)")
    parser.add_argument("--items", type=int, default=512, help="texts and images measured")
    parser.add_argument("--smoke", action="store_true", help="a few items; writes nothing")
    args = parser.parse_args(argv)
    items = 8 if args.smoke else args.items
    texts, images = inputs(args.math_vision, items)
    result: dict[str, Any] = {"set": "math-vision" if args.math_vision else "easy-vqa",
                              "items": items, "text": {}, "image": {}, "cold_cache_s": {}}
    for tokens in (64, 144):
        result["text"][tokens] = measured = text_speed(texts, tokens)
        result[f"text_speedup_{tokens}"] = measured["speedup"]
        print(f"MiniLM {tokens} tokens: {measured}", flush=True)
    for side in (128, 224):
        result["image"][side] = measured = image_speed(images, side)
        result[f"image_speedup_{side}"] = measured["speedup"]
        print(f"Lite0 {side} px: {measured}", flush=True)
    result["max_cosine_gap"] = max(m["max_cosine_gap"] for kind in ("text", "image")
                                   for m in result[kind].values())
    for kind, config, values in (("text", EncoderConfig("minilm", max_length=144), texts),
                                 ("image", EncoderConfig("efficientnet-lite0", image_size=224),
                                  images)):
        eager, fast = (cache_seconds(kind, config, values, f) for f in (False, True))
        result["cold_cache_s"][kind] = {"eager": eager, "fast": fast, "speedup": eager / fast}
        print(f"cold cache, {len(values)} {kind}s: eager {eager:.1f} s, fast {fast:.1f} s",
              flush=True)
    if not args.smoke:
        print(f"wrote {write_result('encode', result)}")
    assert np.isfinite(result["max_cosine_gap"])
    return result


if __name__ == "__main__":
    main()
