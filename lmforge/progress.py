"""Progress bars for long steps: `rich` on stderr when it is a terminal, silent otherwise.

Silent on a non-terminal so that logs and the one-line error contract stay clean; long jobs
also log a line now and then through `logging`, which reaches files and CI logs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def stderr_console() -> Console:
    return Console(file=sys.stderr)


def is_interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(extra_fields: str = "") -> Iterator[Progress]:
    """A rich Progress on stderr; disabled (no output) when stderr is not a terminal."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if extra_fields:
        columns.append(TextColumn(extra_fields))
    progress = Progress(
        *columns, console=stderr_console(), transient=True, disable=not is_interactive()
    )
    with progress:
        yield progress


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (when interactive)."""
    with progress_bar() as progress:
        yield from progress.track(items, description=description, total=total)
