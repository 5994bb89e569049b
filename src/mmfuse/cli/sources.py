"""What a --data argument names: a manifest, tar shards or a built-in split."""

from __future__ import annotations

from pathlib import Path

from mmfuse.errors import ConfigError


def dataset_or_path(value: str | Path | None):
    """A manifest path, tar shards (``shards/{000..009}.tar``, ``pipe:...``), or a built-in
    split named ``dataset:split`` (e.g. ``easy-vqa:test``)."""
    from mmfuse.data.shards import is_shard_spec

    if value is None or is_shard_spec(value):
        return value
    value = Path(value)
    if value.exists() or ":" not in str(value):
        return value
    from mmfuse.data.builtin import DATASETS

    name, split = str(value).split(":", 1)
    if name not in DATASETS:
        return value  # not a built-in: let the reader report the missing file
    splits = DATASETS.get(name)().splits
    if split not in splits:
        raise ConfigError(f"{name} has splits {', '.join(splits)}, not '{split}'")
    return splits[split]
