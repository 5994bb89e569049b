"""Subcommands. Errors the user can fix are printed without a traceback (exit code 2)."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mmfuse.errors import MmfuseError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Learn from images and text together: train, evaluate, predict.",
)
out = Console()
err = Console(stderr=True)
Opt = typer.Option  # the commands' option declarations, short
F = TypeVar("F", bound=Callable[..., Any])


def _version(shown: bool) -> None:
    if shown:
        from mmfuse import __version__

        out.print(f"mmfuse {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit")] = False
         ) -> None:
    """Learn from images and text together: train, evaluate, predict."""


def friendly(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MmfuseError as error:
            err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; `mmfuse train ... --resume` continues from the last epoch")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def invoked_command(context: typer.Context) -> str:
    """The command being run, as a user would type it again: `mmfuse <command>`, then every
    argument and option given (those left at their defaults omitted)."""
    import shlex

    words = ["mmfuse", context.info_name or ""]
    for parameter in context.command.params:
        value = context.params.get(parameter.name)
        empty = value is None or value is False or (isinstance(value, list | tuple) and not value)
        if empty or value == parameter.default:
            continue
        option = next((o for o in parameter.opts if o.startswith("--")), None)
        for item in value if isinstance(value, list | tuple) else [value]:
            if option is None:
                words.append(str(item))
            else:
                words += [option] if item is True else [option, str(item)]
    return " ".join(shlex.quote(w) for w in words)


def _writable(path: Path, folder: bool) -> Path:
    """``path`` when it can be written as a file (``folder=False``) or a folder; otherwise the
    option is refused before any work starts, saying why."""
    if folder and path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; name a folder (new or existing)")
    if not folder and path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; name a file in it")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing != path and not existing.is_dir():
        raise typer.BadParameter(f"cannot create {path}: {existing} is a file, not a folder")
    where = existing if existing.is_dir() else existing.parent
    try:  # a real write: permissions alone miss read-only file systems (and root's /sys)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as error:
        raise typer.BadParameter(f"cannot write in {where}: {error.strerror or error}") from error
    return path


def writable_file(path: Path | None) -> Path | None:
    """Option callback: an output file that can be written (checked before any work)."""
    return None if path is None else _writable(path, folder=False)


def writable_folder(path: Path | None) -> Path | None:
    """Option callback: an output folder that can be written (checked before any work)."""
    return None if path is None else _writable(path, folder=True)
