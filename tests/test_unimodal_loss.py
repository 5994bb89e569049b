"""Each modality's own loss beside the fused one: what it adds to the loss, and that training
uses it when asked. What it buys is measured on real data (benchmarks/auto.py: every fusion
against the best single modality)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_rows, tiny_config
from PIL import Image

from mmfuse import Predictor
from mmfuse.errors import ConfigError
from mmfuse.features.items import items_batch
from mmfuse.fitted_model import FittedModel
from mmfuse.training import trainer


def text_says_the_label(folder: Path, n: int, seed: int):
    """The label is the colour the caption asks about; the square's own colour agrees on
    half of the rows: the image is a weak modality."""
    rows = make_rows(folder, n, seed=seed)
    rows["label"] = [c.removeprefix("is the square ").removesuffix("?") for c in rows["caption"]]
    return rows


def test_the_loss_adds_each_modality_alone_with_the_others_hidden(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, fusion="concat", dropout=0.3)
    rows = text_says_the_label(tmp_path, 12, seed=0)
    fitted = FittedModel.build(cfg.validate(), rows.assign(_target=rows["label"]))
    model = fitted.model.eval()  # exact: see below for dropout on
    items = [{"image": Image.open(tmp_path / p).convert("RGB"), "caption": c}
             for p, c in zip(rows["image"], rows["caption"], strict=True)]
    items[3]["caption"] = None  # a row that lacks its text already
    batch = items_batch({m: model.encoder_for(m) for m in model.modalities}, items)
    target = torch.tensor([fitted.classes.index(t) for t in rows["label"]])
    before = {m: inputs["present"].clone() for m, inputs in batch.items()}

    ours = trainer.with_unimodal_losses(0.5)(model, model, batch, target)
    fused = model.head.loss(model(batch).logits, target)
    alone = []
    for kept in ("caption", "image"):  # batch order: the model's sorted modalities
        hidden = {m: {**inputs, "present": inputs["present"] & (m == kept)}
                  for m, inputs in batch.items()}
        alone.append(model.head.loss(model(hidden).logits, target))
    torch.testing.assert_close(ours, fused + 0.5 * (alone[0] + alone[1]) / 2)
    assert all(torch.equal(batch[m]["present"], before[m]) for m in batch)  # not altered

    # Dropout on: the versions go through the model as one batch, so their masks are drawn
    # together and no separate pass can replay them; the loss still trains every weight.
    model.train()
    trainer.with_unimodal_losses(0.5)(model, model, batch, target).backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
    assert all(torch.equal(batch[m]["present"], before[m]) for m in batch)


def test_training_uses_them_when_asked(tmp_path: Path, monkeypatch) -> None:
    used = []
    real = trainer.with_unimodal_losses
    monkeypatch.setattr(trainer, "with_unimodal_losses",
                        lambda weight: used.append(weight) or real(weight))
    for weight, modalities in ((0.0, ["image", "text"]), (0.7, ["text"]), (0.7, ["image", "text"])):
        cfg = tiny_config(tmp_path, fusion="concat", modalities=modalities)
        cfg.train.epochs, cfg.train.unimodal_loss = 1, weight
        Predictor(cfg).fit(text_says_the_label(tmp_path, 40, seed=1), base_dir=tmp_path)
    assert used == [0.7]  # not at weight 0, not for one modality


def test_dp_sgd_refuses_a_second_forward_pass(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, fusion="concat")
    cfg.train.dp_noise_multiplier, cfg.train.unimodal_loss = 1.0, 1.0
    with pytest.raises(ConfigError, match="unimodal-loss 0"):
        Predictor(cfg).fit(text_says_the_label(tmp_path, 40, seed=4), base_dir=tmp_path)
