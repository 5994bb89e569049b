"""Subcommands. Errors the user can fix are printed without a traceback (exit code 2)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmfuse.errors import MmfuseError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Learn from images and text together: train, evaluate, predict.",
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


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


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
        elif isinstance(value, int):
            table.add_row(name, str(value))
    out.print(table)


