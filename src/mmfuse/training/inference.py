"""Running a model over a dataset in batches (no gradients)."""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from mmfuse.data.batches import MultimodalDataset, unwrap
from mmfuse.models.multimodal import MultimodalModel
from mmfuse.training.feature_cache import worth_workers


def make_loader(
    dataset: MultimodalDataset, batch_size: int, num_workers: int, sampler=None
) -> DataLoader:
    """Batches built by ``__getitems__``; worker processes only when images must be decoded."""
    sampler = sampler if sampler is not None else SequentialSampler(dataset)
    workers = num_workers if worth_workers(dataset.needs_workers, len(dataset)) else 0
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
        collate_fn=unwrap,
        num_workers=workers,
        persistent_workers=False,
    )


@torch.inference_mode()
def run_model(
    model: MultimodalModel, dataset: MultimodalDataset, batch_size: int = 256, num_workers: int = 2
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, n_outputs) and modality weights (N, M) or None, in dataset order."""
    was_training = model.training
    model.eval()
    logits, weights = [], []
    for batch, _ in make_loader(dataset, batch_size, num_workers):
        out = model(batch)
        logits.append(out.logits)
        if out.modality_weights is not None:
            weights.append(out.modality_weights)
    model.train(was_training)
    return torch.cat(logits), (torch.cat(weights) if weights else None)
