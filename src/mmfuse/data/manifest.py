"""Reading manifests (CSV, TSV, JSONL, Parquet) into a DataFrame that remembers where it came from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmfuse.errors import MmfuseError

# Keyword arguments pass through: ``chunksize=N`` makes the text readers iterate in chunks.
READERS = {
    ".csv": lambda p, **kw: pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""], **kw),
    ".tsv": lambda p, **kw: pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False,
                                        na_values=[""], **kw),
    ".jsonl": lambda p, **kw: pd.read_json(p, lines=True, dtype=False, **kw),
    ".parquet": pd.read_parquet,
}


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest; ``df.attrs`` keeps ``source`` (for messages) and ``base_dir``.

    Image paths in the manifest are resolved relative to ``base_dir``, the manifest's folder.
    """
    path = _checked(Path(path))
    try:
        frame = READERS[path.suffix.lower()](path)
    except Exception as error:  # pandas raises many types; the user needs the file and reason
        raise MmfuseError(f"cannot parse {path}: {error}") from error
    _unique_columns(_header(path), str(path))
    frame.attrs["source"] = str(path)
    frame.attrs["base_dir"] = str(path.resolve().parent)
    return frame


def iter_manifest(
    data: pd.DataFrame | str | Path, chunk_rows: int, base_dir: str | Path | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of a manifest (or DataFrame) in chunks of ``chunk_rows``, never all at once.

    Each chunk's ``attrs`` hold ``source``, ``base_dir`` and ``first_row`` (rows before it), so
    problems are reported with their row number in the whole file.
    """
    if isinstance(data, pd.DataFrame):
        frame = as_frame(data, base_dir)
        chunks: Iterable[pd.DataFrame] = (
            frame.iloc[start:start + chunk_rows] for start in range(0, len(frame), chunk_rows))
        source, folder = frame.attrs["source"], frame.attrs["base_dir"]
    else:
        path = _checked(Path(data))
        _unique_columns(_header(path), str(path))
        source, folder = str(path), str(path.resolve().parent)
        chunks = _chunk_reader(path, chunk_rows)
    first_row = 0
    try:
        for chunk in chunks:
            chunk = chunk.reset_index(drop=True)
            chunk.attrs.update(source=source, base_dir=folder, first_row=first_row)
            first_row += len(chunk)
            yield chunk
    except (ValueError, OSError, pa.ArrowException) as error:
        raise MmfuseError(f"cannot parse {source} after row {first_row}: {error}") from error


def _chunk_reader(path: Path, chunk_rows: int) -> Iterable[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":  # read_parquet has no chunksize: pyarrow reads record batches
        return (batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(chunk_rows))
    return READERS[suffix](path, chunksize=chunk_rows)


def _header(path: Path) -> list[str]:
    """The column names as written: pandas renames a repeated CSV column ("name.1")."""
    if path.suffix.lower() not in (".csv", ".tsv"):
        return []
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0].tolist()
    except (ValueError, IndexError, OSError):  # an empty file: read_csv has said so already
        return []


def _unique_columns(columns: list, source: str) -> None:
    repeated = sorted({str(c) for c in columns if list(columns).count(c) > 1})
    if repeated:
        raise MmfuseError(f"{source}: the column name(s) {repeated} appear more than once in the "
                          "header; give every column its own name")


def _checked(path: Path) -> Path:
    if not path.exists():
        raise MmfuseError(f"manifest not found: {path}")
    if path.suffix.lower() not in READERS:
        raise MmfuseError(
            f"cannot read {path}: unknown extension '{path.suffix}'. "
            f"Use one of {', '.join(READERS)}."
        )
    return path


def as_frame(data: pd.DataFrame | str | Path, base_dir: str | Path | None = None) -> pd.DataFrame:
    """Accept a DataFrame or a manifest path; a DataFrame's relative paths resolve from ``base_dir``."""
    if isinstance(data, pd.DataFrame):
        _unique_columns(list(data.columns), data.attrs.get("source", "<DataFrame>"))
        frame = data.copy()
        frame.attrs.setdefault("source", data.attrs.get("source", "<DataFrame>"))
        frame.attrs["base_dir"] = str(base_dir or data.attrs.get("base_dir") or Path.cwd())
        return frame
    return read_manifest(data)
