"""Progress bars (rich) that stay quiet for short loops and in non-interactive logs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
CONSOLE = Console(stderr=True)  # progress and logs on stderr; stdout stays for results
MIN_ITEMS_FOR_BAR = 200


def make_progress(transient: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=transient,
        console=CONSOLE,
        disable=not CONSOLE.is_terminal,  # no bar redraws in CI logs and pipes
    )


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Iterate with a bar when there is enough work to watch."""
    if total < MIN_ITEMS_FOR_BAR:
        yield from items
        return
    with make_progress() as progress:
        task = progress.add_task(description, total=total, status="")
        for item in items:
            yield item
            progress.advance(task)
