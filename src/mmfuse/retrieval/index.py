"""A saved collection of embeddings with their items (paths or texts), searched exactly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from mmfuse.errors import CheckpointError
from mmfuse.io import load_tensors, read_json, save_tensors, write_json


@dataclass
class EmbeddingIndex:
    """``embeddings`` (N, E) unit rows; ``items`` what each row is; ``kind`` image or text;
    ``model_dir`` and ``model_fingerprint`` tie it to the model that embedded it."""

    embeddings: torch.Tensor
    items: list[str]
    kind: str
    model_dir: str
    model_fingerprint: str

    def save(self, path: str | Path) -> Path:
        return self.write(path, [self.embeddings], self.items, kind=self.kind,
                          model_dir=self.model_dir, model_fingerprint=self.model_fingerprint)

    @staticmethod
    def write(
        path: str | Path, chunks: Iterable[torch.Tensor], items: list[str], *, kind: str,
        model_dir: str, model_fingerprint: str,
    ) -> Path:
        """Write embeddings chunk by chunk (each ``(n, E)`` chunk one shard), so building an
        index of any size holds one chunk in memory. ``index.json`` is written last: a build
        killed half-way leaves a folder that ``load`` refuses rather than a short index."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "index.json").unlink(missing_ok=True)
        for stale in [*path.glob("embeddings-*.safetensors"), path / "embeddings.safetensors"]:
            stale.unlink(missing_ok=True)
        count, dim = 0, 0
        for number, chunk in enumerate(chunks):
            save_tensors(path / f"embeddings-{number:05d}.safetensors", {"embeddings": chunk})
            count, dim = count + chunk.shape[0], int(chunk.shape[1])
        if count != len(items):
            raise CheckpointError(f"{path}: {len(items)} items but {count} embeddings")
        write_json(path / "items.json", items)
        write_json(path / "index.json", {
            "kind": kind, "model_dir": model_dir, "model_fingerprint": model_fingerprint,
            "count": count, "dim": dim,
        })
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingIndex:
        path = Path(path)
        if not (path / "index.json").exists():
            raise CheckpointError(f"{path} is not an mmfuse index (no index.json); "
                                  "build one with `mmfuse index RUN --images DIR --out PATH`")
        meta = read_json(path / "index.json")
        shards = sorted(path.glob("embeddings-*.safetensors")) or [path / "embeddings.safetensors"]
        embeddings = torch.cat([load_tensors(shard)["embeddings"] for shard in shards])
        items = read_json(path / "items.json")
        if len(items) != embeddings.shape[0]:
            raise CheckpointError(f"{path}: {len(items)} items but {embeddings.shape[0]} embeddings")
        return cls(embeddings, items, meta["kind"], meta["model_dir"], meta["model_fingerprint"])

    def search(self, queries: torch.Tensor, top: int) -> list[list[tuple[str, float]]]:
        """queries (Q, E) unit rows -> per query the ``top`` items by cosine similarity."""
        if queries.shape[1] != self.embeddings.shape[1]:
            raise CheckpointError(
                f"query embeddings have {queries.shape[1]} dimensions, the index "
                f"{self.embeddings.shape[1]}: the index was built by another model"
            )
        scores, rows = (queries @ self.embeddings.T).topk(min(top, len(self.items)), dim=1)
        return [[(self.items[r], float(s)) for r, s in zip(rr.tolist(), ss.tolist(), strict=True)]
                for rr, ss in zip(rows, scores, strict=True)]
