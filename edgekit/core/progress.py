"""Progress bars on long work (rich), silenced by --quiet or when output is not a terminal."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, TypeVar

from edgekit.core.runlog import terminal

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    return not _quiet and terminal().isatty()


def progress_iter(items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    if not enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
        console=Console(file=terminal()),
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def status(message: str):
    """A spinner for a step with no count (conversion, export)."""
    if not enabled():
        yield
        return
    from rich.console import Console

    with Console(file=terminal()).status(message):
        yield
