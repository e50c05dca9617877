"""Typed errors. Each carries the process exit code of DESIGN.md and an optional hint."""

from __future__ import annotations


class EdgekitError(Exception):
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class CheckFailedError(EdgekitError):
    """A check or budget failed (exit 1)."""

    exit_code = 1


class InvalidInputError(EdgekitError):
    """Bad usage or invalid input: config, model file, data (exit 2)."""

    exit_code = 2


class TargetUnavailableError(EdgekitError):
    """A dependency or the hardware a target needs is missing (exit 3)."""

    exit_code = 3


class BackendError(EdgekitError):
    """A backend failed to convert or build; the message names the node/op (exit 4)."""

    exit_code = 4


def one_line(e: EdgekitError) -> str:
    """The error as one line for a report row: the message, then the hint in brackets."""
    return e.message + (f" (hint: {e.hint})" if e.hint else "")


def first_line(e: BaseException, limit: int = 500) -> str:
    """A library exception's first line (at most `limit` characters), for a one-line error."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:limit]
