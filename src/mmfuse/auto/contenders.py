"""Which encoders auto mode fuses: those whose single-modality candidates scored close to the
best, the n-gram network where TF-IDF shows n-grams read the text best, and the n-gram
network alone left to the linear members. Each reads the leaderboard's rows so far."""

from __future__ import annotations

from mmfuse.auto.leaderboard import LeaderboardRow, ranked
from mmfuse.auto.portfolio import Candidate, Preset
from mmfuse.config import EncoderConfig
from mmfuse.ensemble.members import TFIDF
from mmfuse.scoring import greater_is_better, is_better

CLOSE = 0.1  # single-modality scores within 10 % of the best: worth trying in a fusion too


def read_by_linear_members(rows: list[LeaderboardRow], candidate: Candidate) -> bool:
    """The n-gram text network alone is left out where the linear members read TF-IDF
    n-grams: fitted to convergence in seconds, they read them better than the network in
    its time (``benchmarks/auto.py`` compares scikit-learn's TF-IDF LR with the network on
    every set), and the network's time, a fifth of preset medium's limit, goes to the
    fusions. It still joins a fusion where n-grams read the text best."""
    model = candidate.config.model
    return (candidate.single and model.modalities == ["text"]
            and model.text_encoder.name == "ngram" and bool(member_scores(rows, *TFIDF)))

def member_scores(rows: list[LeaderboardRow], *views: str) -> list[float]:
    """Out-of-fold scores of the linear members on ``views`` (kinds: "tfidf-char", ...)."""
    return [r.val_metric for r in rows if r.member and r.view in views
            and r.val_metric is not None]

def contenders(rows: list[LeaderboardRow], metric: str, kind: str, preset: Preset
               ) -> list[EncoderConfig]:
    """Encoders of the finished single-modality candidates of ``kind`` scoring within
    ``CLOSE`` (relative) of the best one, best first; fine-tuned ones only where the
    preset lets fusions fine-tune (a fusion around one costs its fine-tuning again). The
    n-gram encoder, which the linear members stood in for alone, where they show n-grams
    read the text best."""
    singles = ranked([r for r in rows if r.single_modality and r.val_metric is not None
                      and r.model and r.model["modalities"] == [kind]
                      and (preset.finetuned_fusions
                           or r.model[f"{kind}_encoder"]["frozen"] is not False)], metric)
    best = singles[0].val_metric if singles else None
    close = [EncoderConfig(**r.model[f"{kind}_encoder"]) for r in singles  # type: ignore[index]
             if abs(r.val_metric - best) <= CLOSE * max(abs(best), 1e-12)]  # type: ignore
    ngram = [e for e in preset.text_encoders if e.name == "ngram"]
    if kind == "text" and ngram and ngram[0] not in close and ngrams_read_best(rows, metric):
        close.append(ngram[0])
    return close

def ngrams_read_best(rows: list[LeaderboardRow], metric: str) -> bool:
    """A TF-IDF member beats every member on a pretrained text encoder's features by more
    than ``CLOSE`` (relative): the text is in a script or language the encoder does not
    know. (Merely as good is not enough: on MATH-V, where they are close, concat with the
    n-gram network scored 0.500 out of fold against 0.556 with MiniLM, and its 25 s were
    lost to the fusions after it.)"""
    def best(*views: str) -> float | None:
        scores = sorted(member_scores(rows, *views), reverse=greater_is_better(metric))
        return scores[0] if scores else None

    tfidf, pretrained = best(*TFIDF), best("text")
    if tfidf is None:
        return False
    return pretrained is None or (is_better(metric, tfidf, pretrained) and abs(
        tfidf - pretrained) > CLOSE * max(abs(pretrained), 1e-12))

def best_pair(rows: list[LeaderboardRow], metric: str, tried: list[Candidate]
              ) -> tuple[EncoderConfig | None, EncoderConfig | None] | None:
    """The image and text encoders (None: a modality it does not read) of the best of
    ``tried`` that finished."""
    names = {c.name: c for c in tried}
    finished = ranked([r for r in rows if r.candidate in names and r.scored], metric)
    if not finished:
        return None
    model = names[finished[0].candidate].config.model
    return (model.image_encoder if "image" in model.modalities else None,
            model.text_encoder if "text" in model.modalities else None)
