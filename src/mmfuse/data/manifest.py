"""Reading manifests (CSV, TSV, JSONL, Parquet) into a DataFrame that remembers where it came from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmfuse.errors import MmfuseError

READERS = {
    ".csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""]),
    ".tsv": lambda p: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False, na_values=[""]),
    ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
    ".parquet": pd.read_parquet,
}


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest; ``df.attrs`` keeps ``source`` (for messages) and ``base_dir``.

    Image paths in the manifest are resolved relative to ``base_dir``, the manifest's folder.
    """
    path = Path(path)
    if not path.exists():
        raise MmfuseError(f"manifest not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise MmfuseError(
            f"cannot read {path}: unknown extension '{path.suffix}'. "
            f"Use one of {', '.join(READERS)}."
        )
    try:
        frame = reader(path)
    except Exception as error:  # pandas raises many types; the user needs the file and reason
        raise MmfuseError(f"cannot parse {path}: {error}") from error
    frame.attrs["source"] = str(path)
    frame.attrs["base_dir"] = str(path.resolve().parent)
    return frame


def as_frame(data: pd.DataFrame | str | Path, base_dir: str | Path | None = None) -> pd.DataFrame:
    """Accept a DataFrame or a manifest path; a DataFrame's relative paths resolve from ``base_dir``."""
    if isinstance(data, pd.DataFrame):
        frame = data.copy()
        frame.attrs.setdefault("source", data.attrs.get("source", "<DataFrame>"))
        frame.attrs["base_dir"] = str(base_dir or data.attrs.get("base_dir") or Path.cwd())
        return frame
    return read_manifest(data)
