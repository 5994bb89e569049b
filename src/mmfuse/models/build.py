"""build_model: the only place where a config turns into modules."""

from __future__ import annotations

from typing import Any

from mmfuse.config import Config
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.encoders import create_encoder
from mmfuse.errors import ConfigError
from mmfuse.fusion import FUSIONS
from mmfuse.heads import HEADS
from mmfuse.models.multimodal import MultimodalModel
from mmfuse.tasks import get_task

TABULAR = "tabular"  # the one modality of every numeric and categorical column


def modality_kinds(cfg: Config) -> dict[str, str]:
    """Modality name -> kind, for the kinds selected in ``cfg.model.modalities``: each image
    and text column is a modality; the numeric and categorical columns together are one,
    ``tabular``, where any are named."""
    kinds: dict[str, str] = {}
    for kind, columns in (("image", cfg.data.image_cols), ("text", cfg.data.text_cols)):
        if kind in cfg.model.modalities:
            for column in columns:
                if column in kinds:
                    raise ConfigError(f"column '{column}' is named as both image and text")
                kinds[column] = kind
    if TABULAR in cfg.model.modalities and cfg.data.tabular_cols:
        if TABULAR in kinds:
            raise ConfigError(f"a column may not be named '{TABULAR}' beside --num-col/--cat-col"
                              " columns: rename it")
        kinds[TABULAR] = TABULAR
    return kinds


def build_model(
    cfg: Config,
    n_outputs: int,
    vocabulary: Vocabulary | None = None,
    head_options: dict[str, Any] | None = None,
) -> MultimodalModel:
    """Encoders, fusion and head from a config; every input size is computed, never hand-wired."""
    cfg.validate()
    kinds = modality_kinds(cfg)
    encoder_cfgs = {"image": cfg.model.image_encoder, "text": cfg.model.text_encoder,
                    TABULAR: cfg.model.tabular_encoder}
    context = {"image": {}, "text": {"vocabulary": vocabulary},
               TABULAR: {"num_cols": cfg.data.num_cols, "cat_cols": cfg.data.cat_cols}}
    encoders = {kind: create_encoder(kind, encoder_cfgs[kind], **context[kind])
                for kind in sorted(set(kinds.values()))}
    input_dims = {m: encoders[kind].output_dim for m, kind in kinds.items()}
    try:
        fusion_class = FUSIONS.get(cfg.model.fusion)
        options = dict(cfg.model.fusion_options)
        if fusion_class.needs_outputs:
            options["n_outputs"] = n_outputs
        fusion = fusion_class(input_dims, cfg.model.hidden_dim, cfg.model.dropout, **options)
        head = HEADS.get(get_task(cfg.data.task).head)(
            fusion.output_dim, n_outputs, cfg.model.dropout, **(head_options or {})
        )
    except TypeError as error:  # an option the component does not take
        raise ConfigError(f"bad option for fusion '{cfg.model.fusion}': {error}") from error
    return MultimodalModel(encoders, kinds, fusion, head)
