"""WebDataset-style tar shards as a manifest: ``shards/{000000..000099}.tar``.

A sample is the files of a shard that share a key: ``0001.jpg`` (the image), ``0001.json``
(its columns, e.g. ``{"caption": ..., "label": ...}``), ``0001.txt`` (the first text column)
and ``0001.cls`` (the label). Several image columns are named in the extension:
``0001.front.jpg``, ``0001.back.jpg``. Shards are read as streams by ``webdataset`` (local
files, ``pipe:`` commands, URLs), so they may live in object storage, e.g.
``"pipe:aws s3 cp s3://bucket/shard-{000..099}.tar -"``; images are written once to a local
folder (the rest of mmfuse reads image files) and rows are yielded in chunks.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from braceexpand import braceexpand

from mmfuse.config import DataConfig
from mmfuse.errors import MmfuseError
from mmfuse.io import atomic_write_bytes

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_shard_spec(data: object) -> bool:
    """True for a tar shard, a brace pattern of shards, or a ``pipe:`` command reading one."""
    return isinstance(data, str | Path) and (
        str(data).startswith("pipe:") or str(data).endswith(TAR_SUFFIXES))


def iter_shards(
    spec: str | Path, data: DataConfig, extract_dir: Path, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Rows of the shards in ``spec`` (brace patterns expanded), ``chunk_rows`` at a time.

    Each chunk's ``attrs``: ``source`` (the spec), ``base_dir`` (where images were written) and
    ``first_row`` (samples before it), as ``iter_manifest`` gives them.
    """
    from webdataset.tariterators import tarfile_samples  # imported late: it is slow to import

    extract_dir.mkdir(parents=True, exist_ok=True)
    urls = list(braceexpand(str(spec)))
    missing = [u for u in urls if not u.startswith("pipe:") and "://" not in u and not Path(u).exists()]
    if missing:
        raise MmfuseError(f"shard not found: {missing[0]} ({len(missing)} of {len(urls)} missing)")
    rows: list[dict[str, Any]] = []
    first_row = 0
    try:
        for sample in tarfile_samples([{"url": url} for url in urls]):
            rows.append(_row(sample, data, extract_dir))
            if len(rows) == chunk_rows:
                yield _chunk(rows, spec, extract_dir, first_row)
                first_row += len(rows)
                rows = []
    except (OSError, ValueError, tarfile.TarError) as error:  # a corrupt tar, a failed pipe
        raise MmfuseError(f"cannot read shards {spec} after sample {first_row + len(rows)}: "
                          f"{error}") from error
    if rows or first_row == 0:
        yield _chunk(rows, spec, extract_dir, first_row)


def read_shards(spec: str | Path, data: DataConfig, extract_dir: Path) -> pd.DataFrame:
    """All rows of the shards at once (training needs them all; images stay on disk)."""
    chunks = list(iter_shards(spec, data, extract_dir, chunk_rows=65536))
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    frame.attrs.update(source=str(spec), base_dir=str(extract_dir), first_row=0)
    return frame


def shard_folder(cache_root: Path, spec: str | Path) -> Path:
    """Where images of these shards are written: one folder per spec, under the cache."""
    return cache_root / "shards" / hashlib.blake2b(str(spec).encode(), digest_size=8).hexdigest()


def _row(sample: dict[str, Any], data: DataConfig, extract_dir: Path) -> dict[str, Any]:
    key = sample["__key__"]
    row: dict[str, Any] = {"_key": key}
    for extension, value in sample.items():
        if extension.startswith("__"):
            continue
        *column, suffix = extension.split(".")
        if suffix.lower() in IMAGE_EXTENSIONS:
            name = ".".join(column) or (data.image_cols[0] if data.image_cols else "image")
            path = extract_dir / f"{_safe(key)}.{extension}"
            if not path.exists():
                atomic_write_bytes(path, value)
            row[name] = str(path)
        elif suffix == "json":
            row.update(json.loads(value))
        elif suffix == "txt" and data.text_cols:
            row[data.text_cols[0]] = value.decode("utf-8")
        elif suffix == "cls":
            row[data.label_col] = value.decode("utf-8").strip()
    return row


def _safe(key: str) -> str:
    return re.sub(r"[^\w.-]", "_", key)


def _chunk(rows: list[dict[str, Any]], spec: str | Path, folder: Path, first_row: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows).astype(object)
    frame = frame.where(frame.notna(), None)
    frame.attrs.update(source=str(spec), base_dir=str(folder), first_row=first_row)
    return frame
