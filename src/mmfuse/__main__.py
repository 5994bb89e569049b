"""`python -m mmfuse` (used by `accelerate launch -m mmfuse`)."""

from mmfuse.cli import app

app()
