"""Local Hugging Face model folders, read safely: only local files, never stored code, never a
pickle. A folder is named as ``hf:/path/to/folder``, or ``hf:org/name`` for a model already in
the local Hugging Face cache (nothing is downloaded: the error says how to)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mmfuse.errors import ConfigError

# ``from_pretrained`` keywords: local files only, no code from the folder
SAFE = {"local_files_only": True, "trust_remote_code": False}


def local_folder(name: str) -> Path:
    """``name`` (after ``hf:``) -> the folder holding its config.json, refused with the reason
    (and, for a hub id not in the local cache, the command that downloads it); a folder
    whose loading would run its own code is refused too."""
    transformers_offline()
    path = Path(name).expanduser()
    if (path / "config.json").exists():
        refuse_stored_code(path)
        return path
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise ConfigError(f"hf:{name} is not a Hugging Face model folder (no config.json there)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as error:
        raise ConfigError(
            f"hf:{name} is neither a local folder nor in the local Hugging Face cache, and "
            f"mmfuse never downloads. Download it once, where there is a network: "
            f"`huggingface-cli download {name} --local-dir DIR`, then name it as hf:DIR"
        ) from error
    refuse_stored_code(cached)
    return cached


def pairs_image_and_text(name: str) -> bool:
    """Whether ``hf:name`` is a CLIP-style folder that can read texts: an image and a text
    tower trained together (its config names both) and a tokenizer for the text one; read
    from its files without loading the weights."""
    if not name.startswith("hf:"):
        return False
    folder = local_folder(name[3:])
    settings = json.loads((folder / "config.json").read_text())
    tokenizer = any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    return (isinstance(settings, dict) and {"text_config", "vision_config"} <= settings.keys()
            and tokenizer)


def transformers_offline() -> None:
    """Before anything of Hugging Face's loads: never the hub (offline by construction), and
    none of its per-tensor loading bars (noise here)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def refuse_stored_code(folder: Path) -> None:
    """A folder whose configs map classes to its own Python files (``auto_map``) needs its
    code run to load: refuse it rather than ask, or run it."""
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = folder / name
        try:
            settings = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {path}: {error}") from error
        if isinstance(settings, dict) and "auto_map" in settings:
            raise ConfigError(
                f"{path} names custom code (auto_map); mmfuse never runs code stored with a "
                "model. Use a folder of a standard transformers architecture."
            )


def folder_fingerprint(folder: Path) -> str:
    from mmfuse.encoders.base import file_fingerprint

    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(folder.glob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(file_fingerprint(path).encode())
    return digest.hexdigest()


def load_failed(folder: Path, error: Exception, needs: str) -> ConfigError:
    return ConfigError(
        f"cannot load a Hugging Face model from {folder}: {error}. The folder must hold "
        f"config.json, the weights as model.safetensors (pickled pytorch_model.bin is never "
        f"read) and {needs}.")
