"""Auto mode's first step: the frozen encoders' features of every row, planned against the
deadline.

On a new user's first run the feature cache is empty and encoding is the largest cost. Each
frozen encoder's rate is measured on a sample of its inputs (encoded into the cache, so not
wasted) and the rest projected from it; where everything would take more than
``ENCODING_SHARE`` of the time left, images are read at the smallest side instead, and the
plan says so. Features are then computed once, before any candidate starts, so that the
candidates share the time that is left fairly.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import pandas as pd

from mmfuse import deadline as clocks
from mmfuse.auto.portfolio import IMAGE_SIDES, Preset, side_is_ours
from mmfuse.config import Config, EncoderConfig
from mmfuse.data.validate import cells
from mmfuse.deadline import Deadline
from mmfuse.encoders import create_encoder
from mmfuse.encoders.base import Encoder
from mmfuse.errors import ConfigError
from mmfuse.features.cache import FeatureCache
from mmfuse.progress import CONSOLE

# Of the time left when the search starts, what encoding may take before images are read at
# the smallest side: the candidates need the rest (five folds of each network).
ENCODING_SHARE = 0.4
# The rate is measured on the inputs after the first WARM_UP (which pay for loading the
# encoder and building its fast path) up to SAMPLE of them.
WARM_UP, SAMPLE = 16, 96


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
    def items(self) -> int:
        """What the encoder reads of its distinct cells (``items_of``)."""
        return self.items_of(self.distinct)

    def items_of(self, cells: list[str]) -> int:
        """What the encoder reads of ``cells``: a cell's photos, a long text's windows."""
        return sum(len(parts) for parts in self.encoder.parts_of(cells))


@dataclass
class EncodingPlan:
    """What encoding cost and how its time was spent, for the leaderboard."""

    seconds: float = 0.0
    projected_s: float = 0.0
    items: int = 0
    note: str = ""

    def info(self) -> dict[str, object]:
        return {"frozen_features_s": round(self.seconds, 1),
                "frozen_features": f"{self.items:,} inputs" + (f"; {self.note}" if self.note
                                                               else "")}


def encode_frozen(preset: Preset, config: Config, frames: list[pd.DataFrame],
                  cache: FeatureCache, deadline: Deadline) -> tuple[Preset, EncodingPlan]:
    """Every frozen encoder's features of ``frames``' rows in ``cache``; returns the preset
    the candidates use (images at a smaller side where the plan needed it) and the plan."""
    started = clocks.clock()
    plan = EncodingPlan()
    jobs = frozen_jobs(preset, config, frames)
    plan.projected_s = projected_seconds(jobs, cache)
    allowed = ENCODING_SHARE * deadline.remaining()
    if plan.projected_s > allowed and any(
            job.kind == "image" and (job.config.image_size or 0) > IMAGE_SIDES[0]
            and side_is_ours(job.config) for job in jobs):
        preset = at_smallest_side(preset)
        jobs = frozen_jobs(preset, config, frames)
        before, plan.projected_s = plan.projected_s, projected_seconds(jobs, cache)
        plan.note = (f"images at {IMAGE_SIDES[0]} px: at their side, encoding would have "
                     f"taken about {before:.0f} s of the {deadline.remaining():.0f} s left")
        CONSOLE.print(f"auto: {plan.note}")
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
    return preset, plan


def frozen_jobs(preset: Preset, config: Config, frames: list[pd.DataFrame]) -> list[Job]:
    """The preset's frozen pretrained encoders with their columns' cells."""
    jobs = []
    for kind, configs in (("image", preset.image_encoders), ("text", preset.text_encoders)):
        columns = getattr(config.data, f"{kind}_cols")
        for encoder_config in configs if columns else ():
            if encoder_config.frozen is False:
                continue  # fine-tuned: nothing to cache
            try:
                encoder = create_encoder(kind, encoder_config)
            except ConfigError:  # trained from scratch on fitted state (gru): never cached
                continue
            if encoder.frozen:
                values = [v for f in frames for c in columns for v in cells(f, c)]
                jobs.append(Job(kind, encoder_config, encoder, values))
    return jobs


def projected_seconds(jobs: list[Job], cache: FeatureCache) -> float:
    """What encoding every job's inputs will take, from each encoder's rate on a sample of
    them (encoded into the cache, so not wasted; free where the cache holds them already).
    A sample is encoded without the decoding workers a whole column gets, so images are
    projected on the slow side."""
    total = 0.0
    for job in jobs:
        cache.table(job.encoder, job.distinct[:WARM_UP], with_tokens=False)
        sample = job.distinct[WARM_UP:SAMPLE]
        if sample:
            started = clocks.clock()
            cache.table(job.encoder, sample, with_tokens=False)
            total += (clocks.clock() - started) / job.items_of(sample) * job.items
    return total


def at_smallest_side(preset: Preset) -> Preset:
    """The preset with its frozen image encoders at the smallest side (those whose side
    mmfuse sets)."""
    images = tuple(dataclasses.replace(e, image_size=IMAGE_SIDES[0])
                   if e.frozen is not False and side_is_ours(e) else e
                   for e in preset.image_encoders)
    return dataclasses.replace(preset, image_encoders=images)
