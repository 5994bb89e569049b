"""Negatives for image-text matching, drawn automatically from a table of true pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors

from mmfuse.errors import MmfuseError
from mmfuse.tasks import NO, YES


def make_matching_pairs(
    frame: pd.DataFrame, image_col: str, text_col: str, *, negatives: int = 1,
    hard_fraction: float = 0.5, seed: int = 0,
) -> pd.DataFrame:
    """Each true pair (label "yes") plus ``negatives`` mismatched captions (label "no").

    Hard negatives are the captions of *other* images that read most like the true one
    (character n-gram TF-IDF: any language, no model needed); the rest are random. A caption
    that also belongs to the same image is never used as its negative.
    """
    rng = np.random.default_rng(seed)
    rows = frame.reset_index(drop=True)
    texts = rows[text_col].tolist()
    images = rows[image_col].tolist()
    distinct = sorted(set(texts))
    images_of: dict[str, set] = {}
    for text, image in zip(texts, images, strict=True):
        images_of.setdefault(text, set()).add(image)
    if len(distinct) < 2:
        raise MmfuseError("matching needs at least two different captions to draw negatives; "
                          f"{frame.attrs.get('source', 'the data')} has {len(distinct)}")
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit_transform(distinct)
    k = min(len(distinct), 11)
    _, neighbours = NearestNeighbors(n_neighbors=k, metric="cosine").fit(vectors).kneighbors(vectors)
    position = {t: i for i, t in enumerate(distinct)}
    n_hard = int(round(negatives * hard_fraction))
    out = [rows.assign(_target=YES)]
    for draw in range(negatives):
        picked = []
        for text, image in zip(texts, images, strict=True):
            choice = None
            if draw < n_hard:
                candidates = [distinct[j] for j in neighbours[position[text]][1:]]
                usable = [c for c in candidates if image not in images_of[c]]
                choice = usable[min(draw, len(usable) - 1)] if usable else None
            while choice is None or image in images_of[choice]:
                choice = distinct[rng.integers(len(distinct))]
                if len(images_of[choice]) == len(set(images)):
                    break  # a caption of every image: no true negative exists
            picked.append(choice)
        out.append(rows.assign(**{text_col: picked, "_target": NO}))
    return pd.concat(out, ignore_index=True)
