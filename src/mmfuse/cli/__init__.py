"""The `mmfuse` command line: thin typed commands, each calling one library function."""

# importing them registers the subcommands on `app`
from mmfuse.cli import commands  # noqa: F401
from mmfuse.cli.app import app

__all__ = ["app"]
