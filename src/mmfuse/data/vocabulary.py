"""A word- or character-level vocabulary built from training texts (any language, no download)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from mmfuse.errors import ConfigError

PAD, UNK = "<pad>", "<unk>"
WORD_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


@dataclass
class Vocabulary:
    """Token strings by id; id 0 is padding and id 1 stands for tokens unseen in training."""

    level: str = "word"  # "word" or "char"
    tokens: list[str] = field(default_factory=lambda: [PAD, UNK])

    def __post_init__(self) -> None:
        if self.level not in ("word", "char"):
            raise ConfigError(f"vocabulary level must be 'word' or 'char', got {self.level!r}")
        self._ids = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(
        cls, texts: Iterable[str], level: str = "word", max_size: int = 30000, min_count: int = 1
    ) -> Vocabulary:
        vocabulary = cls(level=level)
        counts = Counter(t for text in texts for t in vocabulary.split(text))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [t for t, c in ranked if c >= min_count][: max_size - 2]
        return cls(level=level, tokens=[PAD, UNK, *kept])

    def split(self, text: str) -> list[str]:
        text = normalise(text)
        return WORD_PATTERN.findall(text) if self.level == "word" else list(text)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        """Token ids (B, T) padded to the longest text (at most ``max_length``) and their mask."""
        ids = [[self._ids.get(t, 1) for t in self.split(text)][:max_length] or [1] for text in texts]
        width = max(len(row) for row in ids)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}

    def to_dict(self) -> dict:
        return {"level": self.level, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, values: dict) -> Vocabulary:
        return cls(level=values["level"], tokens=list(values["tokens"]))
