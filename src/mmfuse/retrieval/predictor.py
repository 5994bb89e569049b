"""Cross-modal retrieval: train a dual encoder, evaluate Recall@K, embed, search, zero-shot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfuse.data.batches import MultimodalDataset
from mmfuse.data.manifest import as_frame
from mmfuse.data.shards import is_shard_spec, read_shards
from mmfuse.data.validate import cells, validate_frame
from mmfuse.encoders import create_encoder
from mmfuse.encoders.base import file_fingerprint
from mmfuse.errors import ConfigError, MmfuseError
from mmfuse.predictor import Data, Predictor
from mmfuse.progress import make_progress
from mmfuse.retrieval.dual_encoder import DualEncoder
from mmfuse.retrieval.index import EmbeddingIndex
from mmfuse.retrieval.metrics import retrieval_metrics
from mmfuse.tasks import get_task
from mmfuse.training.feature_cache import make_dataset
from mmfuse.training.inference import make_loader
from mmfuse.training.trainer import BEST_FILE

CHUNK = 4096  # rows embedded at a time: memory stays bounded for any collection size
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class RetrievalPredictor(Predictor):
    """A dual encoder trained with symmetric InfoNCE on a table of (image, caption) pairs.

    ``fit`` (from Predictor) trains; ``evaluate`` gives Recall@1/5/10 and ranks both ways;
    ``embed_images``/``embed_texts`` give unit vectors; ``index``/``search`` and
    ``zero_shot`` use the shared space. Classification methods do not apply.
    """

    @property
    def image_col(self) -> str:
        return self.config.data.image_cols[0]

    @property
    def text_col(self) -> str:
        return self.config.data.text_cols[0]

    # hooks of Predictor.fit -------------------------------------------------
    def _fit_classes(self, frame: pd.DataFrame) -> None:
        return None

    def _n_outputs(self) -> int:
        return 0

    def _head_options(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {}

    def _build_model(self, n_outputs: int, head_options: dict[str, Any]) -> DualEncoder:
        model_cfg = self.config.model
        encoders = {
            "image": create_encoder("image", model_cfg.image_encoder),
            "text": create_encoder("text", model_cfg.text_encoder, vocabulary=self.vocabulary_),
        }
        return DualEncoder(encoders, self.image_col, self.text_col, model_cfg.hidden_dim,
                           model_cfg.dropout)

    def _targets(self, frame: pd.DataFrame) -> torch.Tensor:
        """(N, 2): which image and which text each pair has (pairs sharing one are not negatives)."""
        images = pd.factorize(frame[self.image_col])[0]
        texts = pd.factorize(frame[self.text_col])[0]
        return torch.tensor(np.stack([images, texts], axis=1), dtype=torch.long)

    def _dataset(
        self, frame: pd.DataFrame, with_targets: bool = True, use_cache: bool = True
    ) -> MultimodalDataset:
        frame = frame.assign(_target=0)  # every row is a true pair
        return super()._dataset(frame, with_targets, use_cache)

    def _score(self, model: Any, frame: pd.DataFrame, dataset: Any = None) -> dict[str, Any]:
        image_of_row, images = pd.factorize(frame[self.image_col])
        text_of_row, texts = pd.factorize(frame[self.text_col])
        image_vectors = self._embed(model, "image", list(images))
        text_vectors = self._embed(model, "text", list(texts))
        pairs = list(zip(image_of_row.tolist(), text_of_row.tolist(), strict=True))
        return retrieval_metrics(image_vectors, text_vectors, pairs)

    # embedding --------------------------------------------------------------
    @torch.inference_mode()
    def _embed(self, model: DualEncoder, kind: str, values: list[str]) -> torch.Tensor:
        """(N, E) unit vectors of image paths or texts."""
        chunks = list(self._embed_chunks(model, kind, values))
        return torch.cat(chunks) if chunks else torch.zeros(0, model.embed_dim)

    def _embed_chunks(self, model: DualEncoder, kind: str, values: list[str]) -> Iterator[torch.Tensor]:
        """(n, E) unit vectors, ``CHUNK`` values at a time, with a progress bar."""
        was_training = model.training
        model.eval()
        column = self.image_col if kind == "image" else self.text_col
        encoder = model.encoders[kind]
        with make_progress() as progress:
            task = progress.add_task(f"Embedding {kind}s", total=len(values), status="")
            for start in range(0, len(values), CHUNK):
                chunk = pd.DataFrame({column: values[start:start + CHUNK]})
                dataset = make_dataset(chunk, {column: encoder}, self._cache(), False)  # type: ignore[dict-item]
                out = []
                for batch, _ in make_loader(dataset, 256, self.config.train.num_workers):
                    out.append(model.embed(kind, batch[column]))
                    progress.advance(task, len(batch[column]["present"]))
                yield torch.cat(out)
        model.train(was_training)

    def embed_images(self, paths: list[str | Path]) -> torch.Tensor:
        self._check_fitted()
        return self._embed(self.model_, "image", [str(Path(p).resolve()) for p in paths])

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self._check_fitted()
        return self._embed(self.model_, "text", _non_empty(texts))

    # index, search, zero-shot -------------------------------------------------
    def fingerprint(self) -> str:
        if not hasattr(self, "source_dir_"):
            raise MmfuseError("save or load the model first: an index must point at a saved model")
        return file_fingerprint(Path(self.source_dir_) / BEST_FILE)

    def index_images(self, paths: list[str | Path]) -> EmbeddingIndex:
        """Embed images (validated first: an unreadable file is reported, not skipped)."""
        items = self._index_items(paths)
        return EmbeddingIndex(self._embed(self.model_, "image", items), items, "image",
                              str(self.source_dir_), self.fingerprint())

    def index_texts(self, texts: list[str]) -> EmbeddingIndex:
        return EmbeddingIndex(self.embed_texts(texts), list(texts), "text",
                              str(self.source_dir_), self.fingerprint())

    def write_index(self, kind: str, values: list[str | Path] | list[str], out: str | Path) -> int:
        """Like ``index_images``/``index_texts``, but streamed to the folder ``out`` chunk by
        chunk (memory holds one chunk, whatever the collection's size). Returns the count."""
        self._check_fitted()
        items = self._index_items(values) if kind == "image" else _non_empty(values)
        EmbeddingIndex.write(out, self._embed_chunks(self.model_, kind, items), items, kind,
                             str(self.source_dir_), self.fingerprint())
        return len(items)

    def _index_items(self, paths: list[str | Path] | list[str]) -> list[str]:
        return cells(self._read_images(pd.DataFrame({self.image_col: [str(p) for p in paths]})),
                     self.image_col)

    def _read_images(self, data: Data, base_dir: str | Path | None = None) -> pd.DataFrame:
        """Validated rows of a manifest of images: other columns (captions, labels) ignored."""
        if is_shard_spec(data):
            data = read_shards(data, self.config.data, self._shard_dir(data))
        return validate_frame(as_frame(data, base_dir), self.config.data, ["image"],
                              require_labels=False)

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
        images = self._embed(self.model_, "image", cells(frame, self.image_col))
        prompts = self.embed_texts([template.format(label) for label in labels])
        scale = float(self.model_.head.scale().detach())
        probabilities = (scale * images @ prompts.T).softmax(-1).numpy()  # (N, labels)
        out = pd.DataFrame({"row": frame["_row"].to_numpy(),
                            "prediction": np.asarray(labels, dtype=object)[probabilities.argmax(1)]})
        for i, label in enumerate(labels):
            out[f"p_{label}"] = probabilities[:, i]
        return out

    # not applicable -----------------------------------------------------------
    def predict(self, *args: Any, **kwargs: Any) -> Any:
        get_task("retrieval").require_class_scores("predict")

    predict_proba = predict_frame = predict_to_csv = predict  # type: ignore[assignment]

    def save(self, directory: str | Path) -> Path:
        path = super().save(directory)
        self.source_dir_ = str(Path(path).resolve())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> RetrievalPredictor:
        predictor = super().load(directory)
        predictor.source_dir_ = str(Path(directory).resolve())
        return predictor  # type: ignore[return-value]


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
