"""The bottom layer: atomic file writes, JSON, safetensors. Imports nothing of mmfuse but errors.

Every file mmfuse writes goes through ``_atomic``: a temporary file in the same folder, then a
rename, so a kill never leaves half a file. The temporary file is created with mode 0666 less
the umask, as a plain ``open()`` would: a run folder is as readable (by a serving process under
another user, a shared group) as the user's umask says, not private to its creator.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mmfuse.errors import CheckpointError

TEMP_SUFFIX = ".tmp"


def _atomic(path: Path, write: Callable[[str], Any]) -> None:
    """Write through a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    # O_EXCL: never write through a file or link someone else put there. The mode is filtered
    # by the umask (mkstemp would force 0600).
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = stat.S_IMODE(temp.stat().st_mode)
        write(str(temp))
        os.chmod(temp, mode)  # safetensors replaces the file with one of mode 0600
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files a kill mid-write left behind in ``folder``."""
    return sorted(Path(folder).glob(f".*{TEMP_SUFFIX}"))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda temp: Path(temp).write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda temp: Path(temp).write_bytes(data))


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=float) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"missing file {path}: the checkpoint folder is incomplete") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is corrupt ({error}); re-save or retrain") from error


def save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    # clone: safetensors refuses tensors that share storage (e.g. tied weights, views)
    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    _atomic(Path(path), lambda temp: save_file(plain, temp, metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"missing weights file {path}: the checkpoint folder is incomplete")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({error}). Retrain, or resume from the run folder."
        ) from error


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({error})") from error
