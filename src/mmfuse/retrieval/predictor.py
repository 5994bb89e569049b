"""Cross-modal retrieval: a dual encoder's estimator, with embed, index, search, zero-shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmfuse.data.rows import Data, read_rows
from mmfuse.data.validate import cells
from mmfuse.encoders.base import file_fingerprint
from mmfuse.encoders.hf_folder import folder_fingerprint, local_folder
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.estimator import Estimator
from mmfuse.features.cache import cache_root
from mmfuse.model_folder import WEIGHTS_FILE
from mmfuse.model_kinds import embed, embed_chunks
from mmfuse.retrieval.index import EmbeddingIndex

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class RetrievalPredictor(Estimator):
    """A dual encoder trained with symmetric InfoNCE on a table of (image, caption) pairs.

    ``fit``/``evaluate`` (Recall@1/5/10 and ranks both ways) as every estimator;
    ``embed_images``/``embed_texts`` give unit vectors; ``index``/``search`` and
    ``zero_shot`` use the shared space. It ranks: it has no ``predict``.
    """

    backbone: str | None = None  # hf:DIR of a CLIP-style folder used as it is (``from_backbone``)

    @classmethod
    def from_backbone(cls, name: str) -> RetrievalPredictor:
        """A CLIP-style folder (``hf:DIR``: CLIP, SigLIP) as a ready dual encoder with its own
        towers, projections and logit scale; nothing is trained, so zero-shot, index and
        search work at once."""
        from mmfuse.config import Config, DataConfig, EncoderConfig, ModelConfig
        from mmfuse.fitted_model import FittedModel
        from mmfuse.model_kinds import kind_for

        encoder = EncoderConfig(name, frozen=True)  # both towers frozen: nothing is trained
        config = Config(data=DataConfig(image_cols=["image"], text_cols=["text"],
                                        task="retrieval"),
                        model=ModelConfig(image_encoder=encoder, text_encoder=encoder,
                                          backbone=name))
        kind = kind_for(config)
        model = kind.build(config, None, None, None)
        predictor = cls.of(FittedModel(config, kind, model.eval()))
        predictor.backbone = name
        return predictor

    @property
    def image_col(self) -> str:
        return self.config.data.image_cols[0]

    @property
    def text_col(self) -> str:
        return self.config.data.text_cols[0]

    def embed_images(self, paths: list[str | Path]) -> torch.Tensor:
        """(N, E) unit vectors."""
        return embed(self._fitted(), self.model_, "image", [str(Path(p).resolve()) for p in paths])

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(N, E) unit vectors."""
        return embed(self._fitted(), self.model_, "text", _non_empty(texts))

    # index, search, zero-shot -------------------------------------------------
    @property
    def source_dir_(self) -> str:
        """The model folder this model was saved to or loaded from (an index points at it),
        or the CLIP-style folder it is (``hf:DIR``)."""
        if self.backbone is not None:
            return self.backbone
        if self._fitted().folder is None:
            raise MmfuseError("save or load the model first: an index must point at a saved model")
        return str(Path(self.fitted_.folder).resolve())

    def fingerprint(self) -> str:
        if self.backbone is not None:
            return folder_fingerprint(local_folder(self.backbone.removeprefix("hf:")))
        return file_fingerprint(Path(self.source_dir_) / WEIGHTS_FILE)

    def index_images(self, paths: list[str | Path]) -> EmbeddingIndex:
        """Embed images (validated first: an unreadable file is reported, not skipped)."""
        items = self._index_items(paths)
        return EmbeddingIndex(embed(self._fitted(), self.model_, "image", items), items, "image",
                              str(self.source_dir_), self.fingerprint())

    def index_texts(self, texts: list[str]) -> EmbeddingIndex:
        return EmbeddingIndex(self.embed_texts(texts), list(texts), "text",
                              str(self.source_dir_), self.fingerprint())

    def write_index(self, kind: str, values: list[str | Path] | list[str], out: str | Path) -> int:
        """Like ``index_images``/``index_texts``, but streamed to the folder ``out`` chunk by
        chunk (memory holds one chunk, whatever the collection's size). Returns the count."""
        self._check_fitted()
        items = self._index_items(values) if kind == "image" else _non_empty(values)
        EmbeddingIndex.write(out, embed_chunks(self.fitted_, self.model_, kind, items), items,
                             kind=kind, model_dir=str(self.source_dir_),
                             model_fingerprint=self.fingerprint())
        return len(items)

    def _index_items(self, paths: list[str | Path] | list[str]) -> list[str]:
        return cells(self._read_images(pd.DataFrame({self.image_col: [str(p) for p in paths]})),
                     self.image_col)

    def _read_images(self, data: Data, base_dir: str | Path | None = None) -> pd.DataFrame:
        """Validated rows of a manifest of images: other columns (captions, labels) ignored."""
        return read_rows(data, self.config, cache_root(self.config.cache_dir), base_dir=base_dir,
                         require_labels=False, modalities=["image"])

    def check_index(self, index: EmbeddingIndex) -> None:
        if index.model_fingerprint != self.fingerprint():
            raise MmfuseError(
                f"this index was built by another model (fingerprint {index.model_fingerprint}, "
                f"this model {self.fingerprint()}); rebuild it with `mmfuse index`"
            )

    def zero_shot(
        self, data: Data, labels: list[str], template: str = "{}", *,
        base_dir: str | Path | None = None,
    ) -> pd.DataFrame:
        """Classify images by the nearest label prompt. Returns row, prediction, p_<label>.
        ``data`` needs only the image column (other columns are ignored)."""
        self._check_fitted()
        if len(labels) < 2:
            raise ConfigError("zero-shot needs at least two labels")
        frame = self._read_images(data, base_dir)
        images = embed(self.fitted_, self.model_, "image", cells(frame, self.image_col))
        prompts = self.embed_texts([template.format(label) for label in labels])
        scale = float(self.model_.head.scale().detach())
        probabilities = (scale * images @ prompts.T).softmax(-1).numpy()  # (N, labels)
        out = pd.DataFrame({"row": frame["_row"].to_numpy(),
                            "prediction": np.asarray(labels, dtype=object)[probabilities.argmax(1)]})
        for i, label in enumerate(labels):
            out[f"p_{label}"] = probabilities[:, i]
        return out


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), in a stable order."""
    if not folder.is_dir():
        raise MmfuseError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _non_empty(texts: list[str] | list[str | Path]) -> list[str]:
    items = [str(t) for t in texts]
    if any(not t.strip() for t in items):
        raise MmfuseError("cannot embed an empty text")
    return items
