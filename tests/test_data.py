"""Built-in dataset, splits, vocabulary, config round trip."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mmfuse import Config
from mmfuse.data.builtin import DATASETS
from mmfuse.data.split import split_frame
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.errors import ConfigError


def test_easy_vqa_is_built_in_and_offline() -> None:
    dataset = DATASETS.get("easy-vqa")()
    train, test = dataset.splits["train"], dataset.splits["test"]
    assert len(train) == 38575 and len(test) == 9673
    assert train["answer"].nunique() == 13
    assert Path(train["image"].iloc[0]).exists()
    assert dataset.data.text_cols == ["question"] and dataset.data.label_col == "answer"


def test_stratified_split_is_seeded_and_keeps_class_shares() -> None:
    frame = pd.DataFrame({"y": ["a"] * 80 + ["b"] * 20})
    train, val = split_frame(frame, 0.2, seed=7, stratify_on=frame["y"])
    again, _ = split_frame(frame, 0.2, seed=7, stratify_on=frame["y"])
    assert list(train.index) == list(again.index)
    assert val["y"].value_counts().to_dict() == {"a": 16, "b": 4}


def test_split_falls_back_when_a_class_is_a_singleton() -> None:
    frame = pd.DataFrame({"y": ["a"] * 9 + ["b"]})
    train, val = split_frame(frame, 0.2, seed=0, stratify_on=frame["y"])
    assert len(train) + len(val) == 10


def test_vocabulary_word_and_char_levels() -> None:
    words = Vocabulary.build(["Hello, world!", "hello again"], level="word")
    assert words.tokens[:3] == ["<pad>", "<unk>", "hello"]
    encoded = words.encode(["hello unknown", "world"], max_length=8)
    assert encoded["input_ids"].tolist() == [[2, 1], [words.tokens.index("world"), 0]]
    assert encoded["attention_mask"].tolist() == [[1, 1], [1, 0]]
    chars = Vocabulary.build(["日本語"], level="char")
    assert Vocabulary.from_dict(chars.to_dict()).tokens == chars.tokens
    assert chars.encode([""], max_length=4)["input_ids"].tolist() == [[1]]  # never empty


def test_config_yaml_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    cfg = Config()
    cfg.model.fusion = "gated"
    cfg.model.text_encoder.options = {"level": "char"}
    cfg.to_yaml(tmp_path / "c.yaml")
    assert Config.from_yaml(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("model:\n  fusoin: gated\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in config.model: fusoin"):
        Config.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="modalities"):
        Config.from_dict({"model": {"modalities": ["audio"]}})
