"""Hashed character and word n-grams, TF-IDF weighted, projected to a dense vector.

Language-agnostic and download-free: it reads characters, so a script no pretrained tokenizer
knows is as learnable as English. Hashing (scikit-learn's HashingVectorizer) needs no stored
vocabulary; the only fitted state is the inverse document frequency of each bucket, a buffer
saved with the weights. The projection is an ``EmbeddingBag``: a sparse-by-dense product.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.preprocessing import normalize
from torch import nn

from mmfuse.config import EncoderConfig
from mmfuse.encoders.base import TEXT_ENCODERS, Encoder
from mmfuse.types import EncoderOutput


class NgramTextEncoder(Encoder):
    """texts -> TF-IDF over ``2 * buckets`` hashed n-grams -> pooled (B, dim), one token (B, 1, dim).

    ``prepare`` returns each row's non-zero entries as ``ngram_ids`` and ``ngram_weights``
    (B, K), zero-padded: batch-first like every other input, so batches split, repeat and
    gather as usual. Character n-grams use word boundaries (``char_wb``).
    """

    kind = "text"
    pretrained = False

    def __init__(
        self,
        char_ngrams: tuple[int, int] = (1, 3),
        word_ngrams: tuple[int, int] = (1, 2),
        buckets: int = 1 << 15,
        dim: int = 128,
        ngram_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.ngram_dropout = ngram_dropout
        self.char = HashingVectorizer(analyzer="char_wb", ngram_range=tuple(char_ngrams),
                                      n_features=buckets, alternate_sign=False, norm=None)
        self.word = HashingVectorizer(analyzer="word", ngram_range=tuple(word_ngrams),
                                      n_features=buckets, alternate_sign=False, norm=None,
                                      token_pattern=r"(?u)\b\w+\b")
        self.register_buffer("idf", torch.ones(2 * buckets))
        self.bag = nn.EmbeddingBag(2 * buckets, dim, mode="sum")
        nn.init.normal_(self.bag.weight, std=dim ** -0.5)
        self.output_dim = dim
        self.fingerprint = f"ngram:char{tuple(char_ngrams)}:word{tuple(word_ngrams)}:{buckets}:{dim}"

    @property
    def preprocessing(self) -> str:
        return "nfkc-lower,hashed-tfidf"

    def counts(self, texts: list[str]) -> sp.csr_matrix:
        """(B, 2 * buckets) n-gram counts: character buckets first, then word buckets."""
        return sp.hstack([self.char.transform(texts), self.word.transform(texts)]).tocsr()

    def fit(self, texts: list[str]) -> NgramTextEncoder:
        """Inverse document frequencies from the training texts (smoothed, as scikit-learn's).

        Buckets no training text filled get weight 0: their embeddings never received a
        gradient, and in short texts of rare words (names, other scripts) such untrained
        random vectors would otherwise outweigh the n-grams the model did learn.
        """
        counts = self.counts(texts)
        idf = TfidfTransformer(sublinear_tf=True).fit(counts).idf_
        seen = np.bincount(counts.indices, minlength=counts.shape[1]) > 0
        self.idf.copy_(torch.from_numpy(np.where(seen, idf, 0.0).astype(np.float32)))
        return self

    def prepare(self, values: list[str]) -> dict[str, torch.Tensor]:
        """Each text's non-zero TF-IDF entries, padded to the batch's longest row (weight 0)."""
        matrix = self.counts(values).astype(np.float32)
        matrix.data = 1.0 + np.log(matrix.data)  # sublinear tf: repeats count, but less and less
        matrix = normalize(matrix.multiply(self.idf.numpy()[None, :]).tocsr())
        matrix.eliminate_zeros()  # n-grams never seen in training (idf 0)
        width = max(1, int(np.diff(matrix.indptr).max(initial=0)))
        ids = torch.zeros(len(values), width, dtype=torch.long)
        weights = torch.zeros(len(values), width)
        for row in range(len(values)):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            ids[row, : end - start] = torch.from_numpy(matrix.indices[start:end].astype(np.int64))
            weights[row, : end - start] = torch.from_numpy(matrix.data[start:end])
        return {"ngram_ids": ids, "ngram_weights": weights}  # (B, K) each

    def bucket_names(self, text: str) -> dict[int, str]:
        """Bucket id -> the n-grams of ``text`` hashed into it (for explanations)."""
        names: dict[int, list[str]] = {}
        buckets = self.idf.numel() // 2
        hasher = FeatureHasher(buckets, input_type="string", alternate_sign=False)
        for offset, vectorizer in ((0, self.char), (buckets, self.word)):
            grams = list(dict.fromkeys(vectorizer.build_analyzer()(text)))
            if not grams:
                continue
            hashed = hasher.transform([[gram] for gram in grams])  # one row per n-gram
            for gram, bucket in zip(grams, hashed.indices.tolist(), strict=True):
                # Character n-grams are quoted (they may start or end with the word-boundary space).
                names.setdefault(offset + bucket, []).append(f'"{gram}"' if offset == 0 else gram)
        return {bucket: " / ".join(grams) for bucket, grams in names.items()}

    def forward(self, ngram_ids: torch.Tensor, ngram_weights: torch.Tensor) -> EncoderOutput:
        # Dropping n-grams while training keeps the model from leaning on a few rare ones.
        weights = nn.functional.dropout(ngram_weights, self.ngram_dropout, self.training)
        pooled = self.bag(ngram_ids, per_sample_weights=weights)  # (B, dim)
        mask = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
        return EncoderOutput(pooled, pooled.unsqueeze(1), mask)


@TEXT_ENCODERS.register("ngram", "hashed char 1-3 + word 1-2 n-grams, TF-IDF, any language")
def ngram(cfg: EncoderConfig, vocabulary: object = None) -> Encoder:
    options = cfg.options
    return NgramTextEncoder(
        char_ngrams=tuple(options.get("char_ngrams", (1, 3))),
        word_ngrams=tuple(options.get("word_ngrams", (1, 2))),
        buckets=int(options.get("buckets", 1 << 15)),
        dim=int(options.get("dim", 128)),
        ngram_dropout=float(options.get("ngram_dropout", 0.3)),
    )
