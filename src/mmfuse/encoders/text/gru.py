"""A bidirectional GRU over a vocabulary built from the training texts (any language)."""

from __future__ import annotations

import torch
from torch import nn

from mmfuse.config import EncoderConfig
from mmfuse.data.vocabulary import Vocabulary
from mmfuse.encoders.base import TEXT_ENCODERS, Encoder
from mmfuse.types import EncoderOutput, masked_mean


class GRUTextEncoder(Encoder):
    """input_ids (B, T) -> pooled (B, 2H) and token states (B, T, 2H).

    Built either on a saved vocabulary (loading) or without one, then ``fit(texts)`` builds
    it from the training texts (and the embedding table of its size).
    """

    kind = "text"
    pretrained = False

    def __init__(
        self, vocabulary: Vocabulary | None, embed_dim: int = 128, hidden: int = 128,
        max_length: int = 64, level: str = "word", max_vocabulary: int = 30000,
    ) -> None:
        super().__init__()
        self.embed_dim, self.hidden, self.level = embed_dim, hidden, level
        self.max_length, self.max_vocabulary = max_length, max_vocabulary
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.output_dim = 2 * hidden
        if vocabulary is not None:
            self._use(vocabulary)

    def _use(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.embedding = nn.Embedding(len(vocabulary), self.embed_dim, padding_idx=0)
        self.fingerprint = f"gru:{vocabulary.level}:{len(vocabulary)}:{self.embed_dim}:{self.hidden}"

    def fit(self, texts: list[str]) -> GRUTextEncoder:
        """The vocabulary of the training texts (before training: the optimiser then sees the
        embedding table)."""
        self._use(Vocabulary.build(texts, level=self.level, max_size=self.max_vocabulary))
        return self

    @property
    def preprocessing(self) -> str:
        return f"{self.vocabulary.level}-vocabulary,max_length={self.max_length}"

    def prepare(self, values: list[str]) -> dict[str, torch.Tensor]:
        return self.vocabulary.encode(values, self.max_length)

    def input_embeddings(self) -> nn.Module:
        return self.embedding

    def token_strings(self, input_ids: torch.Tensor) -> list[str]:
        return [self.vocabulary.tokens[i] for i in input_ids.tolist()]

    def neutral_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Attribution baseline: padding everywhere (lengths come from the attention mask)."""
        return torch.zeros_like(input_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        embedded = self.embedding(input_ids)  # (B, T, E)
        lengths = attention_mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, lengths, batch_first=True, enforce_sorted=False
        )
        output, _ = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(
            output, batch_first=True, total_length=input_ids.shape[1]
        )  # (B, T, 2H)
        mask = attention_mask.bool()
        return EncoderOutput(masked_mean(states, mask), states, mask)


@TEXT_ENCODERS.register("gru", "bidirectional GRU on a word/char vocabulary from the training data")
def gru(cfg: EncoderConfig, vocabulary: Vocabulary | None = None) -> Encoder:
    return GRUTextEncoder(
        vocabulary,
        embed_dim=int(cfg.options.get("embed_dim", 128)),
        hidden=int(cfg.options.get("hidden", 128)),
        max_length=cfg.max_length,
        level=cfg.options.get("level", "word"),
        max_vocabulary=int(cfg.options.get("max_vocabulary", 30000)),
    )
