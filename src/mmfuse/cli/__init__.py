"""The `mmfuse` command line: thin typed commands, each calling one library function."""

from mmfuse.cli import commands  # noqa: F401  (registers the subcommands on `app`)
from mmfuse.cli.app import app

__all__ = ["app"]
