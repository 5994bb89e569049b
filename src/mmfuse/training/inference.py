"""Running a model over a dataset in batches (no gradients)."""

from __future__ import annotations

import torch
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import gather, send_to_device

from mmfuse.features.batches import MultimodalDataset
from mmfuse.features.loaders import make_loader, read_ahead
from mmfuse.models.multimodal import MultimodalModel
from mmfuse.training.distributed import process_state


@torch.inference_mode()
def run_model(
    model: MultimodalModel, dataset: MultimodalDataset, batch_size: int = 256, num_workers: int = 2
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (N, n_outputs) and modality weights (N, M) or None, in dataset order, on CPU.

    Under ``accelerate launch`` each process runs every N-th batch and the outputs are
    gathered, so every process gets all N rows exactly once (the padding that evens out the
    last round of batches is cut off).
    """
    was_training = model.training
    model.eval()
    state = process_state()
    loader = make_loader(dataset, batch_size, num_workers)
    if state.num_processes > 1:
        loader = prepare_data_loader(loader, state.device, state.num_processes,
                                     state.process_index, put_on_device=True, even_batches=True)
    else:
        loader = read_ahead(loader)
    device = next(model.parameters()).device
    logits, weights = [], []
    for batch, _ in loader:
        out = model(send_to_device(batch, device))
        logits.append(_gathered(out.logits, state.num_processes))
        if out.modality_weights is not None:
            weights.append(_gathered(out.modality_weights, state.num_processes))
    model.train(was_training)
    n = len(dataset)
    return torch.cat(logits)[:n], (torch.cat(weights)[:n] if weights else None)


def _gathered(values: torch.Tensor, processes: int) -> torch.Tensor:
    return (gather(values) if processes > 1 else values).float().cpu()
