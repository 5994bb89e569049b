"""The bottom I/O layer: atomic writes that respect the umask, and run folders others can read."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import tiny_config

from mmfuse import Predictor
from mmfuse.io import atomic_write_text, stale_temporaries, write_json


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_respect_the_umask(tmp_path, umask_022) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    assert mode(tmp_path / "a.txt") == 0o644
    os.umask(0o077)
    write_json(tmp_path / "b.json", {"x": 1})
    assert mode(tmp_path / "b.json") == 0o600
    assert stale_temporaries(tmp_path) == []


def test_a_run_folder_is_readable_by_others_under_umask_022(tmp_path, tiny_csv, umask_022) -> None:
    cfg = tiny_config(tmp_path)
    cfg.train.epochs = 1
    Predictor(cfg).fit(tiny_csv, run_dir=tmp_path / "run")
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.safetensors", "config.yaml", "labels.json",
                                         "metrics.json", "history.json"}
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o644) for p in files}
