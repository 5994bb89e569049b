"""Frozen encoders' fast path (encoders/fast_path.py) against the untouched encoder, on real
inputs of uneven lengths and sizes, through the feature cache as training and predict use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import uneven_images

from mmfuse import EncoderConfig
from mmfuse.data.images import open_image
from mmfuse.encoders import create_encoder, fast_path
from mmfuse.features.cache import FeatureCache
from mmfuse.features.encoding import by_length

TEXTS = ["a cat", "", "the quick brown fox jumps over the lazy dog " * 6, "chiffre d'affaires 2024",
         "数学题：求三角形的面积", "x " * 70, "A dog on a beach at dusk, running after a ball."]


SIZES = (20, 32, 47, 64, 90, 33, 128, 41, 56)  # image sides, none the encoder's own


def untouched(encoder, inputs: list) -> torch.Tensor:
    """(N, D) pooled features, one input at a time (no padding), in float32 eager PyTorch."""
    with torch.inference_mode():
        return torch.cat([encoder(**encoder.prepare([x])).pooled for x in inputs])


def test_text_features_through_the_cache_equal_the_untouched_encoders(tmp_path: Path) -> None:
    encoder = create_encoder("text", EncoderConfig("minilm", max_length=48, max_windows=1))
    reference = untouched(encoder, TEXTS)
    table = FeatureCache(tmp_path / "cache", batch_size=3).table(encoder, TEXTS, with_tokens=True)
    got = table.fetch(torch.arange(len(TEXTS)))
    assert encoder.fast.name == ("bfloat16" if fast_path.bf16_capable() else "eager")
    assert fast_path.cosine_gap(got["pooled"], reference) <= fast_path.MAX_COSINE_GAP
    lengths = [int(encoder.prepare([t])["attention_mask"].sum()) for t in TEXTS]
    assert got["token_mask"].sum(1).tolist() == lengths  # each text's own tokens, no padding


def test_image_features_through_the_cache_equal_the_untouched_encoders(tmp_path: Path) -> None:
    paths = uneven_images(tmp_path, SIZES)
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=64))
    reference = untouched(encoder, [encoder.transform(open_image(p)) for p in paths])
    got = FeatureCache(tmp_path / "cache").table(encoder, paths, with_tokens=False)
    assert encoder.fast.name == "onnxruntime"
    pooled = got.fetch(torch.arange(len(paths)))["pooled"]
    assert fast_path.cosine_gap(pooled, reference) <= 1e-5
    torch.testing.assert_close(pooled, reference, atol=1e-4, rtol=1e-4)
    # the graph is kept beside the cache and reused by the next run
    [graph] = (tmp_path / "cache" / "graphs").glob("*.onnx")
    written = graph.stat().st_mtime_ns
    again = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=64))
    FeatureCache(tmp_path / "cache2").table(again, paths[:3], with_tokens=False)  # no graph there
    fast_path.attach(again := create_encoder("image", EncoderConfig("efficientnet-lite0",
                                                                     image_size=64)),
                     tmp_path / "cache")
    with torch.inference_mode():
        torch.testing.assert_close(again.fast(**again.prepare([again.transform(
            open_image(paths[0]))])).pooled, reference[:1], atol=1e-4, rtol=1e-4)
    assert again.fast.name == "onnxruntime" and graph.stat().st_mtime_ns == written


def test_a_fast_path_that_differs_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setattr(fast_path, "MAX_COSINE_GAP", -1.0)  # nothing is close enough
    paths = uneven_images(tmp_path, SIZES)[:4]
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=64))
    got = FeatureCache(None).table(encoder, paths, with_tokens=False)
    assert encoder.fast.name == "eager"
    reference = untouched(encoder, [encoder.transform(open_image(p)) for p in paths])
    torch.testing.assert_close(got.fetch(torch.arange(4))["pooled"], reference, atol=1e-5,
                               rtol=1e-5)


def test_the_fast_path_can_be_turned_off_and_never_serves_gradients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mmfuse.encoders.base import forward_of

    encoder = create_encoder("text", EncoderConfig("minilm"))
    monkeypatch.setenv("MMFUSE_FAST_PATH", "0")
    assert fast_path.attach(encoder, None).fast is None
    monkeypatch.delenv("MMFUSE_FAST_PATH")
    fast_path.attach(encoder, None)
    assert forward_of(encoder) is encoder  # gradients enabled: explanations read the encoder
    with torch.no_grad():
        assert forward_of(encoder) is encoder.fast
    trained = create_encoder("image", EncoderConfig("small-cnn"))
    assert fast_path.attach(trained, None).fast is None  # a trained encoder has no fast path


def test_texts_are_encoded_by_length_within_windows() -> None:
    texts = ["ccc", "a", "bb", "dddd", "e"]
    assert by_length(texts, window=3).tolist() == [1, 2, 0, 4, 3]
    assert by_length([]).tolist() == []


def test_features_that_are_zero_in_both_paths_agree() -> None:
    zero, one = torch.zeros(2, 4), torch.ones(2, 4)
    assert fast_path.cosine_gap(zero, zero) == 0.0
    assert fast_path.cosine_gap(zero, one) == 1.0


def test_on_a_gpu_with_bfloat16_units_frozen_features_are_keyed_bfloat16(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU encoding pass computes frozen features under bfloat16 autocast where the GPU
    has it, images too: the cache keys them so, and never mixes them with float32 ones."""
    image = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=32))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: True)
    assert fast_path.arithmetic(image) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: False)
    assert fast_path.arithmetic(image) == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fast_path.arithmetic(image) == "float32"  # a CPU: images go through ONNX Runtime


@pytest.mark.parametrize("worth_s, workers", [(1e9, 0), (0.0, 2)])
def test_images_are_decoded_in_workers_only_where_decoding_them_here_would_take_long(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worth_s: float, workers: int) -> None:
    """Worker processes cost a start and compete for the cores: a column is decoded in them
    only where the projected decoding (its first images timed) outweighs that; either way
    the features are the same."""
    from mmfuse.features import encoding

    paths = uneven_images(tmp_path, SIZES)
    monkeypatch.setattr(encoding, "MIN_ITEMS_FOR_WORKERS", 1)
    monkeypatch.setattr(encoding, "WORKERS_WORTH_S", worth_s)
    loaders, loader = [], encoding.DataLoader
    monkeypatch.setattr(encoding, "DataLoader", lambda *a, **k: (
        loaders.append(k["num_workers"]), loader(*a, **k))[1])
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=64))
    reference = untouched(encoder, [encoder.transform(open_image(p)) for p in paths])
    got = FeatureCache(tmp_path / "cache", num_workers=2, batch_size=4).table(
        encoder, paths, with_tokens=False)
    assert loaders == [workers]
    torch.testing.assert_close(got.fetch(torch.arange(len(paths)))["pooled"], reference,
                               atol=1e-4, rtol=1e-4)
