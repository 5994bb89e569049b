"""Bring your own vision backbone: a local Hugging Face folder as the image encoder
(``hf:DIR``), against the folder's own model on real decoded images of uneven sizes. The
folders are tiny random models made here: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clip_folder, make_rows, uneven_images, vit_folder
from PIL import Image

from mmfuse import Config, DataConfig, EncoderConfig, ModelConfig, Predictor, TrainConfig
from mmfuse.data.images import open_image
from mmfuse.encoders import create_encoder
from mmfuse.errors import ConfigError
from mmfuse.features.cache import FeatureCache


def own_features(folder: Path, paths: list[str]) -> torch.Tensor:
    """The folder's own processor and model, untouched: (N, D) pooled (CLIP: projected)."""
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths],
                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=pixels)
            return out.pooler_output if hasattr(out, "pooler_output") else out
        return model(pixel_values=pixels).pooler_output


@pytest.mark.parametrize("make", [vit_folder, clip_folder], ids=["vit", "clip"])
def test_features_equal_the_folders_own_model(tmp_path: Path, make) -> None:
    folder = make(tmp_path / "model")
    paths = uneven_images(tmp_path, (20, 47, 90))
    encoder = create_encoder("image", EncoderConfig(f"hf:{folder}"))
    assert encoder.frozen and encoder.transform.size == 32
    table = FeatureCache(tmp_path / "cache").table(encoder, paths, with_tokens=True)
    got = table.fetch(torch.arange(len(paths)))
    torch.testing.assert_close(got["pooled"], own_features(folder, paths), atol=1e-5, rtol=1e-4)
    assert got["tokens"].shape[-1] == encoder.output_dim  # tokens in the pooled feature's space
    assert "ViTImageProcessor" in encoder.cache_key or "CLIPImageProcessor" in encoder.cache_key


def config(tmp_path: Path, image_encoder: EncoderConfig) -> Config:
    return Config(data=DataConfig(image_cols=["image"], text_cols=["caption"], label_col="label"),
                  model=ModelConfig(image_encoder=image_encoder,
                                    text_encoder=EncoderConfig("ngram", options={"dim": 8,
                                                                                 "buckets": 512}),
                                    hidden_dim=16),
                  train=TrainConfig(epochs=3, num_workers=0, batch_size=16),
                  cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "fine-tuned"])
def test_a_run_with_a_folder_encoder_trains_saves_and_reloads(tmp_path: Path, frozen: bool
                                                               ) -> None:
    folder = vit_folder(tmp_path / "vit")
    make_rows(tmp_path, 40, seed=1).to_csv(tmp_path / "train.csv", index=False)
    make_rows(tmp_path, 12, seed=2).to_csv(tmp_path / "test.csv", index=False)
    cfg = config(tmp_path, EncoderConfig(f"hf:{folder}", frozen=frozen))
    fitted = Predictor(cfg).fit(tmp_path / "train.csv", run_dir=tmp_path / "run")
    assert fitted.model_.encoder_for("image").frozen is frozen
    loaded = Predictor.load(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(tmp_path / "test.csv").to_numpy(),
                               fitted.predict_proba(tmp_path / "test.csv").to_numpy(), atol=1e-5)
    # served one item at a time (encoders run live): the same numbers
    test = make_rows(tmp_path, 12, seed=2)
    item = {"image": open_image(tmp_path / test["image"][0]), "caption": test["caption"][0]}
    served = loaded.fitted_.predict_items([item])[0][0]
    np.testing.assert_allclose(served, loaded.predict_proba(tmp_path / "test.csv").to_numpy()[0],
                               atol=1e-4)


def test_a_hub_id_missing_from_the_local_cache_says_how_to_download_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_csv: Path) -> None:
    from test_cli import cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match="huggingface-cli download google/vit-base"):
        create_encoder("image", EncoderConfig("hf:google/vit-base"))
    # in auto mode too: refused before any work, not skipped by the search
    code, output = cli("train", "--data", str(tiny_csv), "--out", str(tmp_path / "run"),
                       "--image-col", "image", "--text-col", "caption",
                       "--image-encoder", "hf:google/vit-base", "--time-limit", "30")
    assert code == 2 and "huggingface-cli download google/vit-base" in output
    assert not (tmp_path / "run" / "leaderboard.json").exists()
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        create_encoder("image", EncoderConfig(f"hf:{tmp_path}"))


def test_a_folder_with_pickled_weights_or_stored_code_is_refused(tmp_path: Path) -> None:
    import json

    folder = vit_folder(tmp_path / "vit")
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="pickled pytorch_model.bin is never read"):
        create_encoder("image", EncoderConfig(f"hf:{folder}"))
    settings = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**settings, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ConfigError, match="never runs code"):
        create_encoder("image", EncoderConfig(f"hf:{folder}"))


def test_an_encoder_flag_alone_keeps_auto_mode_on_with_that_encoder(tmp_path: Path,
                                                                  tiny_csv: Path) -> None:
    """`--image-encoder hf:DIR` names the image encoder, not the model: auto mode searches
    with it in place of the packaged one, and the linear members read its frozen features."""
    from test_cli import cli, train_auto_fast

    from mmfuse.auto.leaderboard import read_leaderboard

    folder = vit_folder(tmp_path / "vit")
    run = train_auto_fast(tmp_path, tiny_csv, "--image-encoder", f"hf:{folder}")
    board = read_leaderboard(run)
    tried = {r.candidate for r in board["rows"]}
    assert f"image: hf:{folder}" in tried and "image: efficientnet-lite0" not in tried
    assert any(name.startswith("member: ") and "hf:" in name for name in tried), tried
    assert "frozen_features_s" in board
    code, output = cli("predict", str(run), "--data", str(tiny_csv),
                       "--output", str(tmp_path / "p.csv"))
    assert code == 0, output
