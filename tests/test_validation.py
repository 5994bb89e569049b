"""The manifest validator: every problem at once, with file, row, column and a way out."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows, tiny_config
from PIL import Image

from mmfuse import EncoderConfig, Predictor
from mmfuse.data.images import ImageDecodeError, open_image
from mmfuse.data.manifest import read_manifest
from mmfuse.data.validate import validate_frame
from mmfuse.errors import DataValidationError, MmfuseError


def validate(path: Path, cfg, **kwargs):
    return validate_frame(read_manifest(path), cfg.data, cfg.model.modalities, **kwargs)


def write_bad_manifest(tmp_path: Path) -> Path:
    frame = make_rows(tmp_path, 8)
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    frame.loc[1, "image"] = "images/missing.png"
    frame.loc[2, "image"] = "images/corrupt.png"
    frame.loc[3, "caption"] = "   "
    frame.loc[4, "label"] = ""
    # a photo cut short: checked at a reduced scale, it still fails as a full decode would
    photo = tmp_path / "images" / "photo.jpg"
    Image.effect_noise((400, 300), 60).convert("RGB").save(photo, quality=90)
    (tmp_path / "images" / "cut.jpg").write_bytes(photo.read_bytes()[:-2000])
    frame.loc[5, "image"], frame.loc[6, "image"] = "images/cut.jpg", "images/photo.jpg"
    damaged = bytearray((tmp_path / frame.loc[7, "image"]).read_bytes())  # a PNG, one bit off
    damaged[len(damaged) // 2] ^= 0x10
    (tmp_path / "images" / "damaged.png").write_bytes(bytes(damaged))
    frame.loc[7, "image"] = "images/damaged.png"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def test_every_problem_reported_together_with_row_and_column(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    with pytest.raises(DataValidationError) as caught:
        validate(write_bad_manifest(tmp_path), cfg)
    message = str(caught.value)
    assert "6 problem(s)" in message
    assert "bad.csv, row 2, column 'image': image not found" in message
    assert "row 3, column 'image': cannot decode image corrupt.png" in message
    assert "row 4, column 'caption': text is empty" in message
    assert "row 5, column 'label': label is missing" in message
    assert "row 6, column 'image': cannot decode image cut.jpg" in message
    assert "row 8, column 'image': cannot decode image damaged.png" in message
    assert "--on-bad-rows skip" in message
    assert {(p.row, p.column) for p in caught.value.problems} == {
        (2, "image"), (3, "image"), (4, "caption"), (5, "label"), (6, "image"),
        (8, "image")}


def test_skip_drops_bad_rows_and_keeps_the_list(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.data.on_bad_rows = "skip"
    frame = validate(write_bad_manifest(tmp_path), cfg)
    assert len(frame) == 2
    assert sorted(frame["_row"]) == [1, 7]
    assert len(frame.attrs["skipped"]) == 6


def test_wrong_column_name_suggests_the_right_one(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.data.text_cols = ["captoin"]
    path = tmp_path / "train.csv"
    make_rows(tmp_path, 4).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="Did you mean 'caption'.*--text-col"):
        validate(path, cfg)


def test_unseen_label_at_evaluation(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    path = tmp_path / "test.csv"
    make_rows(tmp_path, 4).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="label 'no' was not seen in training"):
        validate(path, cfg, known_labels=["yes", "maybe"])


def test_missing_modality_allowed_when_asked(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.data.allow_missing = True
    frame = make_rows(tmp_path, 4)
    frame.loc[0, "caption"] = ""
    frame.loc[1, "image"] = ""
    frame.loc[2, ["image", "caption"]] = ""
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="row 3: every image and text cell"):
        validate(path, cfg)
    cfg.data.on_bad_rows = "skip"
    kept = validate(path, cfg)
    assert kept["caption"].isna().sum() == 1 and kept["image"].isna().sum() == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv"])
def test_other_manifest_formats(tmp_path: Path, suffix: str) -> None:
    frame = make_rows(tmp_path, 6)
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t", index=False)
    checked = validate(path, tiny_config(tmp_path))
    assert len(checked) == 6
    assert Path(checked["image"][0]).is_absolute() and Path(checked["image"][0]).exists()


def test_image_paths_resolve_relative_to_the_manifest(tmp_path: Path, monkeypatch) -> None:
    nested = tmp_path / "data"
    make_rows(nested, 4).to_csv(nested / "train.csv", index=False)
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    assert len(validate(nested / "train.csv", tiny_config(tmp_path))) == 4


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(MmfuseError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("?")
    with pytest.raises(MmfuseError, match="unknown extension"):
        read_manifest(tmp_path / "x.xlsx")


def test_decompression_bomb_is_rejected(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 M pixels in a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageDecodeError, match="too large"):
        open_image(path)


def test_pixel_limits_are_per_call_and_leave_pillow_alone(tmp_path: Path) -> None:
    """Concurrent decodes under different limits (validation, uploads) must not race on
    Pillow's process-wide MAX_IMAGE_PIXELS: the limit is each call's own."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200), "white").save(path)  # 60,000 pixels
    before = Image.MAX_IMAGE_PIXELS

    def decode(limit: int) -> str:
        try:
            open_image(path, max_pixels=limit)
            return "ok"
        except ImageDecodeError:
            return "too large"

    limits = [50_000, 100_000] * 50
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(decode, limits))
    assert answers == ["too large", "ok"] * 50
    assert Image.MAX_IMAGE_PIXELS == before


def test_regression_target_must_be_numeric(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    cfg.data.task = "regression"
    frame = make_rows(tmp_path, 3)
    frame["label"] = ["1.5", "abc", "2"]
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="row 2, column 'label': 'abc' is not a number"):
        validate(path, cfg)


def test_empty_manifest(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    pd.DataFrame(columns=["image", "caption", "label"]).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="no rows"):
        validate(path, tiny_config(tmp_path))


def pixels_scrambled(png: Path, out: Path) -> None:
    """A copy of ``png`` whose compressed pixel data is scrambled and whose chunk CRCs are
    then recomputed: every chunk checks out, the pixels do not decode."""
    data, chunks, at = png.read_bytes(), [], 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body = data[at + 8:at + 8 + length]
        if kind == b"IDAT":
            body = bytes(b ^ 0x5A for b in body)
        chunks.append(struct.pack(">I", len(body)) + kind + body
                      + struct.pack(">I", zlib.crc32(kind + body)))
        at += 12 + length
    out.write_bytes(data[:8] + b"".join(chunks))


def test_an_image_whose_pixels_do_not_decode_is_reported_with_its_rows_and_the_rest_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation checks a PNG's chunks, not its pixels: one whose pixel data is damaged is
    found while encoding (here in worker processes, as on a large table). Its rows are
    reported as validation reports rows, and every other image's features stay cached: a
    second run encodes only the mended one."""
    from mmfuse.features import cache, encoding

    rows = make_rows(tmp_path, 20, seed=3)
    pixels_scrambled(tmp_path / rows.loc[0, "image"], tmp_path / "images" / "scrambled.png")
    rows.loc[[4, 11], "image"] = "images/scrambled.png"  # two rows share it
    rows.to_csv(tmp_path / "train.csv", index=False)
    cfg = tiny_config(tmp_path)
    cfg.model.image_encoder = EncoderConfig("efficientnet-lite0", image_size=32)  # frozen
    cfg.train.epochs, cfg.train.num_workers = 1, 2
    monkeypatch.setattr(encoding, "MIN_ITEMS_FOR_WORKERS", 1)
    monkeypatch.setattr(encoding, "WORKERS_WORTH_S", 0.0)
    encoded, asked = cache.encoded, []
    monkeypatch.setattr(cache, "encoded", lambda encoder, values, *a, **k: (
        asked.append(len(values)) if encoder.kind == "image" else None,
        encoded(encoder, values, *a, **k))[1])
    with pytest.raises(DataValidationError) as caught:
        Predictor(cfg).fit(tmp_path / "train.csv")
    assert [(p.row, p.column) for p in caught.value.problems] == [(5, "image"), (12, "image")]
    assert "train.csv, row 5, column 'image': cannot decode image scrambled.png" in str(
        caught.value)
    distinct = rows["image"].nunique()
    Image.new("RGB", (32, 32), (250, 10, 10)).save(tmp_path / "images" / "scrambled.png")
    asked.clear()
    Predictor(cfg).fit(tmp_path / "train.csv")
    assert asked == [1] and distinct > 1  # only the mended image
