"""What auto mode tries: presets, and the candidates each one yields for a dataset.

Single-modality candidates come first: they are cheap with cached features, they tell which
encoder reads this data best (an English text model is useless on other languages, where
n-grams shine), and they are the floor the chosen model must never fall below. The fusion
candidates then combine the best image and the best text encoder of the singles.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from mmfuse.config import Config, EncoderConfig
from mmfuse.data.photos import photos
from mmfuse.data.validate import cells
from mmfuse.errors import ConfigError
from mmfuse.tasks import get_task
from mmfuse.training.privacy import is_private


@dataclass(frozen=True)
class Preset:
    """A portfolio and a default time budget (seconds, for a laptop CPU)."""

    name: str
    time_limit: float
    image_encoders: tuple[EncoderConfig, ...]
    text_encoders: tuple[EncoderConfig, ...]
    fusions: tuple[str, ...]
    epochs: int = 30
    folds: int = 5  # k-fold validation on small data (the first fold is the holdout split)
    # On small data, with time left over, a network is fitted again on the same folds with
    # other seeds, up to this many in all (``kinds/repeats.py``); 1: never
    seeds: int = 2
    finetuned_fusions: bool = False  # may a fusion fine-tune an encoder (or only read cached)?
    # On small data fusions are regularised more than single modalities: they see more inputs
    # per row (a 1,280-d image beside a 384-d text), and the modality that fits the training
    # rows first (often the weaker image) starves the other. Dropout and each modality's own
    # loss raise fusions' out-of-fold scores on MATH-V to at least MiniLM's alone; modality
    # dropout did less. On large data the time limit, not over-fitting, holds fusions back, so
    # the regularisation is for small data only (``_regularised``).
    fusion_dropout: float = 0.3
    fusion_unimodal_loss: float = 1.0


FROZEN_LITE0 = EncoderConfig("efficientnet-lite0")
FINETUNED_LITE0 = EncoderConfig("efficientnet-lite0", frozen=False, image_size=128)
MINILM, NGRAM, GRU = EncoderConfig("minilm"), EncoderConfig("ngram"), EncoderConfig("gru")
# MiniLM trained end to end (small encoder learning rate, early stopping): what wins short
# product titles. Tried last among the single modalities, on short texts only (below).
FINETUNED_MINILM = EncoderConfig("minilm", frozen=False)
FINETUNE_MAX_TOKENS = 64  # longer texts (MATH-V's questions: 144) cost too much on 2 cores
# ... and so do more rows: measured on 2 cores, an epoch at 32 tokens takes ~5 ms a row (emoji:
# 5.6 s for 1,140 rows), so 31k easy-VQA rows would need minutes for a first epoch.
FINETUNE_MAX_ROWS = 5000

PRESETS = {
    "fast": Preset("fast", 120, (FROZEN_LITE0,), (MINILM, NGRAM), ("concat", "late"), epochs=15,
                   folds=3, seeds=1),
    "medium": Preset("medium", 180, (FROZEN_LITE0,), (MINILM, NGRAM, FINETUNED_MINILM),
                     ("concat", "late", "gated", "stack")),
    "best": Preset("best", 900, (FROZEN_LITE0, FINETUNED_LITE0),
                   (MINILM, NGRAM, GRU, FINETUNED_MINILM),
                   ("concat", "late", "gated", "stack", "cross-attention"), finetuned_fusions=True,
                   seeds=3),
}


def with_encoders(preset: Preset, image: EncoderConfig | None = None,
                  text: EncoderConfig | None = None) -> Preset:
    """The preset with the user's encoders in place of its image or text encoders; beside a
    named text encoder the n-grams stay (the TF-IDF members read them with no encoder). A
    named Hugging Face folder that is not there is refused now, not skipped by the search."""
    from mmfuse.encoders.hf_folder import local_folder

    for named in (image, text):
        if named is not None and named.name.startswith("hf:"):
            local_folder(named.name[3:])
    if image is not None:
        preset = dataclasses.replace(preset, image_encoders=(image,))
    if text is not None:
        preset = dataclasses.replace(preset, text_encoders=(text,) if text.name == NGRAM.name
                                     else (text, NGRAM))
    return preset


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'. Known: {', '.join(PRESETS)}")
    return PRESETS[name]


IMAGE_SIDES = (128, 224)  # the smallest and the largest side the image encoders see
SIZE_SAMPLE = 64  # images whose size is read (headers only) to choose the side


TOKEN_LENGTHS = (32, 256)  # the shortest and the longest text a pretrained encoder reads
TEXT_SAMPLE = 512  # texts tokenised to choose the length
DEFAULT_MAX_LENGTH = EncoderConfig("x").max_length


def suited_to(preset: Preset, frame: pd.DataFrame, config: Config) -> Preset:
    """The preset with its pretrained encoders' inputs suited to the data: image side and
    text length; texts read in as many windows as the config's text encoder
    (``--max-text-windows``)."""
    preset = _text_length_suited(_image_side_suited(preset, frame, config), frame, config)
    windows = config.model.text_encoder.max_windows
    return dataclasses.replace(preset, text_encoders=tuple(
        dataclasses.replace(e, max_windows=windows) for e in preset.text_encoders))


def _text_length_suited(preset: Preset, frame: pd.DataFrame, config: Config) -> Preset:
    """Pretrained text encoders read the 95th percentile of the data's token counts (rounded
    up to 16, within TOKEN_LENGTHS) instead of a fixed 64: long questions are not cut, short
    titles cost no padding. A fine-tuned encoder stays only where that is at most
    FINETUNE_MAX_TOKENS and the training rows at most FINETUNE_MAX_ROWS."""
    from mmfuse.encoders import create_encoder

    texts = [t for c in config.data.text_cols for t in cells(frame, c) if t][:TEXT_SAMPLE]
    encoders = []
    for encoder in preset.text_encoders:
        if texts and encoder.max_length == DEFAULT_MAX_LENGTH:
            try:
                tokenizer = create_encoder("text", dataclasses.replace(encoder, frozen=None)
                                           ).tokenizer
            except (ConfigError, AttributeError):  # no pretrained tokenizer (ngram, gru)
                encoders.append(encoder)
                continue
            counts = [len(ids) for ids in tokenizer(texts)["input_ids"]]
            length = math.ceil(float(np.percentile(counts, 95)) / 16) * 16
            length = int(min(TOKEN_LENGTHS[1], max(TOKEN_LENGTHS[0], length)))
            if encoder.frozen is False and (length > FINETUNE_MAX_TOKENS
                                            or len(frame) > FINETUNE_MAX_ROWS):
                continue
            encoder = dataclasses.replace(encoder, max_length=length)
        encoders.append(encoder)
    return dataclasses.replace(preset, text_encoders=tuple(encoders))


def _image_side_suited(preset: Preset, frame: pd.DataFrame, config: Config) -> Preset:
    """The preset with frozen image encoders at a side that suits the data's images.

    Small images (icons, renders, thumbnails) upscaled to 224 px cost 3x the encoding time of
    128 px and show the encoder nothing new: encode at twice the typical side, within
    IMAGE_SIDES, rounded up to a multiple of 32.
    """
    paths = [photos(cell)[0] for c in config.data.image_cols for cell in cells(frame, c)
             if cell is not None][:SIZE_SAMPLE]
    sides = []
    for path in paths:
        with contextlib.suppress(OSError), Image.open(path) as image:
            sides.append(max(image.size))
    if not sides:
        return preset
    side = int(min(IMAGE_SIDES[1], max(IMAGE_SIDES[0], math.ceil(2 * np.median(sides) / 32) * 32)))
    images = tuple(
        dataclasses.replace(e, image_size=side) if e.image_size is None and side_is_ours(e)
        else e for e in preset.image_encoders
    )
    return dataclasses.replace(preset, image_encoders=images)


def side_is_ours(encoder: EncoderConfig) -> bool:
    """Whether mmfuse sets the image encoder's side (a Hugging Face folder's processor sets
    its own)."""
    return not encoder.name.startswith("hf:")


@dataclass
class Candidate:
    name: str
    config: Config
    single: bool  # one modality only: part of the floor the chosen model must reach


def encoder_label(encoder: EncoderConfig) -> str:
    if encoder.frozen is False:
        return f"{encoder.name}-finetuned{encoder.image_size or ''}"
    return encoder.name


def _variant(
    base: Config, preset: Preset, modalities: list[str], fusion: str,
    image: EncoderConfig | None, text: EncoderConfig | None,
) -> Config:
    config = copy.deepcopy(base)
    config.model.modalities = modalities
    config.model.fusion = fusion
    if image is not None:
        config.model.image_encoder = copy.deepcopy(image)
    if text is not None:
        config.model.text_encoder = copy.deepcopy(text)
    config.train.epochs = preset.epochs
    # Each network's probabilities get a temperature and, for a metric that reads labels, its
    # labels a decision (tasks/decision.py), fitted on its early-stopping rows: the choice on
    # large data is one network, and its probabilities must be as calibrated as an ensemble's.
    config.train.calibrate = get_task(config.data.task).single_label
    return config.validate()


def single_candidates(base: Config, preset: Preset) -> list[Candidate]:
    """One candidate per encoder of each modality the data has."""
    candidates = []
    if base.data.image_cols:
        for image in preset.image_encoders:
            candidates.append(Candidate(f"image: {encoder_label(image)}",
                                        _variant(base, preset, ["image"], "concat", image, None),
                                        single=True))
    if base.data.text_cols:
        for text in preset.text_encoders:
            candidates.append(Candidate(f"text: {encoder_label(text)}",
                                        _variant(base, preset, ["text"], "concat", None, text),
                                        single=True))
    return candidates


def fusion_candidates(
    base: Config, preset: Preset, image: EncoderConfig | None, text: EncoderConfig | None,
    small_data: bool = False,
) -> list[Candidate]:
    """Each fusion over the best image and text encoders and, where the table has numeric or
    categorical columns, the tabular tower; none with fewer than two modalities.
    ``small_data`` (judged by k folds): with the preset's fusion regularisation."""
    tabular = bool(base.data.tabular_cols)
    modalities = [m for m, encoder in (("image", image), ("text", text)) if encoder is not None]
    modalities += ["tabular"] if tabular else []
    if len(modalities) < 2:
        return []
    pair = " + ".join([encoder_label(e) for e in (image, text) if e is not None]
                      + (["tabular"] if tabular else []))
    candidates = []
    for fusion in preset.fusions:
        config = _variant(base, preset, modalities, fusion, image, text)
        if small_data:
            _regularised(config, preset)
        candidates.append(Candidate(f"{fusion} ({pair})", config, single=False))
    return candidates


def beside_the_ensemble(preset: Preset) -> Preset:
    """The preset without the fusions that the ensemble of all candidates does better.

    `stack` learns how to weigh each modality's own prediction from each fold's training rows:
    a neural version of the ensemble's combination of members, which weighs them on
    out-of-fold rows instead. Last in the portfolio, it was cut short by the time limit in
    every MATH-V benchmark run (0.011 out-of-fold macro-F1 after part of a fold), and its
    seconds go to the fusions before it.
    """
    return dataclasses.replace(preset, fusions=tuple(f for f in preset.fusions if f != "stack"))


def _regularised(config: Config, preset: Preset) -> None:
    """The preset's fusion dropout and unimodal losses, unless the user asked for more."""
    config.model.dropout = max(config.model.dropout, preset.fusion_dropout)
    if not is_private(config.train):  # DP-SGD allows one forward pass per example
        config.train.unimodal_loss = max(config.train.unimodal_loss, preset.fusion_unimodal_loss)
