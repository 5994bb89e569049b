"""Safe image decoding and the preprocessing that travels with an image encoder."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mmfuse.errors import MmfuseError

# Checked from the header, before decoding: a crafted 1 KB PNG that inflates to gigabytes is
# rejected without being decoded.
MAX_IMAGE_PIXELS = 40_000_000
MAX_FILE_BYTES = 50 * 1024 * 1024


class ImageDecodeError(MmfuseError, ValueError):
    """An image that is missing, truncated or not an image."""


class UndecodableImages(MmfuseError):
    """Images that passed validation's quick check (``check_image``) but failed to decode
    when read in full (a PNG whose chunks are intact but whose pixel data is not): ``failures``
    maps each path to why."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        shown = "; ".join(list(failures.values())[:5])
        super().__init__(f"{len(failures)} image(s) do not decode: {shown}")


class ImageTooLargeError(ImageDecodeError):
    """An image whose file or pixel count is over the limits (e.g. a decompression bomb)."""


# What ``check_image`` decodes a JPEG at: every byte is still read (a truncated or corrupt
# file fails as in a full decode), at 1/8 scale (2.6x faster on MATH-V's figures; more on
# large photos). A PNG is checked chunk by chunk against its CRCs instead of inflated (7x
# faster on easy-VQA's): a truncated or damaged file fails either way.
CHECK_SIDE = 64

# A JPEG is decoded at the smallest scale (1/2, 1/4 or 1/8, computed in the DCT: Pillow's
# ``draft``) that keeps both its sides at least this many pixels: a large photo is decoded,
# and then resized, at a fraction of the cost (MATH-V's 3,040 published figures, 224 px:
# 18.3 s -> 11.4 s on one core), and every encoder still gets more pixels than it reads
# (the packaged ones read 128-224 px; CLIP-style folders up to 384-518). One rule wherever
# an image is decoded (training, prediction, serving), so that an image's features never
# depend on the path it came by; encoders' cache keys name it (``ImageEncoder``).
DECODE_SIDE = 512


def check_image(source: str | Path) -> None:
    """Raise, saying why, where ``open_image`` would; decodes only as much as that needs."""
    open_image(source, checking=True)


def open_image(source: str | Path | bytes, max_pixels: int = MAX_IMAGE_PIXELS, *,
               checking: bool = False) -> Image.Image:
    """Decode an image (a file, or bytes as uploaded) fully into RGB, or raise saying why;
    ``checking``: only to see that it decodes (formats that can, at a reduced scale)."""
    if isinstance(source, bytes):
        size, name, stream = len(source), "upload", io.BytesIO(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as error:
            raise ImageDecodeError(f"image not found: {path}") from error
        name, stream = path.name, path
    if size > MAX_FILE_BYTES:
        raise ImageTooLargeError(f"image file is {size / 2**20:.0f} MiB, over the 50 MiB limit")
    try:
        # Pillow reads only the header here; the limit is checked per call, before decoding,
        # so threads decoding under different limits (validation, uploads) never race on
        # Pillow's process-wide MAX_IMAGE_PIXELS, which stays a backstop at its default.
        with Image.open(stream) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is too large to decode safely ({width} x {height} pixels, over the "
                    f"{max_pixels:,}-pixel limit; a decompression bomb?)")
            if checking and image.format == "PNG":
                image.verify()
                return image
            side = CHECK_SIDE if checking else DECODE_SIDE
            image.draft(image.mode, (side, side))  # formats other than JPEG: no effect
            image.load()
            return image if checking else image.convert("RGB")
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image is too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:  # its message names a Python object for bytes
        raise ImageDecodeError(f"cannot decode image {name}: not an image format Pillow "
                               "reads (JPEG, PNG, WebP, GIF, BMP, TIFF, ...)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"cannot decode image {name}: {error}") from error


@dataclass(frozen=True)
class ImageTransform:
    """Resize (whole image, no crop: shapes at the border matter) and normalise to (3, S, S)."""

    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bicubic"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        method = getattr(Image.Resampling, self.resample.upper())
        resized = image.resize((self.size, self.size), method)
        channels = torch.from_numpy(np.array(resized)).permute(2, 0, 1)  # (3, S, S) uint8
        # cast and laid out in one pass, then scaled in place: (x / 255 - mean) / std
        # folded into x * scale + shift (5x faster than in float numpy at 224 px)
        pixels = torch.empty(channels.shape, dtype=torch.float32).copy_(channels)
        std = torch.tensor(self.std).view(3, 1, 1)
        return pixels.mul_(1 / (255 * std)).add_(-torch.tensor(self.mean).view(3, 1, 1) / std)

    def describe(self) -> str:
        return f"{self.size}px/{self.resample}/mean{self.mean}/std{self.std}"
