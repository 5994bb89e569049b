"""`mmfuse train` and the manifest's columns: what to leave out, and what nothing reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmfuse.cli.app import out
from mmfuse.config import Config


def fit_columns_to_manifest(train_data: Any, cfg: Config, flags: dict[str, Any]) -> None:
    """Look at the manifest's first rows: a default image or text column (``image``,
    ``text``) that the table lacks and no flag named is dropped with the modality that reads
    it (a table of text and numbers needs no image column); then one line names the columns
    that nothing reads, and the flag for each."""
    import pandas as pd

    from mmfuse.data.columns import SAMPLE_ROWS, unused_column_hints
    from mmfuse.data.manifest import READERS, iter_manifest

    if isinstance(train_data, Path) and train_data.suffix.lower() in READERS \
            and train_data.is_file():
        train_data = next(iter_manifest(train_data, SAMPLE_ROWS), None)
    if not isinstance(train_data, pd.DataFrame):
        return
    for kind, other in (("image", "text"), ("text", "image")):
        chosen = flags.get(f"{kind}_cols") is not None or flags.get("modalities") is not None
        others = [c for c in getattr(cfg.data, f"{other}_cols") if c in train_data.columns]
        if chosen or getattr(cfg.data, f"{kind}_cols") != [kind] or kind in train_data.columns \
                or not others:
            continue
        setattr(cfg.data, f"{kind}_cols", [])
        cfg.model.modalities = [m for m in cfg.model.modalities if m != kind]
        out.print(f"no '{kind}' column: this run reads no {kind} (name one with --{kind}-col)")
    hints = unused_column_hints(train_data, cfg.data)
    if hints:
        out.print(f"columns not used: {'; '.join(hints)}")
