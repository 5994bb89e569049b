"""Recall@K and ranks for cross-modal retrieval, with several captions per image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

KS = (1, 5, 10)


def _ranks(similarity: torch.Tensor, relevant: list[list[int]]) -> np.ndarray:
    """1-based rank of the best-ranked relevant item per query. similarity (Q, N)."""
    ranks = np.empty(len(relevant), dtype=np.int64)
    for start in range(0, similarity.shape[0], 1024):  # chunks bound the (Q, N) sort
        order = similarity[start:start + 1024].argsort(dim=1, descending=True)
        position = torch.empty_like(order)
        position.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        for row in range(order.shape[0]):
            ranks[start + row] = int(position[row, relevant[start + row]].min()) + 1
    return ranks


def retrieval_metrics(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, pairs: list[tuple[int, int]]
) -> dict[str, Any]:
    """Distinct images (I, E) and distinct texts (T, E); ``pairs`` says which text describes
    which image. A query's relevant items are all it is paired with: an image with several
    captions, and a caption shared by several images (identical texts are one text), so ties
    between equal items never count as misses. ``random`` holds chance-level Recall@K."""
    captions: list[list[int]] = [[] for _ in range(image_embeddings.shape[0])]
    images_of: list[list[int]] = [[] for _ in range(text_embeddings.shape[0])]
    for image, text in sorted(set(pairs)):
        captions[image].append(text)
        images_of[text].append(image)
    similarity = text_embeddings @ image_embeddings.T  # (T, I)
    t2i = _ranks(similarity, images_of)
    i2t = _ranks(similarity.T.contiguous(), captions)
    result: dict[str, Any] = {"random": {}}
    for name, ranks, gallery, relevant in (("t2i", t2i, image_embeddings.shape[0], images_of),
                                           ("i2t", i2t, text_embeddings.shape[0], captions)):
        for k in KS:
            result[f"{name}_r{k}"] = float((ranks <= k).mean())
            result["random"][f"{name}_r{k}"] = _chance(gallery, [len(r) for r in relevant], k)
        result[f"{name}_median_rank"] = float(np.median(ranks))
        result[f"{name}_mean_rank"] = float(ranks.mean())
    result["mean_recall"] = float(np.mean([result[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in KS]))
    result["n_images"], result["n_texts"] = int(image_embeddings.shape[0]), int(len(images_of))
    return result


def _chance(gallery: int, relevant: list[int], k: int) -> float:
    """Expected Recall@k of a random ranking: 1 - P(no relevant item in the top k)."""
    def miss(r: int) -> float:
        return float(np.prod([(gallery - r - i) / (gallery - i) for i in range(min(k, gallery - r))]))

    return float(np.mean([1.0 - miss(r) for r in relevant]))
