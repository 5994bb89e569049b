"""Every benchmark module runs on a few items (``--smoke``), so a refactor cannot break
`make bench` unnoticed. They assert what each computes, never how fast it was; smoke runs
write no result file."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import (
    auto,
    encode,
    fusions,
    predict_memory,
    quality,
    retrieval,
    serve_load,
    speed,
    tabular,
    train_memory,
)
from benchmarks.common import RESULTS
from mmfuse.encoders.fast_path import MAX_COSINE_GAP, bf16_capable

MODULES = {"auto": auto, "encode": encode, "fusions": fusions, "predict_memory": predict_memory,
           "quality": quality, "retrieval": retrieval, "serve_load": serve_load, "speed": speed,
           "tabular": tabular, "train_memory": train_memory}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each smoke run starts on an empty feature cache of its own."""
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))


def test_every_benchmark_module_has_a_smoke_test() -> None:
    modules = {p.stem for p in Path(auto.__file__).parent.glob("*.py")} - {
        "__init__", "common", "datasets", "tabular_data"}
    assert modules == set(MODULES)


def test_the_encode_benchmark_runs_and_its_paths_give_equal_features() -> None:
    result = encode.main(["--smoke"])
    assert result["max_cosine_gap"] <= MAX_COSINE_GAP
    assert {m["path"] for m in result["image"].values()} == {"onnxruntime"}
    assert {m["path"] for m in result["text"].values()} == {
        "bfloat16" if bf16_capable() else "eager"}
    assert set(result["cold_cache_s"]) == {"text", "image"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODULES) - {"encode"}))
def test_a_benchmark_runs_on_a_few_rows_and_writes_nothing(name: str) -> None:
    written = {p: p.stat().st_mtime for p in RESULTS.glob("*.json")}
    result = MODULES[name].main(["--smoke"])
    assert isinstance(result, dict) and result
    assert {p: p.stat().st_mtime for p in RESULTS.glob("*.json")} == written
    checks = {
        "auto": lambda r: r["sets"]["easy-vqa"]["results"]["auto mode's choice"]["chosen"],
        "fusions": lambda r: r["sets"]["easy-vqa"]["runs"][0]["singles"],
        "predict_memory": lambda r: r["streamed_growth"] > 0,
        "quality": lambda r: len(r["sets"]["easy-vqa"]["results"]) >= 3,
        "retrieval": lambda r: 0 <= r["retrieval"]["t2i_r1"] <= 1,
        "serve_load": lambda r: r["errors_5xx"] == 0 and r["requests_sent"] == 12,
        "speed": lambda r: r["prediction"]["rows"] == 16 and r["memory_mb"],
        "tabular": lambda r: r["sets"]["listing"]["results"],
        "train_memory": lambda r: r["runs"][0]["rows_per_second"] > 0,
    }
    assert checks[name](result)
