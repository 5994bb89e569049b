"""Recall@K and ranks for cross-modal retrieval, with several captions per image."""

from __future__ import annotations

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
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, text_to_image: list[int]
) -> dict[str, float]:
    """image_embeddings (I, E) of distinct images; text_embeddings (T, E); text j shows image
    ``text_to_image[j]``. Text->image ranks the true image among all images; image->text ranks
    the best of the image's captions among all texts."""
    similarity = text_embeddings @ image_embeddings.T  # (T, I)
    t2i = _ranks(similarity, [[i] for i in text_to_image])
    captions: list[list[int]] = [[] for _ in range(image_embeddings.shape[0])]
    for text, image in enumerate(text_to_image):
        captions[image].append(text)
    i2t = _ranks(similarity.T.contiguous(), captions)
    result: dict[str, float] = {}
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k in KS:
            result[f"{name}_r{k}"] = float((ranks <= k).mean())
        result[f"{name}_median_rank"] = float(np.median(ranks))
        result[f"{name}_mean_rank"] = float(ranks.mean())
    result["mean_recall"] = float(np.mean([result[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in KS]))
    result["n_images"], result["n_texts"] = int(image_embeddings.shape[0]), int(len(text_to_image))
    return result


def random_baseline(n_images: int, n_texts: int, captions_per_image: float) -> dict[str, float]:
    """Expected Recall@K of random rankings, for comparison in reports and tests."""
    result = {}
    for k in KS:
        result[f"t2i_r{k}"] = min(1.0, k / n_images)
        # chance that at least one of c relevant captions is in the top k of n_texts
        c = captions_per_image
        result[f"i2t_r{k}"] = 1.0 - float(np.prod([(n_texts - c - i) / (n_texts - i)
                                                   for i in range(min(k, int(n_texts - c)))]))
    return result
