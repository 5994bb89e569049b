"""Late fusion's modality weights, fitted on held-out rows once its towers are trained.

Trained end to end, the weights only ever see training rows, which every tower fits well, so
a weak modality keeps a large share: on MATH-V the image kept about 0.44 against the text's
0.56, while alone it scores 0.33 out of fold and the text 0.55 (raising the weights' learning
rate 20-fold changed nothing: the towers adapt to each other instead). Late fusion weighs each
modality's decision by how it does on data it was not fitted on; the rows early stopping reads
are that data. The towers stay as trained; only the M weights (M - 1 free numbers) move.

The weights are fitted with the fused logits' sharpness free (a positive scale per modality,
then normalised). Weights that must sum to 1 cannot make over-confident towers less sure, so
the loss buys bluntness by giving the weaker, disagreeing tower more weight: on MATH-V's
out-of-fold tower logits the scales summed to about 0.7 and the image's share fell from 0.37
to 0.31, which lifted `late` from 0.546 to 0.553 out of fold (text alone 0.552; seeds 1 and 2
moved +0.001 and -0.001, emoji within 0.003). The sharpness itself is the temperature's to
set, which calibration fits afterwards."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmfuse.features.batches import MultimodalDataset
from mmfuse.models.multimodal import MultimodalModel
from mmfuse.training.inference import run_model

ALONE = 50.0  # a score this far above the others gives one modality all the weight (1 - 1e-43)


def modality_logits(model: MultimodalModel, dataset: MultimodalDataset,
                    num_workers: int) -> torch.Tensor:
    """(N, M, C) each modality's tower's logits alone, modalities in the fusion's order.

    The head is linear and the weights sum to 1, so the fused logits are the weighted average
    of these: a row without modality m gets the present one's logits in m's place, as
    the fusion's masked weights would give it."""
    scores = model.fusion.scores
    kept = scores.detach().clone()
    alone = []
    try:
        for m in range(len(kept)):
            with torch.no_grad():
                scores.copy_(torch.full_like(kept, -ALONE))
                scores[m] = ALONE
            alone.append(run_model(model, dataset, num_workers=num_workers)[0])
    finally:
        with torch.no_grad():
            scores.copy_(kept)
    return torch.stack(alone, dim=1)


def weight_scores(logits: torch.Tensor, targets: torch.Tensor,
                  loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(M,) log-scales s minimising ``loss(sum_m exp(s_m) * logits[:, m], targets)`` for
    ``logits`` (N, M, C); their softmax is the weights, the fused logits' ratio."""
    scores = torch.zeros(logits.shape[1], device=logits.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([scores], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss((scores.exp()[None, :, None] * logits).sum(1), targets)
        value.backward()
        return value

    optimizer.step(closure)
    return scores.detach()


def fit_decision_weights(model: MultimodalModel, dataset: MultimodalDataset,
                         targets: torch.Tensor, num_workers: int) -> torch.Tensor:
    """Set the late fusion's weight scores to those minimising the head's loss on
    ``dataset`` (held-out rows, ``targets``); returns the weights (M,)."""
    logits = modality_logits(model, dataset, num_workers).to(model.fusion.scores.device)
    scores = weight_scores(logits, targets.to(logits.device), model.head.loss)
    with torch.no_grad():
        model.fusion.scores.copy_(scores)
    return scores.softmax(0)
