"""Differentially private training (DP-SGD) with opacus.

What is protected: the training rows. Each optimiser step clips every example's gradient to
``dp_max_grad_norm`` and adds Gaussian noise; batches are drawn by Poisson sampling; the RDP
accountant turns (noise, sampling rate, steps) into the (epsilon, delta) spent, so the trained
weights are (epsilon, delta)-differentially private with respect to adding or removing one
training row. Not protected: validation rows (used for early stopping and the epoch choice)
and anything derived from them; frozen pretrained encoders were never trained on user data.

Per-example gradients need layers opacus understands (Linear, LayerNorm, Embedding(Bag),
Conv, GroupNorm, ...). Settings it cannot honour are refused up front with what to change.

opacus is imported where DP-SGD is asked for: importing it takes 0.6 s, which every other
command (and ``import mmfuse``) would otherwise pay.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import DataLoader

from mmfuse.config import TrainConfig
from mmfuse.errors import ConfigError
from mmfuse.models.multimodal import MultimodalModel


def is_private(cfg: TrainConfig) -> bool:
    return cfg.dp_epsilon is not None or cfg.dp_noise_multiplier is not None


def check_supported(model: MultimodalModel, cfg: TrainConfig, processes: int) -> None:
    """Refuse, with the fix, what DP-SGD here cannot do."""
    if processes > 1:
        raise ConfigError("DP-SGD runs in one process here: drop `accelerate launch`")
    if cfg.precision not in ("auto", "no") or cfg.grad_accum != 1:
        raise ConfigError("DP-SGD needs --precision no and --grad-accum 1 (per-example "
                          "clipping happens at every step, in full precision)")
    if cfg.unimodal_loss > 0:
        raise ConfigError("DP-SGD clips the gradient of one forward pass per example: use "
                          "--unimodal-loss 0 (each modality's own loss is a second pass)")
    if cfg.imbalance == "sample":
        raise ConfigError("DP-SGD samples batches itself (Poisson sampling): use --imbalance "
                          "weight instead of sample")
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    problems = [str(e) for e in ModuleValidator.validate(trainable_part(model), strict=False)]
    for name, module in trainable_part(model).named_modules():
        direct = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if direct and type(module) not in GradSampleModule.GRAD_SAMPLERS and any(module.children()):
            problems.append(f"{name or 'model'} ({type(module).__name__}) holds weights outside "
                            "any layer")
        if direct and isinstance(module, torch.nn.EmbeddingBag):
            # opacus' EmbeddingBag sampler drops per-sample weights (TF-IDF here) and builds a
            # dense (batch, rows, dim) gradient: wrong, and far too large for hashed n-grams.
            problems.append(f"{name} (EmbeddingBag, the ngram text encoder) has no exact "
                            "per-example gradient in opacus")
    if problems:
        raise ConfigError(
            "DP-SGD cannot clip per-example gradients of this model: " + "; ".join(problems)
            + ". Use fusion concat, gated or bilinear, and frozen pretrained encoders "
            "(efficientnet-lite0, minilm or an hf: folder)"
        )


def trainable_part(model: MultimodalModel) -> torch.nn.Module:
    """What DP-SGD trains: all but the missing-modality placeholders (``placeholders_frozen``)."""
    return torch.nn.ModuleDict({"encoders": model.encoders, "fusion": model.fusion,
                                "head": model.head})


@contextmanager
def placeholders_frozen(model: MultimodalModel) -> Iterator[None]:
    """Placeholders are looked up, never called as a layer, so opacus cannot see per-example
    gradients for them: they stay as they are (zeros unless resumed) during DP training."""
    flags = [p.requires_grad for p in model.missing.parameters()]
    model.missing.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.missing.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class PrivateTraining:
    """Wraps model and optimiser for DP-SGD; ``loader`` re-samples every epoch."""

    def __init__(
        self, model: MultimodalModel, optimizer: torch.optim.Optimizer, loader: DataLoader,
        cfg: TrainConfig, history: list | None = None,
    ) -> None:
        self.cfg = cfg
        with warnings.catch_warnings():
            # "Secure RNG turned off": torch's generator, not a cryptographic one (see README).
            warnings.simplefilter("ignore")
            from opacus import PrivacyEngine

            self.engine = PrivacyEngine(accountant="rdp")
            if history:  # resumed: the steps already taken were already spent
                self.engine.accountant.history = [tuple(step) for step in history]
            if cfg.dp_epsilon is not None:
                self.module, self.optimizer, _ = self.engine.make_private_with_epsilon(
                    module=model, optimizer=optimizer, data_loader=loader,
                    target_epsilon=cfg.dp_epsilon, target_delta=cfg.dp_delta, epochs=cfg.epochs,
                    max_grad_norm=cfg.dp_max_grad_norm,
                )
            else:
                self.module, self.optimizer, _ = self.engine.make_private(
                    module=model, optimizer=optimizer, data_loader=loader,
                    noise_multiplier=cfg.dp_noise_multiplier, max_grad_norm=cfg.dp_max_grad_norm,
                )

    def loader(self, loader: DataLoader, generator: torch.Generator) -> DataLoader:
        """Poisson-sampled batches (each row in with probability batch_size / N)."""
        from opacus.data_loader import DPDataLoader

        return DPDataLoader.from_data_loader(loader, generator=generator)

    def epsilon(self) -> float:
        return float(self.engine.get_epsilon(self.cfg.dp_delta))

    def report(self) -> dict:
        return {"epsilon": self.epsilon(), "delta": self.cfg.dp_delta,
                "target_epsilon": self.cfg.dp_epsilon,
                "noise_multiplier": float(self.optimizer.noise_multiplier),
                "max_grad_norm": self.cfg.dp_max_grad_norm, "accountant": "rdp",
                "steps": sum(int(step[2]) for step in self.engine.accountant.history)}

    def history(self) -> list:
        return [list(step) for step in self.engine.accountant.history]

    def close(self) -> None:
        """Leave a plain model behind: no hooks, no per-example gradients."""
        self.module._close()
