"""Benchmark modules run on a few items (``--smoke``), so a refactor cannot break `make bench`
unnoticed. They assert nothing about time."""

from __future__ import annotations

from benchmarks import encode
from mmfuse.encoders.fast_path import MAX_COSINE_GAP, bf16_capable


def test_the_encode_benchmark_runs_and_its_paths_give_equal_features() -> None:
    result = encode.main(["--smoke"])
    assert result["max_cosine_gap"] <= MAX_COSINE_GAP
    assert {m["path"] for m in result["image"].values()} == {"onnxruntime"}
    assert {m["path"] for m in result["text"].values()} == {
        "bfloat16" if bf16_capable() else "eager"}
    assert set(result["cold_cache_s"]) == {"text", "image"}
