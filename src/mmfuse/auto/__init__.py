"""Auto mode: a time-limited search over a portfolio of encoders and fusions."""

from mmfuse.auto.portfolio import PRESETS, Preset
from mmfuse.auto.search import AutoSearch

__all__ = ["PRESETS", "AutoSearch", "Preset"]
