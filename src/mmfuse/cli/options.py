"""`mmfuse train`'s configuration flags, generated from the config dataclasses.

One table names the fields that are flags (with their help); each flag's type comes from its
field, so a new config field becomes a flag by adding one line here, and a flag always means
exactly what the YAML key means. Model flags (fusion, modalities, fine-tuning) also switch
auto mode off; encoder flags keep it on, with the named encoders in its portfolio.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from mmfuse.config import Config, DataConfig, EncoderConfig, ModelConfig, TrainConfig

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

# "section.field" -> help; the flag is --field with dashes unless renamed in FLAG_NAMES.
HELP = {
    "data.image_cols": "Image column (repeat for several)",
    "data.text_cols": "Text column (repeat for several)",
    "data.label_col": "Target column",
    "data.num_cols": "Numeric column, e.g. a price (repeat for several; empty cells are missing)",
    "data.cat_cols": "Categorical column, e.g. a brand (repeat for several)",
    "data.weight_col": "Column of row weights (>= 0): each row's share of every loss and fit",
    "data.task": "classification|multilabel|regression|binary|matching|retrieval",
    "data.label_sep": "Separator of labels in one multilabel cell",
    "data.val_fraction": "Share of rows held out for validation (without --val-data)",
    "data.on_bad_rows": "error|skip",
    "data.allow_missing": "Empty image/text cells are missing modalities",
    "data.negatives": "Matching: mismatched captions drawn per true pair",
    "model.fusion": "See `mmfuse list`",
    "model.hidden_dim": "Width of the fusion and head",
    "model.dropout": "Dropout in the fusion and head",
    "train.epochs": "Most epochs (early stopping may end sooner)",
    "train.batch_size": "Rows per optimiser step (split among processes)",
    "train.lr": "Learning rate of the fusion and head",
    "train.encoder_lr": "Learning rate of fine-tuned pretrained encoders",
    "train.weight_decay": "AdamW weight decay",
    "train.patience": "Epochs without improvement before stopping",
    "train.metric": "Validation metric that picks the epoch (default: the task's)",
    "train.seed": "Seed of splits, shuffling and initialisation",
    "train.modality_dropout": "Hide a modality in training",
    "train.unimodal_loss": "Weight of each modality's own loss (others hidden) beside the fused one",
    "train.imbalance": "auto|none|weight|sample",
    "train.num_workers": "Image-decoding worker processes",
    "train.threads": "torch threads (default: all cores)",
    "train.calibrate": ("Fit a probability temperature (and, for macro-F1, the labels' "
                        "decision) on validation data"),
    "train.precision": "auto|no|bf16|fp16 (auto: bf16 on a GPU that has it; fp16: GPU only)",
    "train.grad_accum": "Optimiser step every N batches",
    "train.dp_epsilon": "DP-SGD: target privacy budget epsilon",
    "train.dp_delta": "DP-SGD: delta",
    "train.dp_noise_multiplier": "DP-SGD: noise instead of a target",
    "train.dp_max_grad_norm": "DP-SGD: per-example clipping norm",
}
FLAG_NAMES = {"data.image_cols": "image-col", "data.text_cols": "text-col",
              "data.num_cols": "num-col", "data.cat_cols": "cat-col"}


def _set_encoder(kind: str) -> Callable[[Config, Any], None]:
    def setter(cfg: Config, name: str) -> None:
        setattr(cfg.model, f"{kind}_encoder", EncoderConfig(name))
    return setter


def _backbone(cfg: Config, name: str) -> None:
    cfg.model.backbone = name
    cfg.model.image_encoder, cfg.model.text_encoder = EncoderConfig(name), EncoderConfig(name)


def _finetune(kind: str) -> Callable[[Config, Any], None]:
    def setter(cfg: Config, on: bool) -> None:
        if on:
            getattr(cfg.model, f"{kind}_encoder").frozen = False
    return setter


def _image_size(cfg: Config, size: int) -> None:
    cfg.model.image_encoder.image_size = size


def _modalities(cfg: Config, text: str) -> None:
    cfg.model.modalities = [x.strip() for x in text.split(",") if x.strip()]


# Flags that set more than one field, or a field inside an encoder: name -> (type, help, setter).
MODEL_FLAGS: dict[str, tuple[type, str, Callable[[Config, Any], None]]] = {
    "finetune-image": (bool, "Train the pretrained image encoder too", _finetune("image")),
    "finetune-text": (bool, "Train the pretrained text encoder too", _finetune("text")),
    "image-size": (int, "Image side in pixels", _image_size),
    "modalities": (str, "image,text,tabular (default: all named) | image | text | ...",
                   _modalities),
}


def _max_text_windows(cfg: Config, windows: int) -> None:
    cfg.model.text_encoder.max_windows = windows


# Flags that name the encoders: auto mode stays on, with them in place of its packaged ones.
# Set before the model flags, which change what they name (--image-size, --finetune-*).
ENCODER_FLAGS: dict[str, tuple[type, str, Callable[[Config, Any], None]]] = {
    "image-encoder": (str, "See `mmfuse list`; or hf:/local/folder (a vision model, or a CLIP "
                           "folder's vision tower) or hf:org/name from the local HF cache",
                      _set_encoder("image")),
    "text-encoder": (str, "See `mmfuse list`; or hf:/local/folder or hf:org/name",
                     _set_encoder("text")),
    "backbone": (str, "A CLIP-style folder (hf:DIR) for both towers: a retrieval model starts "
                      "from it (image tower locked, text tower tuned: LiT; --finetune-image "
                      "tunes both); other tasks read images and texts through it",
                 _backbone),
}
# Flags inside an encoder that say how to read the data, not which model: auto mode stays on.
READING_FLAGS: dict[str, tuple[type, str, Callable[[Config, Any], None]]] = {
    "max-text-windows": (int, "A longer text is read in up to N overlapping windows of the "
                              "text encoder's length, their features averaged (default 4)",
                         _max_text_windows),
}


@dataclass(frozen=True)
class ConfigFlag:
    name: str  # without the dashes
    kind: Any  # the option's Python type
    help: str
    setter: Callable[[Config, Any], None]
    fixes_model: bool  # a model flag: the user chose the model, so auto mode is off

    @property
    def parameter(self) -> str:
        return self.name.replace("-", "_")


def _field_setter(section: str, field: str) -> Callable[[Config, Any], None]:
    def setter(cfg: Config, value: Any) -> None:
        setattr(getattr(cfg, section), field, value)
    return setter


def _plain(hint: Any) -> Any:
    """``int | None`` -> int; list[str] stays."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def config_flags() -> list[ConfigFlag]:
    flags = []
    for path, text in HELP.items():
        section, field = path.split(".")
        hint = _plain(get_type_hints(SECTIONS[section])[field])
        name = FLAG_NAMES.get(path, field.replace("_", "-"))
        flags.append(ConfigFlag(name, hint, text, _field_setter(section, field),
                                fixes_model=section == "model"))
    for name, (kind, text, setter) in ENCODER_FLAGS.items():
        flags.append(ConfigFlag(name, kind, text, setter, fixes_model=False))
    for name, (kind, text, setter) in MODEL_FLAGS.items():
        flags.append(ConfigFlag(name, kind, text, setter, fixes_model=True))
    for name, (kind, text, setter) in READING_FLAGS.items():
        flags.append(ConfigFlag(name, kind, text, setter, fixes_model=False))
    return flags


def apply_flags(cfg: Config, values: dict[str, Any]) -> Config:
    """Set every flag the user gave (not None; a bool flag only when on) on ``cfg``."""
    for flag in config_flags():
        value = values.get(flag.parameter)
        if value is not None and value is not False:
            flag.setter(cfg, value)
    return cfg


def encoders_given(values: dict[str, Any]) -> list[str]:
    """The kinds ("image", "text") whose encoder the user named (--backbone names both)."""
    if values.get("backbone") is not None:
        return ["image", "text"]
    return [kind for kind in ("image", "text") if values.get(f"{kind}_encoder") is not None]


def model_flags_given(values: dict[str, Any]) -> list[str]:
    """The model flags the user gave, as written (``--fusion``)."""
    return [f"--{flag.name}" for flag in config_flags()
            if flag.fixes_model and values.get(flag.parameter) not in (None, False)]


F = TypeVar("F", bound=Callable[..., Any])


def with_config_flags(command: F) -> F:
    """Add every config flag to ``command``'s options; it receives them as ``flags``, a dict
    of parameter name -> value (None when not given)."""
    flags = config_flags()
    names = {flag.parameter for flag in flags}

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        return command(*args, flags=given, **kwargs)

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.name != "flags"]
    added = [
        inspect.Parameter(flag.parameter, inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[flag.kind | None,
                                               typer.Option(f"--{flag.name}", help=flag.help)])
        for flag in flags
    ]
    wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
    return wrapper  # type: ignore[return-value]
