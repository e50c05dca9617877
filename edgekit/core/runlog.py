"""Third-party output in one place. The libraries edgekit drives (NNCF, ONNX Runtime's quantizer,
ai-edge-quantizer, litert-torch, onnx2tf, torch.export) log, warn, print and draw progress bars of
their own; on the terminal that buries edgekit's one view of the work. Inside `library_output(...)`
and through Python logging and warnings, all of it is kept here instead: written to the command's
output folder as `edgekit.log` when the command ends, and echoed to stderr as it comes with --verbose.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from pathlib import Path

LOG_NAME = "edgekit.log"
_lines: list[str] = []
_state = {"verbose": False, "folder": None, "started": False}
_terminal: list = []  # stderr as it was outside each library_output: where edgekit's own lines still go


def start(verbose: bool = False) -> None:
    """At a command's start: Python logging (but edgekit's own) and warnings are kept, not printed."""
    _state.update(verbose=verbose, started=True)
    _lines.clear()
    root = logging.getLogger()
    if not any(isinstance(h, _Keep) for h in root.handlers):
        root.addHandler(_Keep())
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> here


def stop() -> None:
    """Back to the Python API's behaviour: nothing kept, logging and warnings as the caller set them."""
    _state.update(verbose=False, folder=None, started=False)
    _lines.clear()
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Keep)]:
        root.removeHandler(h)
    logging.captureWarnings(False)


def active() -> bool:
    return _state["started"]


def terminal():
    """The stream edgekit's own notes and bars write to: stderr, even inside a library call's capture."""
    return _terminal[0] if _terminal else sys.stderr


def set_folder(folder: Path) -> None:
    """The command's output folder: where `edgekit.log` goes when the command ends."""
    _state["folder"] = Path(folder)


def keep(source: str, text: str) -> None:
    if not active():  # the Python API: no command log to write
        return
    for line in text.splitlines():
        if line.strip():
            stamped = f"{time.strftime('%H:%M:%S')} [{source}] {line.rstrip()}"
            _lines.append(stamped)
            if _state["verbose"]:
                print(stamped, file=terminal(), flush=True)


@contextlib.contextmanager
def library_output(source: str):
    """A library call whose prints and stderr go to the log (the terminal only with --verbose). Outside a
    CLI command (the Python API) they are dropped: stdout stays the caller's, as with --json."""
    out, err = _Stream(source), _Stream(source)
    _terminal.append(sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        _terminal.pop()
        out.flush_rest()
        err.flush_rest()


def finish() -> Path | None:
    """Write the kept lines to OUTPUT/edgekit.log (appended: a command may run again into the same folder)."""
    folder, lines = _state["folder"], list(_lines)
    _lines.clear()
    if folder is None or not lines or not folder.is_dir():
        return None
    path = folder / LOG_NAME
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


class _Keep(logging.Handler):
    """Every non-edgekit record at INFO and above; edgekit prints through edgekit.core.console instead."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("edgekit"):
            return
        try:
            keep(record.name, f"{record.levelname}: {record.getMessage()}")
        except Exception:  # a record that cannot be formatted is dropped, never raised into the library
            pass


class _Stream(io.TextIOBase):
    """A text stream that keeps complete lines (progress bars rewrite one line with '\\r': the last state is kept)."""

    def __init__(self, source: str):
        self.source, self.pending = source, ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # so rich and tqdm draw no live bars into it
        return False

    def write(self, text: str) -> int:
        self.pending += text
        *done, self.pending = self.pending.split("\n")
        for line in done:
            keep(self.source, line.rsplit("\r", 1)[-1])
        return len(text)

    def flush_rest(self) -> None:
        if self.pending:
            keep(self.source, self.pending.rsplit("\r", 1)[-1])
            self.pending = ""
