"""Several photos in one image cell: a listing's 1-8 pictures of one item.

A manifest writes them as a JSON list (``["a.jpg", "b.jpg"]``) or separated by ``;``
(``a.jpg;b.jpg``). Validated rows keep one string per cell, the absolute paths joined by
``PHOTO_SEP`` (a newline, which no path in a manifest holds), so that a cell stays one
hashable value for the feature cache and for pandas; ``photos(cell)`` splits it again. A cell
of one photo is its path, as before.
"""

from __future__ import annotations

import json
from typing import Any

PHOTO_SEP = "\n"
MAX_PHOTOS = 16  # per cell: more is refused (a cell is one item's pictures, not a folder)


def parse_photos(value: Any) -> list[str]:
    """A manifest cell -> its photo paths as written; ValueError when it cannot be read."""
    if isinstance(value, list | tuple):
        paths = [str(v).strip() for v in value]
    else:
        text = str(value).strip()
        if text.startswith("["):
            try:
                listed = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"the cell starts like a JSON list but is not one ({error.msg})"
                                 ) from error
            if not isinstance(listed, list):
                raise ValueError("the JSON in the cell is not a list of paths")
            paths = [str(v).strip() for v in listed]
        else:
            paths = [part.strip() for part in text.split(";")]
    paths = [p for p in paths if p]
    if len(paths) > MAX_PHOTOS:
        raise ValueError(f"{len(paths)} photos in one cell; at most {MAX_PHOTOS} are read")
    return paths


def photos(cell: str) -> list[str]:
    """A validated cell -> its absolute photo paths (one or several)."""
    return cell.split(PHOTO_SEP)


def joined(paths: list[str]) -> str:
    """Absolute photo paths -> one validated cell."""
    return PHOTO_SEP.join(paths)
