"""Built-in dataset, splits, vocabulary, config round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmfuse import Config
from mmfuse.data.builtin import DATASETS
from mmfuse.data.images import DECODE_SIDE, ImageTransform, open_image
from mmfuse.data.split import split_frame
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.errors import ConfigError, DataValidationError, MmfuseError


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
    assert len(val) == 2 and not set(train.index) & set(val.index)
    assert sorted([*train.index, *val.index]) == list(range(10))


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


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_predict_streams_a_manifest_in_chunks(tmp_path: Path, suffix: str) -> None:
    from conftest import make_rows, tiny_config

    from mmfuse import Predictor

    rows = make_rows(tmp_path, 50)
    predictor = Predictor(tiny_config(tmp_path)).fit(rows, base_dir=tmp_path)
    manifest = tmp_path / f"big{suffix}"
    {".csv": lambda: rows.to_csv(manifest, index=False),
     ".jsonl": lambda: rows.to_json(manifest, orient="records", lines=True),
     ".parquet": lambda: rows.to_parquet(manifest)}[suffix]()
    written = predictor.predict_to_csv(manifest, tmp_path / "out.csv", chunk_rows=16)
    streamed = pd.read_csv(tmp_path / "out.csv")
    assert written == len(streamed) == 50
    whole = predictor.predict_frame(manifest)
    assert streamed["row"].tolist() == list(range(1, 51))
    np.testing.assert_allclose(streamed["p_yes"], whole["p_yes"], atol=1e-6)
    # A bad row deep in the file is reported with its row number in the whole file.
    rows.loc[37, "image"] = "images/gone.png"
    rows.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match="row 38"):
        predictor.predict_to_csv(tmp_path / "bad.csv", tmp_path / "out2.csv", chunk_rows=16)
    assert not (tmp_path / "out2.csv").exists()  # never a half-written file


def write_shards(folder: Path, rows: pd.DataFrame, per_shard: int) -> str:
    """WebDataset layout: <key>.png + <key>.json per sample, ``per_shard`` samples a tar."""
    import io
    import json
    import tarfile

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    for shard, start in enumerate(range(0, len(rows), per_shard)):
        with tarfile.open(folder / f"shard-{shard}.tar", "w") as tar:
            for i, row in rows.iloc[start:start + per_shard].iterrows():
                add(tar, f"s{i:05d}.png", (folder / row["image"]).read_bytes())
                add(tar, f"s{i:05d}.json", json.dumps(
                    {"caption": row["caption"], "label": row["label"]}).encode())
    return str(folder / f"shard-{{0..{shard}}}.tar")


def test_tar_shards_train_and_predict_like_a_manifest(tmp_path: Path) -> None:
    from conftest import make_rows, tiny_config

    from mmfuse import Predictor

    rows = make_rows(tmp_path, 60)
    spec = write_shards(tmp_path, rows, per_shard=25)  # shards of 25, 25 and 10 samples
    predictor = Predictor(tiny_config(tmp_path)).fit(spec)
    assert len(predictor.history_) == 3
    written = predictor.predict_to_csv(spec, tmp_path / "out.csv", chunk_rows=16)
    streamed = pd.read_csv(tmp_path / "out.csv")
    assert written == 60 and streamed["row"].tolist() == list(range(1, 61))
    expected = predictor.predict_frame(rows, base_dir=tmp_path)
    np.testing.assert_allclose(streamed["p_yes"], expected["p_yes"], atol=1e-6)
    # The same rows as a CSV train the same model: same order, same images, same labels.
    rows.to_csv(tmp_path / "train.csv", index=False)
    from_csv = Predictor(tiny_config(tmp_path)).fit(tmp_path / "train.csv")
    assert [r["val_accuracy"] for r in from_csv.history_] == [
        r["val_accuracy"] for r in predictor.history_]
    np.testing.assert_allclose(from_csv.predict_frame(rows, base_dir=tmp_path)["p_yes"],
                               expected["p_yes"], atol=1e-6)
    truncated = tmp_path / "shard-1.tar"
    truncated.write_bytes(truncated.read_bytes()[:3000])  # cut inside a member
    with pytest.raises(MmfuseError, match="cannot read shards"):
        predictor.predict_to_csv(spec, tmp_path / "y.csv")
    assert not (tmp_path / "y.csv").exists()
    with pytest.raises(MmfuseError, match=r"shard not found: .*shard-3.tar \(5 of 8 missing\)"):
        predictor.predict_to_csv(str(tmp_path / "shard-{0..7}.tar"), tmp_path / "x.csv")


def test_large_jpegs_decode_at_a_reduced_scale_the_same_way_from_a_file_or_an_upload(
        tmp_path: Path) -> None:
    """A photo far larger than any encoder reads is decoded at 1/2, 1/4 or 1/8 scale with
    both sides still >= DECODE_SIDE; a PNG and a small JPEG are decoded whole; bytes (an
    upload) and a file give the same pixels."""
    rng = np.random.default_rng(0)
    side = 2 * DECODE_SIDE + 100  # 1/2 keeps both sides >= DECODE_SIDE; 1/4 would not
    photo = Image.fromarray(rng.integers(0, 256, (side, side + 300, 3), dtype=np.uint8))
    photo.save(tmp_path / "big.jpg", quality=90)
    photo.save(tmp_path / "big.png")
    photo.resize((300, 200)).save(tmp_path / "small.jpg")
    big = open_image(tmp_path / "big.jpg")
    assert big.size == ((side + 300 + 1) // 2, (side + 1) // 2) and min(big.size) >= DECODE_SIDE
    assert open_image(tmp_path / "big.png").size == (side + 300, side)
    assert open_image(tmp_path / "small.jpg").size == (300, 200)
    upload = open_image((tmp_path / "big.jpg").read_bytes())
    assert np.array_equal(np.asarray(upload), np.asarray(big))


@pytest.mark.parametrize("mean, std", [((0.5,) * 3, (0.5,) * 3),
                                       ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_image_transform_normalises_as_the_formula(mean, std) -> None:
    """(3, S, S) = (resized / 255 - mean) / std per channel, computed here in float64."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), np.uint8))
    pixels = ImageTransform(32, mean, std)(image)
    resized = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC), np.float64)
    expected = ((resized / 255 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)
    assert pixels.shape == (3, 32, 32) and pixels.is_contiguous()
    np.testing.assert_allclose(pixels.numpy(), expected, atol=1e-5)
