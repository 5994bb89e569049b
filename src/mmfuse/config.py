"""Typed configuration that round-trips to YAML. Configs hold registry names and plain values."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from mmfuse.errors import ConfigError
from mmfuse.io import atomic_write_text
from mmfuse.tasks import get_task

MODALITY_KINDS = ("image", "text", "tabular")  # tabular: the --num-col/--cat-col columns


INF = float("inf")
TINY = 1e-12  # "above zero"


@dataclass
class DataConfig:
    """Which columns hold what, and how bad rows are treated."""

    image_cols: list[str] = field(default_factory=lambda: ["image"])
    text_cols: list[str] = field(default_factory=lambda: ["text"])
    label_col: str = "label"
    num_cols: list[str] = field(default_factory=list)  # numbers (scaled; missing is a value)
    cat_cols: list[str] = field(default_factory=list)  # categories (rare and unseen pooled)
    weight_col: str | None = None  # each row's weight in every loss and fit (>= 0)
    task: str = "classification"
    label_sep: str = "|"  # multilabel targets are written "a|b|c" in one cell
    val_fraction: float = 0.1
    on_bad_rows: str = "error"  # "error" or "skip"
    allow_missing: bool = False  # an empty image/text cell is a missing modality, not an error
    negatives: int = 1  # matching: mismatched captions drawn per true pair
    hard_negative_fraction: float = 0.5  # matching: share of negatives that are look-alikes

    @property
    def tabular_cols(self) -> list[str]:
        """The numeric, then the categorical columns: what the tabular modality reads."""
        return [*self.num_cols, *self.cat_cols]

    def named_columns(self) -> list[str]:
        """Every column a role names (image, text, number, category, label, weight)."""
        return [*self.image_cols, *self.text_cols, *self.tabular_cols, self.label_col,
                *([self.weight_col] if self.weight_col else [])]


@dataclass
class EncoderConfig:
    """One encoder. ``frozen=None`` means: pretrained encoders frozen, from-scratch ones trained."""

    name: str
    frozen: bool | None = None
    image_size: int | None = None  # None: the encoder's own default
    max_length: int = 64
    # text: a longer text is read in up to this many overlapping windows of max_length tokens,
    # their features averaged (frozen encoders; one being trained reads the first window)
    max_windows: int = 4
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    image_encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig("efficientnet-lite0")
    )
    text_encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig("minilm"))
    tabular_encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig("tabular-mlp"))
    fusion: str = "concat"  # the only fusion above both baselines on both benchmark sets (README)
    modalities: list[str] = field(default_factory=lambda: list(MODALITY_KINDS))
    hidden_dim: int = 256
    dropout: float = 0.1
    fusion_options: dict[str, Any] = field(default_factory=dict)
    # a CLIP-style folder (hf:DIR), named as both encoders too: a retrieval model starts from
    # its towers, projections and logit scale instead of heads trained from scratch
    backbone: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    encoder_lr: float = 3e-5  # for pretrained encoders that are fine-tuned
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    patience: int = 5
    metric: str | None = None  # None: macro_f1 (classification kinds) or rmse (regression)
    seed: int = 0
    modality_dropout: float = 0.0
    # Weight of each modality's own loss (the model with the others hidden) beside the fused
    # loss: every modality must predict alone too, so the one that fits the training rows
    # fastest cannot starve the others (Wang et al., 2020, "gradient blending").
    unimodal_loss: float = 0.0
    imbalance: str = "none"  # "none", "weight" (class-weighted loss), "sample", "auto"
    num_workers: int = 2
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    calibrate: bool = False  # fit a softmax temperature on validation data after training
    # "auto" (bf16 on a GPU that has it, else full precision), "no", "bf16" (CPU or GPU) or
    # "fp16" (GPU): accelerate's autocast (training/distributed.py: mixed_precision)
    precision: str = "auto"
    grad_accum: int = 1  # optimiser step every N batches: an N times larger effective batch
    # Differential privacy (DP-SGD with opacus): a target epsilon, or a noise multiplier.
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_noise_multiplier: float | None = None
    dp_max_grad_norm: float = 1.0  # per-example gradients are clipped to this L2 norm


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: str | None = None  # None: $MMFUSE_CACHE or ~/.cache/mmfuse

    def validate(self) -> Config:
        task = get_task(self.data.task)
        unknown = set(self.model.modalities) - set(MODALITY_KINDS)
        if unknown or not self.model.modalities:
            raise ConfigError(
                f"modalities must be a non-empty subset of {MODALITY_KINDS}, "
                f"got {self.model.modalities}"
            )
        if "image" in self.model.modalities and not self.data.image_cols:
            raise ConfigError("modality 'image' is selected but no image column is named")
        if "text" in self.model.modalities and not self.data.text_cols:
            raise ConfigError("modality 'text' is selected but no text column is named")
        # A selected tabular modality without columns reads nothing (it is in the default);
        # alone, it must have some.
        if self.model.modalities == ["tabular"] and not self.data.tabular_cols:
            raise ConfigError("modality 'tabular' is selected but no --num-col or --cat-col is named")
        if task.paired and (
            len(self.data.image_cols) != 1 or len(self.data.text_cols) != 1
            or not {"image", "text"} <= set(self.model.modalities)
            or self.data.tabular_cols
        ):
            raise ConfigError(f"task '{self.data.task}' needs exactly one image and one text column "
                              "(and no numeric or categorical columns)")
        roles = self.data.named_columns()
        repeated = sorted({c for c in roles if roles.count(c) > 1})
        if repeated:
            raise ConfigError(f"column(s) {', '.join(map(repr, repeated))} named in more than one "
                              "role (image, text, number, category, label, weight); give each one role")
        if self.train.metric is not None and self.train.metric not in task.metric_names:
            close = difflib.get_close_matches(self.train.metric, task.metric_names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"train.metric (--metric) '{self.train.metric}' is not a metric of "
                              f"task '{task.name}'; it reports: {', '.join(task.metric_names)}."
                              f"{hint}")
        if self.data.on_bad_rows not in ("error", "skip"):
            raise ConfigError("on_bad_rows must be 'error' or 'skip'")
        if self.train.imbalance not in ("auto", "none", "weight", "sample"):
            raise ConfigError("imbalance must be one of auto, none, weight, sample")
        dp = self.train
        if dp.dp_epsilon is not None and dp.dp_noise_multiplier is not None:
            raise ConfigError("give dp_epsilon (a target) or dp_noise_multiplier, not both")
        if dp.dp_epsilon is not None and dp.dp_epsilon <= 0 or not 0 < dp.dp_delta < 1:
            raise ConfigError("dp_epsilon must be positive and dp_delta in (0, 1)")
        if not 0.0 <= self.train.modality_dropout < 1.0:
            raise ConfigError("modality_dropout must be in [0, 1)")
        for where, value, low, high in self._ranges():
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    low <= value <= high):
                upper = "" if high == INF else f" and at most {high}"
                raise ConfigError(f"{where} must be a number of at least {low}{upper}, got "
                                  f"{value!r}")
        return self

    def _ranges(self) -> list[tuple[str, Any, float, float]]:
        """(dotted name, value, lowest, highest) of every numeric setting."""
        train, data, model = self.train, self.data, self.model
        ranges = [
            ("train.epochs", train.epochs, 1, INF), ("train.batch_size", train.batch_size, 1, INF),
            ("train.lr", train.lr, TINY, INF), ("train.encoder_lr", train.encoder_lr, 0, INF),
            ("train.weight_decay", train.weight_decay, 0, INF),
            ("train.unimodal_loss", train.unimodal_loss, 0, INF),
            ("train.warmup_fraction", train.warmup_fraction, 0, 1),
            ("train.patience", train.patience, 1, INF),
            ("train.num_workers", train.num_workers, 0, 256),
            ("train.grad_accum", train.grad_accum, 1, INF),
            ("train.dp_max_grad_norm", train.dp_max_grad_norm, TINY, INF),
            ("data.val_fraction", data.val_fraction, TINY, 1 - TINY),
            ("data.negatives", data.negatives, 1, INF),
            ("data.hard_negative_fraction", data.hard_negative_fraction, 0, 1),
            ("model.hidden_dim", model.hidden_dim, 1, INF),
            ("model.dropout", model.dropout, 0, 1 - TINY),
        ]
        if train.threads is not None:
            ranges.append(("train.threads", train.threads, 1, 1024))
        for kind in ("image", "text"):
            encoder = getattr(model, f"{kind}_encoder")
            ranges.append((f"model.{kind}_encoder.max_length", encoder.max_length, 1, 8192))
            ranges.append((f"model.{kind}_encoder.max_windows", encoder.max_windows, 1, 256))
            if encoder.image_size is not None:
                ranges.append((f"model.{kind}_encoder.image_size", encoder.image_size, 8, 4096))
        return ranges

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> None:
        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        return _from_dict(cls, values, "config").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from error
        return cls.from_dict(values)


C = TypeVar("C")


def _from_dict(cls: type[C], values: dict[str, Any], where: str) -> C:
    """Build a (nested) dataclass, rejecting unknown keys with their dotted path."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value, f"{where}.{name}")
        kwargs[name] = value
    required = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    absent = [name for name in required if name not in values]
    if absent:
        raise ConfigError(f"{where} lacks {', '.join(f'{where}.{n}' for n in absent)}")
    return cls(**kwargs)
