"""Auto mode's frozen features planned against the deadline (auto/frozen_features.py), on a
clock that moves as encoding would: by a cost per input that grows with the image side."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows

from mmfuse import Config, DataConfig, EncoderConfig, deadline
from mmfuse.auto.frozen_features import encode_frozen
from mmfuse.auto.portfolio import Preset
from mmfuse.data.rows import read_rows
from mmfuse.features.cache import FeatureCache

SECONDS_AT_128 = 0.5  # per image; a side S costs (S / 128)^2 of it, a text a tenth of it


def encoding_clock(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each cache table moves the clock by what encoding its new inputs costs (inputs it
    encoded before cost nothing: they are cached); returns the (encoder, inputs) it was asked
    for."""
    now, asked, encoded = [0.0], [], set()
    monkeypatch.setattr(deadline, "clock", lambda: now[0])
    table = FeatureCache.table

    def timed(self, encoder, values, *args, **kwargs):
        asked.append((encoder.preprocessing, len(values)))
        cost = (SECONDS_AT_128 * (encoder.transform.size / 128) ** 2 if encoder.kind == "image"
                else SECONDS_AT_128 / 10)
        # what the encoder reads: a cell's photos, a long text's windows (as the cache keys)
        items = {part for cell in encoder.parts_of([v for v in values if v is not None])
                 for part in cell}
        new = {(encoder.cache_key, item) for item in items} - encoded
        encoded.update(new)
        now[0] += cost * len(new)
        return table(self, encoder, values, *args, **kwargs)

    monkeypatch.setattr(FeatureCache, "table", timed)
    return asked


def setup(tmp_path: Path, side: int, rows: int = 80) -> tuple[Preset, Config, list]:
    config = Config(data=DataConfig(image_cols=["image"], text_cols=["caption"],
                                    label_col="label"), cache_dir=str(tmp_path / "cache"))
    table = make_rows(tmp_path, rows, seed=1)
    if rows > 80:  # a rare class: three rows of it
        table.loc[table.index[[5, 400, 700]], "label"] = "maybe"
    rows = read_rows(table, config, tmp_path, base_dir=tmp_path)
    preset = Preset("test", 100, (EncoderConfig("efficientnet-lite0", image_size=side),),
                    (EncoderConfig("minilm", max_length=16),), ("concat",))
    cut = len(rows) * 3 // 4
    return preset, config, [rows.iloc[:cut], rows.iloc[cut:]]


def test_encoding_that_would_take_the_candidates_time_reads_images_at_the_smallest_side(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = encoding_clock(monkeypatch)
    preset, config, frames = setup(tmp_path, side=224)
    limit = deadline.Deadline(100)
    # 40 distinct images: about 61 s at 224 px, over 40 % of 100 s; 20 s at 128 px
    planned, read, plan = encode_frozen(preset, config, frames, FeatureCache(tmp_path / "c"),
                                        limit)
    assert planned.image_encoders[0].image_size == 128
    assert planned.text_encoders == preset.text_encoders
    assert "images at 128 px" in plan.note and "about 61 s" in plan.note
    assert plan.projected_s == pytest.approx(40 * 0.5, rel=0.05)  # at 128 px
    # every row's features computed once, at the planned side (at 224 px: the sample alone)
    assert [p.split("/")[0] for p, n in asked if n == 80 and "px" in p] == ["128px"]
    assert plan.info()["frozen_features"].startswith(f"{plan.items:,} inputs; images at 128")


def test_encoding_that_fits_keeps_the_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    encoding_clock(monkeypatch)
    preset, config, frames = setup(tmp_path, side=160)
    planned, read, plan = encode_frozen(preset, config, frames, FeatureCache(tmp_path / "c"),
                                        deadline.Deadline(1000))
    assert planned == preset and plan.note == "" and read == frames
    assert plan.projected_s == pytest.approx(40 * 0.5 * (160 / 128) ** 2, rel=0.05)
    assert plan.items == 40 + 3  # distinct images and captions


def test_long_texts_too_slow_to_encode_whole_are_read_to_their_first_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """80 distinct captions of four 16-token windows each: 320 windows, 16 s at 0.05 s; with
    the images (20 s at 128 px) over 40 % of the 80 s left. Read to their first window they
    cost 4 s, and every row is kept; the TF-IDF members still read whole texts."""
    encoding_clock(monkeypatch)
    preset, config, frames = setup(tmp_path, side=128)
    for i, frame in enumerate(frames):
        frame["caption"] = [" ".join(f"word{i}x{j}x{k}" for k in range(40))
                            for j in range(len(frame))]
    planned, read, plan = encode_frozen(preset, config, frames, FeatureCache(tmp_path / "c"),
                                        deadline.Deadline(80))
    assert [e.max_windows for e in planned.text_encoders] == [1]
    assert planned.image_encoders == preset.image_encoders
    assert "first window" in plan.note and plan.rows_read is None and read == frames
    assert plan.projected_s == pytest.approx(40 * 0.5 + 80 * 0.05, rel=0.05)


def test_encoding_too_long_even_at_the_smallest_side_reads_fewer_rows_with_every_class(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 rows over 500 images: 250 s at 128 px, over 40 % of the ~550 s left after
    measuring the rate (~220 s). The
    candidates read the rows whose new inputs fit (two rows share each image), every class
    among them, in both frames; the plan says so, and a resumed search reads the same rows."""
    encoding_clock(monkeypatch)
    preset, config, frames = setup(tmp_path, side=128, rows=1000)
    planned, read, plan = encode_frozen(preset, config, frames, FeatureCache(tmp_path / "c"),
                                        deadline.Deadline(600))
    kept = sum(len(f) for f in read)
    assert plan.rows_read == kept and 500 < kept < 1000
    assert plan.projected_s <= 0.4 * 600  # within the share
    assert set(pd.concat(read)["label"]) == {"yes", "no", "maybe"}
    assert all(set(r.index) <= set(f.index) and len(r) > 0 for r, f in zip(read, frames, strict=True))
    assert len(read[0]) / kept == pytest.approx(0.75, abs=0.05)  # each frame's share kept
    assert f"read {kept:,} of the 1,000 rows" in plan.note
    assert plan.info()["rows_read"] == kept
    again = encode_frozen(preset, config, frames, FeatureCache(tmp_path / "c"),
                          deadline.Deadline(10_000), rows_read=kept)[1]
    assert [list(r.index) for r in again] == [list(r.index) for r in read]


def test_a_search_on_a_table_too_large_to_encode_in_time_trains_on_a_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the search's candidates read the plan's rows (every class among them),
    the leaderboard and the model's metrics say how many, and the model it returns predicts
    every row of the table."""
    from test_auto import config, quick_preset

    from mmfuse.auto import AutoSearch
    from mmfuse.auto.leaderboard import read_leaderboard

    encoding_clock(monkeypatch)  # 0.5 s an image at 128 px: 32 px here, 1/16 of it
    table = make_rows(tmp_path, 1200, seed=2)
    table.loc[table.index[[3, 500, 900]], "label"] = "maybe"
    table.to_csv(tmp_path / "train.csv", index=False)
    auto = AutoSearch(config(tmp_path, "caption"), quick_preset(40, folds=3))
    predictor = auto.fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    kept = auto.encoding_.rows_read
    assert kept is not None and 500 <= kept < 1200
    assert len(auto.train_rows) + len(auto.val_rows) == kept
    assert set(pd.concat([auto.train_rows, auto.val_rows])["label"]) == {"yes", "no", "maybe"}
    assert read_leaderboard(tmp_path / "run")["rows_read"] == kept
    assert predictor.metrics_["auto"]["rows_read"] == kept
    assert len(predictor.predict(tmp_path / "train.csv")) == 1200
    # encoding done, the clock stands still: every network ran its three folds
    assert all(r.folds == 3 for r in auto.leaderboard_ if r.model is not None and r.scored)
