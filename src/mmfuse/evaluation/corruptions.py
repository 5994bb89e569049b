"""Image and text corruptions at severities 1-5, deterministic given a seed.

Each corruption maps (input, severity, rng) -> corrupted input. Severity 1 is mild (a user
would barely notice), 5 is harsh (the input is hard to read for a person too).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

SEVERITIES = (1, 2, 3, 4, 5)
ImageCorruption = Callable[[Image.Image, int, np.random.Generator], Image.Image]
TextCorruption = Callable[[str, int, np.random.Generator], str]
# A numeric or categorical column's cells (None: missing) -> the corrupted cells.
ColumnCorruption = Callable[[list, int, np.random.Generator], list]


def gaussian_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    sigma = (0.04, 0.08, 0.14, 0.22, 0.32)[severity - 1] * 255
    array = np.asarray(image, dtype=np.float32)
    noisy = array + rng.normal(0.0, sigma, array.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def blur(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    radius = (0.5, 1.0, 2.0, 3.0, 5.0)[severity - 1] * max(image.size) / 128
    return image.filter(ImageFilter.GaussianBlur(radius))


def jpeg(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=(60, 30, 15, 8, 3)[severity - 1])
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def occlusion(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """A grey square covering 5 % to 45 % of the image at a random place."""
    share = (0.05, 0.12, 0.2, 0.3, 0.45)[severity - 1]
    width, height = image.size
    side = int(np.sqrt(share * width * height))
    x = int(rng.integers(0, max(1, width - side)))
    y = int(rng.integers(0, max(1, height - side)))
    covered = image.copy()
    covered.paste((128, 128, 128), (x, y, x + side, y + side))
    return covered


def brightness(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance((1.3, 1.6, 2.0, 2.5, 3.2)[severity - 1])


def typos(text: str, severity: int, rng: np.random.Generator) -> str:
    """Swap, drop or repeat characters in a share of words."""
    share = (0.1, 0.2, 0.35, 0.5, 0.7)[severity - 1]
    words = text.split()
    for i, word in enumerate(words):
        if len(word) > 1 and rng.random() < share:
            j = int(rng.integers(0, len(word) - 1))
            action = rng.integers(3)
            if action == 0:
                word = word[:j] + word[j + 1] + word[j] + word[j + 2:]
            elif action == 1:
                word = word[:j] + word[j + 1:]
            else:
                word = word[:j] + word[j] + word[j:]
            words[i] = word
    return " ".join(words)


def word_dropout(text: str, severity: int, rng: np.random.Generator) -> str:
    share = (0.1, 0.2, 0.3, 0.45, 0.6)[severity - 1]
    words = text.split()
    kept = [w for w in words if rng.random() >= share]
    return " ".join(kept or words[:1])


def word_shuffle(text: str, severity: int, rng: np.random.Generator) -> str:
    """Swap neighbouring words; higher severity swaps more pairs."""
    words = text.split()
    for _ in range(severity * max(1, len(words) // 4)):
        if len(words) > 1:
            j = int(rng.integers(0, len(words) - 1))
            words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def truncation(text: str, severity: int, rng: np.random.Generator) -> str:
    words = text.split()
    keep = max(1, round(len(words) * (0.85, 0.7, 0.55, 0.4, 0.25)[severity - 1]))
    return " ".join(words[:keep])


IMAGE_CORRUPTIONS: dict[str, ImageCorruption] = {
    "gaussian_noise": gaussian_noise, "blur": blur, "jpeg": jpeg, "occlusion": occlusion,
    "brightness": brightness,
}
TEXT_CORRUPTIONS: dict[str, TextCorruption] = {
    "typos": typos, "word_dropout": word_dropout, "word_shuffle": word_shuffle,
    "truncation": truncation,
}


def blanked(cells: list, severity: int, rng: np.random.Generator) -> list:
    """A share of the cells emptied (10 % at severity 1 to 90 % at 5), as a form left half
    filled in: missing is a value the model must still read."""
    share = (0.1, 0.3, 0.5, 0.7, 0.9)[severity - 1]
    return [None if rng.random() < share else cell for cell in cells]


def shuffled(cells: list, severity: int, rng: np.random.Generator) -> list:
    """A share of the rows' cells exchanged among those rows (a join gone wrong): each
    column's values stay plausible, but no longer belong to their row."""
    share = (0.1, 0.3, 0.5, 0.7, 0.9)[severity - 1]
    out = list(cells)
    rows = np.flatnonzero(rng.random(len(cells)) < share)
    for source, target in zip(rows, rng.permutation(rows), strict=True):
        out[target] = cells[source]
    return out


TABULAR_CORRUPTIONS: dict[str, ColumnCorruption] = {"blanked": blanked, "shuffled": shuffled}
