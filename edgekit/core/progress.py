"""One view of long work: a line as each stage starts (elapsed time, the enclosing stages - row k of n,
search step k - and what remains), and under it a bar (rich) labelled with those stages. Lines are
silenced by --quiet; bars also when stderr is not a terminal (a CI log gets the lines alone)."""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator, TypeVar

from edgekit.core.runlog import terminal

T = TypeVar("T")
_quiet = False
_stages: list[str] = []
_clock = {"start": time.monotonic()}


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def restart_clock() -> None:
    """At a command's start: elapsed times count from here."""
    _clock["start"] = time.monotonic()


def elapsed_s() -> float:
    return time.monotonic() - _clock["start"]


def _minutes(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


@contextlib.contextmanager
def stage(text: str, remaining_s: float | None = None):
    """A stage of the command's work, announced on one line and naming every bar inside it."""
    import click

    _stages.append(text)
    if not _quiet:
        left = f", about {_minutes(remaining_s)} left" if remaining_s else ""
        click.echo(f"[{_minutes(elapsed_s())}{left}] {' · '.join(_stages)}", file=terminal())
    try:
        yield
    finally:
        _stages.pop()


class Counter:
    """Row k of n: each `step` a stage, with the time left estimated from the steps done so far."""

    def __init__(self, noun: str, total: int):
        self.noun, self.total, self.done, self.start = noun, total, 0, time.monotonic()

    def step(self, detail: str):
        spent = time.monotonic() - self.start
        remaining = spent / self.done * (self.total - self.done) if self.done else None
        self.done += 1
        return stage(f"{self.noun} {self.done}/{self.total} {detail}", remaining)


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
        task = bar.add_task(" · ".join([*_stages, description]), total=total)
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
