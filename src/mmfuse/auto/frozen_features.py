"""Auto mode's first step: the frozen encoders' features of every row, planned against the
deadline.

On a new user's first run the feature cache is empty and encoding is the largest cost. Each
frozen encoder's rate is measured on a sample of its inputs (encoded into the cache, so not
wasted) and the rest projected from it. Where everything would take more than
``ENCODING_SHARE`` of the time left, images are read at the smallest side instead; where that
is not enough, long texts are read to their first window (the TF-IDF members, which need no
encoder, still read them whole); where even that is too much, the candidates read as many
rows as the share allows (a sample that keeps every class: ``rows_within``). The plan says
what it did. Features are then computed once, before any candidate starts, so that the
candidates share the time that is left fairly.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmfuse import deadline as clocks
from mmfuse.auto.portfolio import IMAGE_SIDES, Preset, side_is_ours
from mmfuse.config import Config, EncoderConfig
from mmfuse.data.images import UndecodableImages
from mmfuse.data.validate import cells
from mmfuse.deadline import Deadline
from mmfuse.encoders import create_encoder
from mmfuse.encoders.base import Encoder
from mmfuse.errors import ConfigError
from mmfuse.features.assembly import undecodable_rows
from mmfuse.features.cache import FeatureCache
from mmfuse.progress import CONSOLE
from mmfuse.tasks import get_task

# Of the time left when the search starts, what encoding may take before images are read at
# the smallest side: the candidates need the rest (five folds of each network).
ENCODING_SHARE = 0.4
# The rate is measured on the inputs after the first WARM_UP (which pay for loading the
# encoder and building its fast path) up to SAMPLE of them.
WARM_UP, SAMPLE = 16, 96
# Fewer rows than this are not worth a search: encode them all, and say it takes long
MIN_ROWS = 500


@dataclass
class Job:
    """One frozen encoder and its columns' cells, row by row (None: missing)."""

    kind: str
    config: EncoderConfig
    encoder: Encoder
    values: list[str | None]

    @property
    def label(self) -> str:
        size = f" at {self.config.image_size} px" if self.kind == "image" else ""
        return f"{self.config.name}{size}"

    @functools.cached_property
    def distinct(self) -> list[str]:
        return list(dict.fromkeys(v for v in self.values if v is not None))

    @functools.cached_property
    def parts(self) -> dict[str, int]:
        """What the encoder reads of each distinct cell: its photos, a long text's windows."""
        return {cell: len(parts) for cell, parts in
                zip(self.distinct, self.encoder.parts_of(self.distinct), strict=True)}

    @property
    def items(self) -> int:
        """What the encoder reads of its distinct cells."""
        return sum(self.parts.values())

    def items_of(self, cells: list[str]) -> int:
        """What the encoder reads of ``cells`` (some of its distinct cells)."""
        return sum(self.parts[cell] for cell in cells)


@dataclass
class EncodingPlan:
    """What encoding cost and how its time was spent, for the leaderboard."""

    seconds: float = 0.0
    projected_s: float = 0.0
    items: int = 0
    note: str = ""
    rows_read: int | None = None  # the rows the candidates read, where not every row

    def info(self) -> dict[str, object]:
        sampled = {} if self.rows_read is None else {"rows_read": self.rows_read}
        return {"frozen_features_s": round(self.seconds, 1),
                "frozen_features": f"{self.items:,} inputs" + (f"; {self.note}" if self.note
                                                               else ""), **sampled}


def encode_frozen(preset: Preset, config: Config, frames: list[pd.DataFrame],
                  cache: FeatureCache, deadline: Deadline, *, rows_read: int | None = None
                  ) -> tuple[Preset, list[pd.DataFrame], EncodingPlan]:
    """Every frozen encoder's features of ``frames``' rows in ``cache``; returns the preset
    the candidates use (images at a smaller side where the plan needed it), the rows they
    read (all, or as many as the plan allowed) and the plan. ``rows_read``: the rows an
    interrupted search's plan read (a resumed search reads the same ones). An image that
    does not decode is reported with its rows."""
    try:
        return planned_encoding(preset, config, frames, cache, deadline, rows_read=rows_read)
    except UndecodableImages as error:
        raise undecodable_rows(error, frames, config.data.image_cols) from None


def planned_encoding(preset: Preset, config: Config, frames: list[pd.DataFrame],
                     cache: FeatureCache, deadline: Deadline, *, rows_read: int | None
                     ) -> tuple[Preset, list[pd.DataFrame], EncodingPlan]:
    """``encode_frozen``'s plan and encoding."""
    started = clocks.clock()
    plan, notes = EncodingPlan(rows_read=rows_read), []
    if rows_read is not None:
        frames = sampled(frames, rows_read, config)
    jobs = frozen_jobs(preset, config, frames)
    rates = measured_rates(jobs, cache)
    plan.projected_s = projected_seconds(jobs, rates)
    allowed = ENCODING_SHARE * deadline.remaining()
    if plan.projected_s > allowed and any(
            job.kind == "image" and (job.config.image_size or 0) > IMAGE_SIDES[0]
            and side_is_ours(job.config) for job in jobs):
        preset = at_smallest_side(preset)
        jobs, rates = replanned(preset, config, frames, cache, jobs, rates)
        before, plan.projected_s = plan.projected_s, projected_seconds(jobs, rates)
        notes.append(f"images at {IMAGE_SIDES[0]} px: at their side, encoding would have "
                     f"taken about {before:.0f} s of the {deadline.remaining():.0f} s left")
    if plan.projected_s > allowed and any(job.kind == "text" and job.items > len(job.distinct)
                                          for job in jobs):
        preset = first_windows(preset)
        jobs, rates = replanned(preset, config, frames, cache, jobs, rates)
        before, plan.projected_s = plan.projected_s, projected_seconds(jobs, rates)
        notes.append("long texts read to their first window: all their windows would have "
                     f"taken about {before:.0f} s to encode (the TF-IDF members still read "
                     "them whole)")
    rows = sum(len(f) for f in frames)
    if plan.projected_s > allowed and rows > MIN_ROWS and rows_read is None:
        kept = max(MIN_ROWS, rows_within(allowed, jobs, rates, frames, config))
        if kept < rows:
            frames, plan.rows_read = sampled(frames, kept, config), kept
            jobs = frozen_jobs(preset, config, frames, built=jobs)
            before, plan.projected_s = plan.projected_s, projected_seconds(jobs, rates)
            notes.append(f"the candidates read {kept:,} of the {rows:,} rows (every class "
                         f"kept): all of them would have taken about {before:.0f} s to "
                         f"encode; a --time-limit of {before / ENCODING_SHARE:.0f} s or more "
                         "reads them all")
    plan.note = "; ".join(notes)
    for note in notes:
        CONSOLE.print(f"auto: {note}")
    if plan.projected_s > allowed:
        CONSOLE.print(f"[bold yellow]auto: computing frozen features will take about "
                      f"{plan.projected_s:.0f} s of the {deadline.remaining():.0f} s left[/]; "
                      "the candidates get the rest. Raise --time-limit for more of them.")
    for job in jobs:  # row by row: the cache then lies in the table's order
        cache.table(job.encoder, job.values, with_tokens=False)
    plan.items = sum(job.items for job in jobs)
    plan.seconds = clocks.clock() - started
    CONSOLE.print(f"auto: frozen features of {plan.items:,} inputs in {plan.seconds:.0f} s "
                  f"({', '.join(j.label for j in jobs) or 'none'})")
    return preset, frames, plan


def frozen_jobs(preset: Preset, config: Config, frames: list[pd.DataFrame], *,
                built: list[Job] | None = None) -> list[Job]:
    """The preset's frozen pretrained encoders with their columns' cells; an encoder a job of
    ``built`` has already (same kind and config) is reused, not loaded again."""
    jobs = []
    for kind, configs in (("image", preset.image_encoders), ("text", preset.text_encoders)):
        columns = getattr(config.data, f"{kind}_cols")
        for encoder_config in configs if columns else ():
            if encoder_config.frozen is False:
                continue  # fine-tuned: nothing to cache
            encoder = next((j.encoder for j in built or []
                            if j.kind == kind and j.config == encoder_config), None)
            try:
                encoder = encoder or create_encoder(kind, encoder_config)
            except ConfigError:  # trained from scratch on fitted state (gru): never cached
                continue
            if encoder.frozen:
                values = [v for f in frames for c in columns for v in cells(f, c)]
                jobs.append(Job(kind, encoder_config, encoder, values))
    return jobs


def replanned(preset: Preset, config: Config, frames: list[pd.DataFrame], cache: FeatureCache,
              jobs: list[Job], rates: list[float]) -> tuple[list[Job], list[float]]:
    """The jobs of a changed ``preset`` and their rates: encoders the earlier ``jobs`` loaded
    are reused and keep their measured ``rates``; only the changed ones are measured."""
    new = frozen_jobs(preset, config, frames, built=jobs)
    return new, measured_rates(new, cache, known=list(zip(jobs, rates, strict=True)))


def measured_rates(jobs: list[Job], cache: FeatureCache, *,
                   known: list[tuple[Job, float]] | None = None) -> list[float]:
    """Each job's seconds per input, measured on a sample of its inputs (encoded into the
    cache, so not wasted; 0 where the cache holds them already). A sample is encoded without
    the decoding workers a whole column gets, so images are measured on the slow side.
    ``known``: earlier jobs and their rates; a job with the same encoder keeps its rate
    (measured again, its sample would already be in the cache: a rate of 0)."""
    rates = []
    for job in jobs:
        rate = next((r for j, r in known or [] if j.encoder is job.encoder), None)
        if rate is not None:
            rates.append(rate)
            continue
        cache.table(job.encoder, job.distinct[:WARM_UP], with_tokens=False)
        sample = job.distinct[WARM_UP:SAMPLE]
        started = clocks.clock()
        if sample:
            cache.table(job.encoder, sample, with_tokens=False)
        rates.append((clocks.clock() - started) / job.items_of(sample) if sample else 0.0)
    return rates


def projected_seconds(jobs: list[Job], rates: list[float]) -> float:
    """What encoding every job's inputs will take at the measured rates."""
    return sum(rate * job.items for job, rate in zip(jobs, rates, strict=True))


def rows_within(seconds: float, jobs: list[Job], rates: list[float],
                frames: list[pd.DataFrame], config: Config) -> int:
    """How many rows of ``sampled``'s order the encoders can read in ``seconds``: each row
    costs what its inputs not read before it cost (a photo shared by many rows, once)."""
    rows = pd.concat(frames, ignore_index=True).iloc[sampling_order(frames, config)]
    cost = np.zeros(len(rows))
    for job, rate in zip(jobs, rates, strict=True):
        columns = config.data.image_cols if job.kind == "image" else config.data.text_cols
        seen: set[str] = set()
        for i, values in enumerate(zip(*(cells(rows, c) for c in columns), strict=True)):
            new = [v for v in dict.fromkeys(values) if v is not None and v not in seen]
            seen.update(new)
            cost[i] += rate * job.items_of(new) if new else 0.0
    return int(np.searchsorted(np.cumsum(cost), seconds, side="right"))


def sampling_order(frames: list[pd.DataFrame], config: Config) -> np.ndarray:
    """Positions of the rows of ``frames`` (one after another) in a seeded order whose every
    prefix keeps each class's share, and whose first rows hold one of each class (a row's
    rank within its class, over the class's size, orders them), so a sample never drops a
    rare class. Tasks without one class a row: a seeded shuffle."""
    rows = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(config.train.seed)
    shuffled = rng.permutation(len(rows))
    if not get_task(config.data.task).single_label:
        return shuffled
    target = rows["_target"].astype(str).to_numpy()[shuffled]
    rank = pd.Series(target).groupby(target).cumcount().to_numpy()
    size = pd.Series(target).map(pd.Series(target).value_counts()).to_numpy()
    return shuffled[np.argsort((rank + rng.random(len(rows))) / size, kind="stable")]


def sampled(frames: list[pd.DataFrame], kept: int, config: Config) -> list[pd.DataFrame]:
    """The first ``kept`` rows of ``sampling_order``, each frame's in its own order."""
    chosen = np.sort(sampling_order(frames, config)[:kept])
    starts = np.cumsum([0] + [len(f) for f in frames])
    return [f.iloc[chosen[(chosen >= a) & (chosen < b)] - a]
            for f, a, b in zip(frames, starts[:-1], starts[1:], strict=True)]


def at_smallest_side(preset: Preset) -> Preset:
    """The preset with its frozen image encoders at the smallest side (those whose side
    mmfuse sets)."""
    images = tuple(dataclasses.replace(e, image_size=IMAGE_SIDES[0])
                   if e.frozen is not False and side_is_ours(e) else e
                   for e in preset.image_encoders)
    return dataclasses.replace(preset, image_encoders=images)


def first_windows(preset: Preset) -> Preset:
    """The preset with its frozen text encoders reading a long text's first window only (of
    ``max_length`` tokens) instead of up to ``max_windows`` of them."""
    texts = tuple(dataclasses.replace(e, max_windows=1) if e.frozen is not False else e
                  for e in preset.text_encoders)
    return dataclasses.replace(preset, text_encoders=texts)
